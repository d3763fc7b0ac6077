// A Fastify app that knows nothing of dutchmaster: it listens on PORT, as
// under `node fastify.js`. Under dutchmaster it is a cluster worker, and
// the master's preload module drains its keep-alive connections at a
// restart (docs/node.md, "Drain").
'use strict';

const fastify = require('fastify')();

fastify.get('/', async (request, reply) => {
  reply.header('X-Worker-Pid', String(process.pid));
  return `hello from fastify worker ${process.pid}\n`;
});

fastify.listen({ port: Number(process.env.PORT || 3000), host: process.env.HOST || '0.0.0.0' }, (err) => {
  if (err) {
    console.error(`worker ${process.pid}: listen failed: ${err.code || err.message}`);
    process.exit(1);
  }
});
