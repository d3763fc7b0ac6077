// A cluster app that uses prom-client's cluster metrics as its README
// says: every process builds an AggregatorRegistry (in a worker, that is
// what answers the primary's requests); the app knows nothing of
// dutchmaster. An HTTP server listens on HOST:PORT.
//
// For the tests, each worker (DUTCHMASTER_SLOT s) counts 10^s jobs, so a
// sum shows which workers were included; app_worker_pid is the largest
// pid (aggregator max); app_omitted is never aggregated; with BIG_SERIES=n
// each worker has n more series of ~650 bytes (an answer over 1 MiB);
// a worker whose slot is FAIL_SLOT fails its metrics collection once the
// file FAIL_FILE exists.
const fs = require('fs');
const http = require('http');
const client = require('prom-client');

new client.AggregatorRegistry();

const slot = Number(process.env.DUTCHMASTER_SLOT || 0);
new client.Counter({ name: 'app_jobs_total', help: 'Jobs done', labelNames: ['kind'] }).inc({ kind: 'test' }, 10 ** slot);
new client.Counter({ name: 'app_worker_jobs_total', help: 'Jobs by worker slot', labelNames: ['slot'] }).inc({ slot }, 1);
new client.Gauge({ name: 'app_worker_pid', help: 'Largest worker pid', aggregator: 'max' }).set(process.pid);
new client.Gauge({ name: 'app_omitted', help: 'Never aggregated', aggregator: 'omit' }).set(1);
const big = Number(process.env.BIG_SERIES || 0);
if (big > 0) {
  const g = new client.Gauge({ name: 'app_big', help: 'Many series', labelNames: ['series'] });
  for (let i = 0; i < big; i++) g.set({ series: `${String(i).padStart(6, '0')}-${'x'.repeat(600)}` }, 1);
}
new client.Gauge({
  name: 'app_fragile',
  help: 'Fails to collect on demand',
  collect() {
    if (String(slot) === process.env.FAIL_SLOT && fs.existsSync(process.env.FAIL_FILE || '')) {
      throw new Error(`collection failed in slot ${slot}`);
    }
    this.set(1);
  },
});

http.createServer((req, res) => res.end(String(process.pid))).listen(Number(process.env.PORT), process.env.HOST);
