// Prints what prom-client itself makes of three workers' metrics, for
// TestAggregateAsPromClient: {"workers": [getMetricsAsJSON() of each],
// "text": AggregatorRegistry.aggregate(workers).metrics()}. The workers
// are plain registries filled differently; argv[2] is the directory whose
// node_modules holds prom-client.
const path = require('path');
const client = require(path.join(process.argv[2], 'node_modules', 'prom-client'));

async function worker(i) {
  const r = new client.Registry();
  if (i === 1) r.setDefaultLabels({ app: 'shop' });
  const c = new client.Counter({ name: 'requests_total', help: 'Requests\\served\nby "path"', labelNames: ['path', 'code'], registers: [r] });
  c.inc({ code: 200, path: '/' }, 10 ** i);
  c.inc({ path: '/a"b\\c\nd', code: 500 }, 1.5);
  if (i !== 0) c.inc({ path: '/only-later', code: 404 });
  const g = (name, aggregator, v) => new client.Gauge({ name, help: aggregator, aggregator, registers: [r] }).set(v);
  g('g_first', 'first', i + 0.25);
  g('g_min', 'min', 7 - i);
  g('g_max', 'max', 1e21 * (i + 1));
  g('g_average', 'average', 0.000001 * (i + 1));
  g('g_omit', 'omit', 3);
  g('g_small', 'sum', 1e-7);
  const h = new client.Histogram({ name: 'latency_seconds', help: 'Latency', labelNames: ['route'], buckets: [0.005, 0.1, 2.5], registers: [r] });
  h.observe({ route: 'x' }, 0.003 * (i + 1));
  h.observe({ route: 'x' }, 3);
  const s = new client.Summary({ name: 'sizes', help: 'Sizes', percentiles: [0.5, 0.99], registers: [r] });
  for (let k = 0; k < 10; k++) s.observe(k * (i + 1));
  if (i === 2) new client.Gauge({ name: 'late_metric', help: 'only in the last worker', registers: [r] }).set(-2);
  return r.getMetricsAsJSON();
}

(async () => {
  const workers = [];
  for (let i = 0; i < 3; i++) workers.push(await worker(i));
  const text = await client.AggregatorRegistry.aggregate(workers).metrics();
  process.stdout.write(JSON.stringify({ workers, text }));
})();
