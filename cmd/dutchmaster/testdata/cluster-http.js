// An app that knows nothing of dutchmaster: an HTTP server that listens on
// PORT (on HOST if set, else on every address), or on the unix socket
// SOCKET, as under `node app.js`. Under dutchmaster (the default
// --worker-protocol for node) its listen() goes through Node's cluster
// protocol to the master, which shares one socket with every worker.
//
// For the tests: / answers the pid; /hold?file=PATH says "hold request
// started" on stdout and answers the pid once the file PATH exists (a slow
// request that ends when the test says so); /block says "blocking the
// event loop" and never returns (a handler stuck in a loop: the bug a
// watchdog is for); /restart asks for this
// worker's replacement, the one line that knows of a supervisor. A
// listen() that fails prints "listen failed: CODE" and exits 1.
const fs = require('fs');
const http = require('http');

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname === '/hold') {
    console.log('hold request started');
    const file = url.searchParams.get('file');
    const poll = setInterval(() => {
      if (fs.existsSync(file)) {
        clearInterval(poll);
        res.end(String(process.pid));
      }
    }, 10);
    return;
  }
  if (url.pathname === '/block') {
    console.log('blocking the event loop');
    for (;;) {}
  }
  if (url.pathname === '/restart') {
    process.send({ event: 'request-restart' });
  }
  res.end(String(process.pid));
});

server.on('error', (err) => {
  console.log(`listen failed: ${err.code}`);
  process.exit(1);
});

if (process.env.SOCKET) {
  server.listen(process.env.SOCKET);
} else {
  server.listen(Number(process.env.PORT), process.env.HOST || undefined);
}
