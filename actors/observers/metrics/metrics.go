// Package metrics turns what the cluster actor sees and decides into
// Prometheus metrics, and answers the health checks of container
// orchestrators. Counters and histograms follow the inputs and the typed
// decisions, never a Note's wording (Collector.Observe, fed by
// actors.Options.Observe); gauges are read
// from the cluster's view at scrape time, so they are never stale.
//
// Everything is registered on a private registry: the process's global
// one (which protoactor and other libraries may use) is never touched.
//
// Endpoints (Collector.Handler):
//
//	/metrics  Prometheus text format
//	/healthz  200 while the master's cluster actor answers (the master is alive)
//	/metrics/cluster  the Node.js workers' prom-client metrics, aggregated
//	          (cluster.go)
//	/readyz   200 while at least the target count of workers listen and the
//	          master is not stopping; 503 otherwise
package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/fsm"
	"github.com/dutchmaster/dutchmaster/sockets/nodecluster"
)

// Options configure a Collector.
type Options struct {
	// Name is the master's --name, the "name" label of every metric
	// (none when empty).
	Name string
	// View reads the cluster's state, for the gauges and the health checks.
	View func(ctx context.Context) (core.View, error)
	// ViewTimeout bounds one View call. Default 2 s.
	ViewTimeout time.Duration
	// LogDropped, if set, counts the log lines the master's log writer
	// dropped (dutchmaster_log_lines_dropped_total).
	LogDropped func() uint64
	// NodeWorkers, if set, lists the Node.js cluster workers to ask for
	// their prom-client metrics on ClusterPath.
	NodeWorkers func() []nodecluster.Peer
	// NodeTimeout bounds the wait for their answers. Default
	// DefaultNodeTimeout.
	NodeTimeout time.Duration
	// Logger logs the workers left out of ClusterPath's answer.
	Logger zerolog.Logger
}

// The label values of dutchmaster_worker_restarts_total.
const (
	CauseRollout = "rollout" // a replacement forked by a rollout (a restart, or a worker's own request)
	CauseFailure = "failure" // a re-fork after the slot's worker failed (crash, ready timeout, fork failure)
)

// Collector holds the metrics of one master.
type Collector struct {
	opts Options
	reg  *prometheus.Registry

	rolloutsStarted prometheus.Counter
	rollouts        *prometheus.CounterVec
	rolloutSeconds  *prometheus.HistogramVec
	restarts        *prometheus.CounterVec
	exits           *prometheus.CounterVec
	forkSeconds     prometheus.Histogram
	readySeconds    prometheus.Histogram
	recycles        *prometheus.CounterVec
	watchdogMisses  prometheus.Counter

	mu           sync.Mutex
	forked       map[core.WorkerID]time.Time // fork decided, not yet spawned
	booting      map[core.WorkerID]time.Time // fork decided, not yet listening
	slotOf       map[core.WorkerID]int       // every worker forked and not yet exited
	slotUsed     map[int]bool                // a worker was forked into the slot
	slotRetired  map[int]bool                // its worker was drained by a scale down
	rolloutStart time.Time
}

