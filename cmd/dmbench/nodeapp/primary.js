// A node:cluster primary as apps write it, with dutch-master's rolling
// restart on SIGUSR2: for each worker, fork its replacement, wait until
// it listens, then disconnect the old one. SIGTERM disconnects them all.
const cluster = require('node:cluster');
const path = require('node:path');

cluster.setupPrimary({ exec: path.join(__dirname, 'app.js') });
const fork = () => new Promise((resolve) => cluster.fork().once('listening', function () { resolve(this); }));
let restarting = false;
let again = false;
async function restart() {
  if (restarting) return void (again = true);
  restarting = true;
  for (const old of Object.values(cluster.workers)) {
    await fork();
    old.disconnect();
  }
  restarting = false;
  if (again) (again = false), restart();
}
cluster.on('exit', (w) => w.exitedAfterDisconnect || fork());
for (let i = 0; i < Number(process.env.WORKERS || 2); i++) fork();
process.on('SIGUSR2', restart);
process.on('SIGTERM', () => Object.values(cluster.workers).forEach((w) => w.disconnect()));
