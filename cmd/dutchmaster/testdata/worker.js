// A Node.js worker that uses no library: the listener is fd 3 (LISTEN_FDS),
// readiness and restart requests go over the IPC channel that Node opens
// from NODE_CHANNEL_FD, and the master's disconnect drains it.
const http = require('http');

const server = http.createServer((req, res) => {
  if (req.url === '/restart') {
    process.send({ event: 'request-restart' });
  }
  res.end(String(process.pid));
});

server.listen({ fd: 3 }, () => {
  process.send({ event: 'listening' });
});

process.on('disconnect', () => {
  server.close(() => process.exit(0));
});
