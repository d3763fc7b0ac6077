// server.js as an ES module.
import http from 'node:http';

const server = http.createServer((req, res) => {
  if (req.url === '/mark') process.send({ event: 'mark' });
  res.end('ok');
});
server.listen({ port: 0, host: '127.0.0.1', exclusive: true }, () => {
  process.send({ event: 'test-server', port: server.address().port, nodeOptions: process.env.NODE_OPTIONS ?? null });
});
