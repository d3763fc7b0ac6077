// A server that bypasses the cluster primary (exclusive: true) on a free
// loopback port. Once it listens it tells the test its port and the
// NODE_OPTIONS its children would get; GET /mark sends {event: 'mark'}
// over IPC, a marker in the order of the messages. With SIGTERM_HANDLER
// set it has a SIGTERM handler of its own, which says so over IPC and
// closes the server, exiting 0 if that calls back without an error.
const http = require('http');

const server = http.createServer((req, res) => {
  if (req.url === '/mark') process.send({ event: 'mark' });
  res.end('ok');
});
server.listen({ port: 0, host: '127.0.0.1', exclusive: true }, () => {
  process.send({ event: 'test-server', port: server.address().port, nodeOptions: process.env.NODE_OPTIONS ?? null });
});

if (process.env.SIGTERM_HANDLER) {
  process.on('SIGTERM', () => {
    process.send({ event: 'app-sigterm' });
    server.close((err) => process.exit(err ? 1 : 0));
  });
}
