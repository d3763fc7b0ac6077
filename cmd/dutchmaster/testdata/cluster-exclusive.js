// An app whose server bypasses the cluster primary: listen({exclusive:
// true}) binds a socket of its own, on HOST:PORT. Node's cluster never
// tells the primary of it, so only dutchmaster's preload module reports
// the worker ready and closes the server at a drain.
//
// / answers the pid. A listen that fails prints "listen failed: CODE" and
// exits 1.
const http = require('http');

const server = http.createServer((req, res) => res.end(String(process.pid)));
server.on('error', (err) => {
  console.log(`listen failed: ${err.code}`);
  process.exit(1);
});
server.listen({ port: Number(process.env.PORT), host: process.env.HOST || '127.0.0.1', exclusive: true });
