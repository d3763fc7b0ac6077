// An HTTP app for the balance tests: / answers the pid, on PORT at HOST.
// /hold?file=PATH answers once the file PATH exists (a request that keeps
// its worker busy, and so draining, until the test says so); /restart
// asks for this worker's replacement.
//
// Two things it does that a plain app does not, so that the tests count
// what the master does and nothing else:
//
//   - once its server is closed (the cluster's disconnect), it keeps its
//     idle keep-alive connections and answers with "Connection: close",
//     so that a client that does not retry never meets a connection the
//     server dropped between two requests (Node's server.close() ends idle
//     connections at once: a race with the client that no master can
//     win);
//   - it prints "newconn while not listening" for a connection the master
//     hands over after the server was closed: the master must not hand
//     one to a draining worker (that Node then refuses, so the client
//     would not notice).
const fs = require('fs');
const http = require('http');

const server = http.createServer((req, res) => {
  if (!server.listening) {
    res.setHeader('Connection', 'close');
  }
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
  if (url.pathname === '/restart') {
    process.send({ event: 'request-restart' });
  }
  res.end(String(process.pid));
});
server.closeIdleConnections = () => {};

process.on('internalMessage', (msg) => {
  if (msg && msg.act === 'newconn' && !server.listening) {
    console.log('newconn while not listening');
  }
});

server.on('error', (err) => {
  console.log(`listen failed: ${err.code}`);
  process.exit(1);
});
server.listen(Number(process.env.PORT), process.env.HOST);
