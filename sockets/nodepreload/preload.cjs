// dutchmaster's preload module for Node.js cluster workers (docs/node.md,
// "Drain"). The master writes it to a file and adds `--require FILE` to
// each node-cluster worker's NODE_OPTIONS, so that an unmodified app drains
// as a worker written for dutchmaster does:
//
//   1. At a drain (the cluster's disconnect from the master, or SIGTERM or
//      SIGINT, which would otherwise end the process at once) every server
//      stops accepting. For the grace (DUTCHMASTER_NODE_GRACE_MS), every
//      HTTP response says "Connection: close", so busy keep-alive clients
//      move to other workers at a moment they know about, and idle
//      connections are left open: a client that sends on one is answered.
//   2. Once the grace is over (or no HTTP connection is left), idle
//      connections are closed with a lingering close: half-close, read and
//      discard what the client still sends, close once it closes or after
//      LINGER_MS. A request that raced the close meets a clean end of
//      stream, never a reset, and is never half-handled. Connections busy
//      then are closed so after their response.
//   3. Then the app's own SIGTERM (or SIGINT) handlers run, if it has any,
//      so that it can end what it owns (WebSockets, which are the app's
//      and bounded by --kill-timeout, queues, pools). An app without one
//      that was sent the signal exits once no request is in flight.
//
// It also reports readiness for servers that bypass the cluster primary
// (listen({exclusive: true})), sends heartbeats when WATCHDOG_USEC is set,
// and asks for its replacement after DUTCHMASTER_MAX_REQUESTS requests.
//
// Outside a drain it changes nothing the app can see. Its timers are
// unref'd and it holds no handle, so it never keeps a process alive.
'use strict';

const cluster = require('node:cluster');

// Only a cluster worker of dutchmaster's has a drain to take part in; a
// node process that the app starts itself is left alone.
if (cluster.isWorker && typeof process.send === 'function') {
  install();
}

