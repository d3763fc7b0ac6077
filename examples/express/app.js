// An Express app that knows nothing of dutchmaster: it calls
// app.listen(PORT), as under `node app.js` or Node's own cluster. Under
// dutchmaster, the master is its cluster primary: every worker listens on
// the master's one socket, and a rolling restart drops no connection.
//
// The only line for the supervisor is process.send({event:'request-restart'})
// when a request fails with an uncaught error: the worker may be in a bad
// state, so the master starts a fresh one and then drains this one (it
// finishes its other requests first). That is dutch-master's recipe.
'use strict';

const domain = require('node:domain');
const express = require('express');

const port = Number(process.env.PORT || 3000);
const app = express();

let restartRequested = false;

// requestRestart asks the master, once, for this worker's replacement.
// Without a master (plain `node app.js`) there is nobody to ask.
function requestRestart() {
  if (restartRequested || typeof process.send !== 'function' || !process.connected) return;
  restartRequested = true;
  process.send({ event: 'request-restart' });
}

// fail answers a failed request and asks for a replacement.
function fail(err, req, res) {
  console.error(`worker ${process.pid}: ${req.method} ${req.url} failed: ${err.message}`);
  requestRestart();
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.statusCode = 500;
  res.setHeader('Connection', 'close');
  res.end('internal error\n');
}

// Domain-style error handling: an error thrown anywhere in a request's
// asynchronous work (a callback, a timer) is caught here, not by the
// process's uncaughtException, so the other requests of this worker finish.
app.use((req, res, next) => {
  const d = domain.create();
  d.add(req);
  d.add(res);
  d.on('error', (err) => fail(err, req, res));
  d.run(next);
});

app.get('/', (req, res) => {
  res.type('text').send(`hello from worker ${process.pid}\n`);
});

// An asynchronous crash: Express never sees it, the domain does.
app.get('/boom', () => {
  setTimeout(() => {
    throw new Error('boom');
  }, 1);
});

// A synchronous crash: Express catches it and calls the error middleware.
app.get('/fail', () => {
  throw new Error('fail');
});

// Express's error middleware: errors thrown in handlers or passed to next().
app.use((err, req, res, next) => fail(err, req, res)); // eslint-disable-line no-unused-vars

app.listen(port, (err) => {
  if (err) {
    console.error(`worker ${process.pid}: listen on ${port} failed: ${err.code || err.message}`);
    process.exit(1);
  }
  console.log(`worker ${process.pid} listening on ${port}`);
});