// New returns a collector with every metric registered on a private
// registry, together with Go runtime and process metrics.
func New(opts Options) *Collector {
	if opts.ViewTimeout <= 0 {
		opts.ViewTimeout = 2 * time.Second
	}
	if opts.NodeTimeout <= 0 {
		opts.NodeTimeout = DefaultNodeTimeout
	}
	c := &Collector{
		opts: opts, reg: prometheus.NewRegistry(),
		forked: map[core.WorkerID]time.Time{}, booting: map[core.WorkerID]time.Time{},
		slotOf: map[core.WorkerID]int{}, slotUsed: map[int]bool{}, slotRetired: map[int]bool{},
	}
	c.rolloutsStarted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "dutchmaster_rollouts_started_total",
		Help: "Rollouts (rolling restarts, and replacements workers asked for) begun.",
	})
	c.rollouts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dutchmaster_rollouts_total",
		Help: "Rollouts ended, by outcome: complete, aborted (a replacement failed; the old workers kept serving) or cancelled (by a stop).",
	}, []string{"outcome"})
	c.rolloutSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "dutchmaster_rollout_duration_seconds",
		Help:    "Time from a rollout's start to its end, by outcome.",
		Buckets: []float64{.1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800},
	}, []string{"outcome"})
	c.restarts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dutchmaster_worker_restarts_total",
		Help: "Workers forked to take over a slot, by cause: rollout (a replacement) or failure (the slot's worker died or never got ready).",
	}, []string{"cause"})
	c.exits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dutchmaster_worker_exits_total",
		Help: "Worker processes gone, by cause: clean, code (non-zero status), signal, killed (SIGKILL by the master) or fork-failed.",
	}, []string{"cause"})
	c.forkSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "dutchmaster_worker_fork_seconds",
		Help:    "Time from the decision to fork a worker to its process running (before-fork hook and exec included).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})
	c.readySeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "dutchmaster_worker_ready_seconds",
		Help:    "Time from the decision to fork a worker to its report of being ready.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
	})
	c.recycles = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dutchmaster_worker_recycles_total",
		Help: "Recycles begun (a healthy worker replaced all the same), by cause: memory (--max-memory), lifetime (--max-lifetime) or max-requests (--max-requests).",
	}, []string{"cause"})
	c.watchdogMisses = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "dutchmaster_watchdog_misses_total",
		Help: "Workers found hung: no heartbeat for --watchdog, or WATCHDOG=trigger.",
	})
	for _, cause := range []string{core.RecycleMemory, core.RecycleLifetime, core.RecycleRequests} {
		c.recycles.WithLabelValues(cause)
	}
	for _, o := range []string{core.OutcomeComplete, core.OutcomeAborted, core.OutcomeCancelled} {
		c.rollouts.WithLabelValues(o)
	}
	for _, cause := range []string{CauseRollout, CauseFailure} {
		c.restarts.WithLabelValues(cause)
	}
	for _, k := range []fsm.ExitKind{fsm.ExitClean, fsm.ExitCode, fsm.ExitSignal, fsm.ExitHardKill, fsm.ExitForkFailed} {
		c.exits.WithLabelValues(string(k))
	}
	var reg prometheus.Registerer = c.reg
	if opts.Name != "" {
		reg = prometheus.WrapRegistererWith(prometheus.Labels{"name": opts.Name}, reg)
	}
	if opts.LogDropped != nil {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "dutchmaster_log_lines_dropped_total",
			Help: "Log lines dropped because the log's reader did not keep up (the master never waits for its log).",
		}, func() float64 { return float64(opts.LogDropped()) }))
	}
	reg.MustRegister(c.rolloutsStarted, c.rollouts, c.rolloutSeconds, c.restarts, c.exits, c.forkSeconds, c.readySeconds,
		c.recycles, c.watchdogMisses, viewCollector{c},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return c
}

// Registry is the collector's private registry, to add metrics of one's own.
func (c *Collector) Registry() *prometheus.Registry { return c.reg }

// Observe follows one step of the cluster; it has the signature of
// actors.Options.Observe and is cheap enough for the actor's goroutine.
func (c *Collector) Observe(now time.Time, in core.Input, out []core.Decision) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch in := in.(type) {
	case core.WorkerSpawned:
		if t, ok := c.forked[in.Worker]; ok {
			c.forkSeconds.Observe(now.Sub(t).Seconds())
			delete(c.forked, in.Worker)
		}
	case core.WorkerListening:
		if t, ok := c.booting[in.Worker]; ok {
			c.readySeconds.Observe(now.Sub(t).Seconds())
			delete(c.booting, in.Worker)
		}
	case core.WorkerExited:
		if _, ok := c.slotOf[in.Worker]; ok {
			c.exits.WithLabelValues(string(in.Reason.Kind)).Inc()
			delete(c.slotOf, in.Worker)
			delete(c.forked, in.Worker)
			delete(c.booting, in.Worker)
		}
	}
	for _, d := range out {
		switch d := d.(type) {
		case core.Fork:
			c.fork(now, d)
		case core.Drain:
			c.stopping(d.Worker, d.Reason)
		case core.Kill:
			c.stopping(d.Worker, d.Reason)
		case core.Abort:
			c.stopping(d.Worker, d.Reason)
		case core.Recycled:
			c.recycles.WithLabelValues(d.Cause).Inc()
		case core.WatchdogMissed:
			c.watchdogMisses.Inc()
		case core.RolloutStarted:
			c.rolloutsStarted.Inc()
			c.rolloutStart = now
		case core.RolloutEnded:
			c.rollouts.WithLabelValues(d.Outcome).Inc()
			if !c.rolloutStart.IsZero() {
				c.rolloutSeconds.WithLabelValues(d.Outcome).Observe(now.Sub(c.rolloutStart).Seconds())
			}
			c.rolloutStart = time.Time{}
		}
	}
}