function install() {
  const net = require('node:net');
  const http = require('node:http');
  const https = require('node:https');
  const env = process.env;

  const LINGER_MS = 500;
  const grace = wholeNumber(env.DUTCHMASTER_NODE_GRACE_MS, 5000);
  const maxRequests = wholeNumber(env.DUTCHMASTER_MAX_REQUESTS, 0);
  const watchdogUsec = wholeNumber(env.WATCHDOG_USEC, 0);

  // The app's own children must not load this module.
  const ours = /\s*--require "[^"]*dutchmaster-node-preload\.cjs"$/;
  if (ours.test(env.NODE_OPTIONS || '')) {
    const rest = env.NODE_OPTIONS.replace(ours, '');
    if (rest) env.NODE_OPTIONS = rest;
    else delete env.NODE_OPTIONS;
  }

  // Per HTTP connection: requests in flight (undefined: not an HTTP
  // server's connection), and whether its lingering close has begun.
  const kActive = Symbol('dutchmaster.active');
  const kLingering = Symbol('dutchmaster.lingering');

  const servers = new Set(); // every net.Server that listened and is not closed
  const connections = new Set(); // open HTTP connections, upgraded ones excepted

  let draining = false; // a drain has begun
  let closing = false; // its grace is over: idle connections are closed
  let stopSignal = ''; // the signal that asked for the drain, or came during it
  let handedOver = false; // the app's own handlers were given the drain
  let exitWhenIdle = false; // the app has no handler for the signal it got
  let handing = false; // the app's signal handlers are running
  let requests = 0;
  let readySent = false;
  let graceTimer = null;

  function wholeNumber(text, dflt) {
    const n = Number.parseInt(text, 10);
    return Number.isFinite(n) && n >= 0 ? n : dflt;
  }

  function send(message) {
    if (!process.connected) return;
    try {
      process.send(message, undefined, undefined, () => {});
    } catch {
      // The channel went away in between; nobody is listening any more.
    }
  }

  // --- What the app's servers do -------------------------------------------

  // Every listen is seen: the server is closed at a drain, and a server
  // that bypasses the cluster primary reports readiness itself (the
  // primary would never hear of it).
  const listen = net.Server.prototype.listen;
  net.Server.prototype.listen = function dutchmasterListen(options) {
    if (!servers.has(this)) {
      servers.add(this);
      this.once('close', () => servers.delete(this));
    }
    if (options !== null && typeof options === 'object' && options.exclusive === true) {
      this.once('listening', reportReady);
    }
    return Reflect.apply(listen, this, arguments);
  };

  function reportReady() {
    if (readySent) return;
    readySent = true;
    send({ event: 'ready' });
  }

  // The HTTP servers' events are watched where they are emitted, so that
  // no listener is added (an 'upgrade' listener would change what Node
  // does with an upgrade request).
  hookEmit(http.Server, 'connection');
  hookEmit(https.Server, 'secureConnection');

  function hookEmit(Server, connectionEvent) {
    const emit = Server.prototype.emit;
    Server.prototype.emit = function dutchmasterEmit(event, a, b) {
      switch (event) {
        case connectionEvent:
          track(a);
          break;
        case 'request':
        case 'checkContinue':
        case 'checkExpectation':
          if (a.socket && a.socket[kLingering]) {
            // Sent after the close began: discarded unread, never handled,
            // so that the client may safely send it again elsewhere.
            a.resume();
            return true;
          }
          onRequest(a, b);
          break;
        case 'upgrade':
        case 'connect':
          if (b && b[kLingering]) return true;
          // The app owns an upgraded connection (a WebSocket): it is not
          // an HTTP connection to drain any more.
          connections.delete(b);
          changed();
          break;
      }
      return Reflect.apply(emit, this, arguments);
    };
  }

  function track(socket) {
    if (!socket || socket[kActive] !== undefined) return;
    socket[kActive] = 0;
    connections.add(socket);
    socket.once('close', () => {
      connections.delete(socket);
      changed();
    });
    if (closing) linger(socket);
  }

  function onRequest(req, res) {
    const socket = req.socket;
    if (maxRequests > 0 && ++requests === maxRequests) {
      send({ event: 'request-restart', reason: 'max-requests' });
    }
    if (!socket || socket[kActive] === undefined) return;
    socket[kActive]++;
    res.once('close', () => {
      socket[kActive]--;
      if (closing && socket[kActive] === 0) linger(socket);
      changed();
    });
  }

  // During a drain every response closes its connection.
  const writeHead = http.ServerResponse.prototype.writeHead;
  http.ServerResponse.prototype.writeHead = function dutchmasterWriteHead(statusCode) {
    if (draining && !this.headersSent && !(statusCode < 200)) {
      this.setHeader('Connection', 'close');
    }
    return Reflect.apply(writeHead, this, arguments);
  };

  // Node closes a connection after a "Connection: close" response with
  // destroySoon(); during a drain that close lingers too.
  const destroySoon = net.Socket.prototype.destroySoon;
  net.Socket.prototype.destroySoon = function dutchmasterDestroySoon() {
    if (draining && this[kActive] !== undefined) {
      linger(this);
      return;
    }
    return Reflect.apply(destroySoon, this, arguments);
  };

  // Node's server.close() closes idle connections at once (destroy); a
  // request sent on one at that moment would meet a reset. During the
  // grace they stay open; after it, they get the lingering close.
  // (Node before 18.2 has no closeIdleConnections, and close() leaves idle
  // connections alone.)
  const closeIdle = http.Server.prototype.closeIdleConnections;
  function dutchmasterCloseIdleConnections() {
    if (!draining) return Reflect.apply(closeIdle, this, arguments);
    if (closing) lingerIdle();
  }
  if (typeof closeIdle === 'function') {
    http.Server.prototype.closeIdleConnections = dutchmasterCloseIdleConnections;
    if (https.Server.prototype.closeIdleConnections === closeIdle) {
      https.Server.prototype.closeIdleConnections = dutchmasterCloseIdleConnections;
    }
  }

  // A server the drain already closed is closed again by the app's own
  // handler (server.close(cb)): the callback gets no ERR_SERVER_NOT_RUNNING.
  const close = net.Server.prototype.close;
  net.Server.prototype.close = function dutchmasterClose(cb) {
    if (draining && typeof cb === 'function' && !this.listening) {
      arguments[0] = (err) => cb(err && err.code === 'ERR_SERVER_NOT_RUNNING' ? undefined : err);
    }
    return Reflect.apply(close, this, arguments);
  };

  // Nor does disconnecting a channel the drain already disconnected throw.
  const disconnect = process.disconnect;
  process.disconnect = function dutchmasterDisconnect() {
    if (draining && !process.connected) return;
    return Reflect.apply(disconnect, this, arguments);
  };

  // --- The drain -----------------------------------------------------------

  // The master's disconnect: Node's cluster closes the servers it shared
  // (right after this listener, which runs first); the others close here.
  process.prependListener('internalMessage', (message) => {
    if (message && message.cmd === 'NODE_CLUSTER' && message.act === 'disconnect') {
      beginDrain();
    }
  });

  // SIGTERM and SIGINT begin the drain instead of ending the process. The
  // app's own handlers for them are held back until the grace is over: the
  // signal's watcher calls process.emit, bound when the first listener is
  // added, which is below, after process.emit is wrapped.
  const emit = process.emit;
  process.emit = function dutchmasterProcessEmit(event, arg) {
    if ((event === 'SIGTERM' || event === 'SIGINT') && arg === event && !handing) {
      onSignal(event, false);
      return true;
    }
    return Reflect.apply(emit, this, arguments);
  };
  const ownListeners = new Set();
  for (const signal of ['SIGTERM', 'SIGINT']) {
    // Called with the app's handlers only if the signal's watcher was bound
    // to another emit (a module preloaded before this one listened first),
    // or if the app emits the signal itself: they run in this same emit,
    // so they are not held back.
    const listener = () => {
      if (!handing) onSignal(signal, true);
    };
    ownListeners.add(listener);
    process.on(signal, listener);
  }

  function appHandlers(signal) {
    return process.listeners(signal).filter((l) => !ownListeners.has(l)).length;
  }

  function onSignal(signal, appRan) {
    if (!stopSignal) stopSignal = signal;
    if (!draining) {
      beginDrain();
      // As the master's disconnect does: Node's cluster closes the servers
      // it shared, then the channel, which otherwise keeps the process alive.
      if (process.connected && cluster.worker) cluster.worker.disconnect();
    }
    if (appRan) {
      handedOver = true;
      return;
    }
    if (closing) {
      // Later signals go to the app as they would without this module.
      if (appHandlers(signal) > 0) runAppHandlers(signal);
      else endWhenIdle();
    }
  }

  // beginDrain runs before Node's cluster closes its servers; the rest
  // waits for the next tick, when they are closed.
  function beginDrain() {
    if (draining) return;
    draining = true;
    graceTimer = setTimeout(endGrace, grace);
    graceTimer.unref();
    process.nextTick(() => {
      for (const server of servers) {
        if (server.listening) server.close();
      }
      changed();
    });
  }

  // changed: a connection closed or went idle.
  function changed() {
    if (draining && !closing) {
      for (const socket of connections) {
        if (!socket[kLingering]) return;
      }
      endGrace();
    } else if (exitWhenIdle) {
      endWhenIdle();
    }
  }

  function endGrace() {
    if (closing) return;
    closing = true;
    clearTimeout(graceTimer);
    lingerIdle();
    if (handedOver) return;
    handedOver = true;
    const signal = stopSignal || (appHandlers('SIGTERM') > 0 ? 'SIGTERM' : 'SIGINT');
    if (appHandlers(signal) > 0) runAppHandlers(signal);
    else if (stopSignal) endWhenIdle();
  }

  function runAppHandlers(signal) {
    handing = true;
    try {
      Reflect.apply(emit, process, [signal, signal]);
    } finally {
      handing = false;
    }
  }

  function lingerIdle() {
    for (const socket of connections) {
      if (socket[kActive] === 0) linger(socket);
    }
  }

  // The signal would have ended the process; it ends once no request is
  // in flight (and after the lingering closes), unless it ends by itself.
  function endWhenIdle() {
    exitWhenIdle = true;
    for (const socket of connections) {
      if (socket[kActive] > 0) return;
    }
    setTimeout(() => process.exit(0), LINGER_MS).unref();
    exitWhenIdle = false;
  }

  function linger(socket) {
    if (socket[kLingering] || socket.destroyed) return;
    socket[kLingering] = true;
    socket.end();
    socket.resume();
    const bound = setTimeout(() => socket.destroy(), LINGER_MS);
    bound.unref();
    socket.once('close', () => clearTimeout(bound));
  }

  // --- Contracts with the master -------------------------------------------

  // Heartbeats from the event loop: a loop that blocks stops them.
  if (watchdogUsec > 0) {
    setInterval(() => send({ event: 'heartbeat' }), Math.max(1, Math.floor(watchdogUsec / 3000))).unref();
  }
}
