// The usual Node.js cluster script: the primary forks the workers, the
// workers serve. Under dutchmaster NODE_UNIQUE_ID is set, so
// cluster.isPrimary is false and only the worker branch runs; the master
// is the primary. Run by itself, it would fork 2 workers of its own.
const cluster = require('cluster');
const http = require('http');

if (cluster.isPrimary) {
  console.log(`primary ${process.pid} forks 2 workers`);
  for (let i = 0; i < 2; i++) cluster.fork();
  cluster.on('exit', () => cluster.fork());
} else {
  http.createServer((req, res) => {
    res.end(`${process.pid} ${cluster.worker.id}`);
  }).listen(Number(process.env.PORT));
}