func (c *Collector) fork(now time.Time, d core.Fork) {
	c.forked[d.Worker], c.booting[d.Worker] = now, now
	c.slotOf[d.Worker] = d.Slot
	switch {
	case d.Replacement:
		c.restarts.WithLabelValues(CauseRollout).Inc()
	case c.slotUsed[d.Slot] && !c.slotRetired[d.Slot]:
		c.restarts.WithLabelValues(CauseFailure).Inc()
	}
	// A retired slot forked into again was reactivated by a scale up.
	c.slotUsed[d.Slot], c.slotRetired[d.Slot] = true, false
}

// stopping: a worker asked to drain or killed will not be ready.
func (c *Collector) stopping(id core.WorkerID, reason string) {
	delete(c.booting, id)
	if slot, ok := c.slotOf[id]; ok && reason == "scale down" {
		c.slotRetired[slot] = true
	}
}

// viewCollector reads the gauges from the cluster's view at scrape time.
type viewCollector struct{ c *Collector }

var (
	workersDesc  = prometheus.NewDesc("dutchmaster_workers", "Workers by state: forking (started, not yet ready), listening (serving) or draining (asked to stop).", []string{"state"}, nil)
	targetDesc   = prometheus.NewDesc("dutchmaster_target_workers", "The worker count the cluster aims at.", nil, nil)
	genDesc      = prometheus.NewDesc("dutchmaster_generation", "The newest generation (it grows by one at every restart request).", nil, nil)
	readyDesc    = prometheus.NewDesc("dutchmaster_ready", "1 while at least the target count of workers listen and the master is not stopping (the /readyz condition).", nil, nil)
	rolloutDesc  = prometheus.NewDesc("dutchmaster_rollout_in_progress", "1 while a rollout runs.", nil, nil)
	flappingDesc = prometheus.NewDesc("dutchmaster_slots_flapping", "Slots whose workers keep failing (their re-forks are backing off).", nil, nil)
)

func (v viewCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{workersDesc, targetDesc, genDesc, readyDesc, rolloutDesc, flappingDesc} {
		ch <- d
	}
}

func (v viewCollector) Collect(ch chan<- prometheus.Metric) {
	view, err := v.c.view()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(workersDesc, err)
		return
	}
	byState := map[fsm.State]int{}
	for _, w := range view.Workers {
		byState[w.State]++
	}
	for _, s := range []fsm.State{fsm.Forking, fsm.Listening, fsm.Draining} {
		ch <- prometheus.MustNewConstMetric(workersDesc, prometheus.GaugeValue, float64(byState[s]), string(s))
	}
	flapping := 0
	for _, s := range view.Slots {
		if s.Flapping {
			flapping++
		}
	}
	ch <- prometheus.MustNewConstMetric(targetDesc, prometheus.GaugeValue, float64(view.Target))
	ch <- prometheus.MustNewConstMetric(genDesc, prometheus.GaugeValue, float64(view.Generation))
	ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, boolValue(Ready(view)))
	ch <- prometheus.MustNewConstMetric(rolloutDesc, prometheus.GaugeValue, boolValue(view.Rollout != nil))
	ch <- prometheus.MustNewConstMetric(flappingDesc, prometheus.GaugeValue, float64(flapping))
}

func (c *Collector) view() (core.View, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.ViewTimeout)
	defer cancel()
	return c.opts.View(ctx)
}

// Ready is the readiness rule of /readyz: the master is not stopping and
// at least the target count of workers listen.
func Ready(v core.View) bool { return !v.Stopping && v.Target > 0 && v.Listening() >= v.Target }

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
