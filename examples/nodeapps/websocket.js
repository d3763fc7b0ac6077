// An HTTP server with WebSockets (the ws package) that ends its own
// connections at a stop, as apps usually do: its SIGTERM handler says
// goodbye to every WebSocket client with 1001 (going away) and closes the
// server. It knows nothing of dutchmaster. Under dutchmaster the preload
// module runs that handler at every drain, once the HTTP connections are
// drained, so a rolling restart moves WebSocket clients too; they
// reconnect to the new workers.
//
// GET / answers the worker's pid; a WebSocket client is greeted with
// "hello <pid>" and gets its messages echoed.
'use strict';

const http = require('node:http');
const { WebSocketServer } = require('ws');

const server = http.createServer((req, res) => {
  res.setHeader('X-Worker-Pid', String(process.pid));
  res.end(`hello from websocket worker ${process.pid}\n`);
});
const wss = new WebSocketServer({ server });

wss.on('connection', (ws) => {
  ws.send(`hello ${process.pid}`);
  ws.on('message', (data) => ws.send(data));
});

process.on('SIGTERM', () => {
  console.log(`worker ${process.pid}: closing ${wss.clients.size} WebSocket clients`);
  for (const ws of wss.clients) ws.close(1001, 'going away');
  server.close((err) => {
    if (err) {
      console.error(`worker ${process.pid}: close failed: ${err.code || err.message}`);
      process.exit(1);
    }
    console.log(`worker ${process.pid}: closed`);
  });
});

server.listen(Number(process.env.PORT || 3000), process.env.HOST || undefined);
