// A Node.js cluster worker for the handover tests (NODE_UNIQUE_ID and
// NODE_CHANNEL_FD are set by the test, which plays the primary): an HTTP
// server on 127.0.0.1 that answers with the worker's pid. It tells the
// primary its port, answers prom-client's metrics request as prom-client's
// AggregatorRegistry would (one gauge), and prints how it exits.
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');

const server = http.createServer((req, res) => res.end(String(process.pid)));
server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }));

process.on('message', (m) => {
  if (m && m.type === 'prom-client:getMetricsReq') {
    process.send({
      type: 'prom-client:getMetricsRes',
      requestId: m.requestId,
      metrics: [[{ name: 'up', help: 'h', type: 'gauge', values: [{ value: 1, labels: {} }], aggregator: 'sum' }]],
    });
  }
});

process.on('exit', (code) => {
  console.log(JSON.stringify({ code, exitedAfterDisconnect: cluster.worker.exitedAfterDisconnect }));
});
