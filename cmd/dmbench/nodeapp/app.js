// The Node.js app of `dmbench -node`: a plain HTTP server, the same under
// every primary. It boots in BENCH_BOOT_MS, answers every request after
// BENCH_WORK_MS with its pid in X-Worker-Pid, and appends one line per
// event of its life to BENCH_EVENTS: "L pid ms" when it listens, "D pid
// ms" when its server starts closing (a cluster disconnect, or PM2's
// SIGINT), "X pid ms" when it exits; ms is wall-clock time.
const fs = require('fs');
const http = require('http');

const events = process.env.BENCH_EVENTS;
const note = (what) => {
  if (events) fs.appendFileSync(events, `${what} ${process.pid} ${(performance.timeOrigin + performance.now()).toFixed(3)}\n`);
};

const server = http.createServer((req, res) => {
  setTimeout(() => {
    res.setHeader('X-Worker-Pid', String(process.pid));
    res.end('ok\n');
  }, Number(process.env.BENCH_WORK_MS || 5));
});
const close = server.close;
let closing = false;
server.close = function (...args) {
  if (!closing) {
    closing = true;
    note('D');
  }
  return close.apply(this, args);
};
// PM2 stops a worker with SIGINT; a graceful app closes its server.
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close(() => process.exit(0)));
process.on('exit', () => note('X'));
server.on('listening', () => {
  note('L');
  if (process.send) process.send('ready');
});
setTimeout(() => server.listen(Number(process.env.PORT), '127.0.0.1'), Number(process.env.BENCH_BOOT_MS || 300));
