package main

import (
	"math"
	"time"

	"github.com/dutchmaster/dutchmaster/cmd/internal/loadtest"
)

// result is one run's JSON line.
type result struct {
	Workers  int     `json:"workers"`
	Mode     string  `json:"mode"`
	Clients  int     `json:"clients"`
	LoadS    float64 `json:"load_s"`
	BootMs   float64 `json:"boot_ms"`
	WorkMs   float64 `json:"work_ms"`
	Requests int64   `json:"requests"`
	Failed   int64   `json:"failed"`
	// Failures counts failed requests by kind (loadtest.FailKinds).
	Failures map[string]int64 `json:"failures"`
	// FailureDetail lists the first failures, each placed relative to the
	// restarts and the latest drain.
	FailureDetail []loadtest.Failure `json:"failure_detail,omitempty"`
	Latency       struct {
		Steady  latencyStats `json:"steady"`
		Restart latencyStats `json:"restart"` // requests overlapping a restart window
	} `json:"latency_ms"`
	Restarts          []restartStats   `json:"restarts"`
	SignalToFirstFork latencyStats     `json:"signal_to_first_fork_ms"`
	Master            masterStats      `json:"master"`
	Throughput        *throughputStats `json:"throughput,omitempty"`
	// Balance is the master's listener mode, from its "balance" line
	// (kernel: a socket per worker's slot; shared: one socket); the
	// throughput's "shared" figures are through that listener.
	Balance string `json:"balance"`
	// Spread: 16 keep-alive connections opened together, before the load.
	Spread *spreadStats `json:"spread,omitempty"`
	// TCP is the change of the host's TCP counters over the restart load
	// (tcpCounters says what each means).
	TCP     map[string]int64  `json:"tcp"`
	Targets map[string]target `json:"targets"`
}

type latencyStats = loadtest.LatencyStats

// restartStats is one rolling restart, timed from the master's log.
type restartStats struct {
	Generation int `json:"generation"`
	// DurationMs: "signal received" to "restart complete" (the last old
	// worker gone); MasterMs: the "duration" the master logs itself (from
	// its own start of the rollout).
	DurationMs float64 `json:"duration_ms"`
	MasterMs   float64 `json:"master_duration_ms"`
	// IdealMs: workers × boot delay, the floor for one replacement at a
	// time; BootsMs: the replacements' measured boots, summed.
	IdealMs        float64 `json:"ideal_ms"`
	BootsMs        float64 `json:"boots_ms"`
	SlowestDrainMs float64 `json:"slowest_drain_ms"` // a "drain" to its "worker exited"
	LastDrainMs    float64 `json:"last_drain_ms"`
	SignalToForkMs float64 `json:"signal_to_first_fork_ms"`
	// SentToForkMs: from dmbench's kill(2) to the first "fork", so signal
	// delivery included (both are this host's clock).
	SentToForkMs float64 `json:"sent_to_first_fork_ms"`
	Requests     int     `json:"requests"` // finished requests overlapping the window
}

type masterStats struct {
	PID        int     `json:"pid"`
	PeakRSSMB  float64 `json:"peak_rss_mb"`  // VmHWM at the end of the run
	CPUS       float64 `json:"cpu_s"`        // utime+stime at the end of the restart load
	CPUTotalS  float64 `json:"cpu_total_s"`  // and at the end of the run
	IdleS      float64 `json:"idle_s"`       // length of the quiet period
	IdleCPUPct float64 `json:"idle_cpu_pct"` // CPU over it (utime+stime, 10 ms ticks), % of one core
	IdleCPUus  float64 `json:"idle_cpu_us"`  // the same in µs, from schedstat (ns resolution)
}

// target is one of the targets, as measured in this run.
type target struct {
	Met   bool    `json:"met"`
	Value float64 `json:"value"`
	Limit float64 `json:"limit"`
}

// maxDetail bounds failure_detail.
const maxDetail = 20

type window struct{ start, end int64 }

// splitLatencies sorts the samples' latencies (ms): those of requests
// overlapping one of the windows, and the steady ones (the others, started
// at warm or later); counts[i] is how many requests overlapped window i.
func splitLatencies(samples []loadtest.Sample, warm int64, windows []window) (steady, during []float64, counts []int) {
	counts = make([]int, len(windows))
	for _, s := range samples {
		in := false
		for i, w := range windows {
			if s.Start < w.end && s.Start+s.Latency > w.start {
				in = true
				counts[i]++
			}
		}
		switch {
		case in:
			during = append(during, float64(s.Latency)/1e6)
		case s.Start >= warm:
			steady = append(steady, float64(s.Latency)/1e6)
		}
	}
	return steady, during, counts
}

func (r *raw) analyze() *result {
	cfg := r.cfg
	l := r.load
	res := &result{
		Workers: cfg.Workers, Mode: cfg.Mode, Clients: cfg.Clients,
		LoadS:  l.Ended.Sub(l.Began).Seconds(),
		BootMs: ms(cfg.Boot), WorkMs: ms(cfg.Work),
		Requests: int64(len(l.Samples) + len(l.Failures)),
		Failed:   int64(len(l.Failures)),
		Failures: map[string]int64{},
		Targets:  map[string]target{},
	}
	for _, k := range loadtest.FailKinds {
		res.Failures[k] = l.ByKind[k]
	}

	var windows []window
	var forks []float64
	for _, sp := range r.spans {
		rs, w := r.restart(sp)
		res.Restarts = append(res.Restarts, rs)
		windows = append(windows, w)
		forks = append(forks, rs.SignalToForkMs)
	}
	res.SignalToFirstFork = stats(forks)

	warm := l.Began.Add(cfg.Warmup).UnixNano()
	var steady, restart []float64
	steady, restart, counts := splitLatencies(l.Samples, warm, windows)
	for i, n := range counts {
		res.Restarts[i].Requests += n
	}
	res.Latency.Steady, res.Latency.Restart = stats(steady), stats(restart)

	drains := r.eventsNamed("drain")
	for i, f := range l.Failures {
		if i == maxDetail {
			break
		}
		t := f.Start.UnixNano()
		for j, w := range windows {
			if t >= w.start && t <= w.end {
				f.Restart = j + 1
			}
		}
		f.AfterMs = -1
		for _, d := range drains {
			if d.Time.UnixNano() <= t {
				f.AfterMs = ms(time.Duration(t - d.Time.UnixNano()))
				f.Worker = d.Num("worker")
			}
		}
		res.FailureDetail = append(res.FailureDetail, f)
	}

	res.Master = masterStats{
		PID:       r.masterPID,
		PeakRSSMB: round(float64(r.peakRSS)/(1<<20), 1),
		CPUS:      round(r.cpuLoad.Seconds(), 2),
		CPUTotalS: round(r.cpuTotal.Seconds(), 2),
		IdleS:     cfg.Idle.Seconds(),
	}
	if cfg.Idle > 0 {
		res.Master.IdleCPUPct = round(100*r.idleCPU.Seconds()/cfg.Idle.Seconds(), 2)
		res.Master.IdleCPUus = round(float64(r.idleRun)/1e3, 0)
	}
	res.Throughput = r.tput
	res.Balance = balanceOf(r.events)
	res.Spread = r.spread
	res.TCP = r.tcp
	if res.Throughput != nil {
		t := res.Throughput
		t.SharedRPS, t.ReusePortRPS, t.Ratio = round(t.SharedRPS, 0), round(t.ReusePortRPS, 0), round(t.Ratio, 3)
	}
	res.judge()
	return res
}

// restart reads one restart's events.
func (r *raw) restart(sp restartSpan) (restartStats, window) {
	rs := restartStats{Generation: sp.generation, IdealMs: float64(r.cfg.Workers) * ms(r.cfg.Boot)}
	var signal, fork, done time.Time
	drained := map[int]time.Time{}
	var lastExit time.Time
	for _, e := range r.events[sp.from:sp.to] {
		switch e.Message {
		case "signal received":
			if signal.IsZero() && e.Str("signal") == "SIGUSR2" {
				signal = e.Time
			}
		case "fork":
			if fork.IsZero() {
				fork = e.Time
			}
		case "worker listening":
			if e.Num("generation") == sp.generation {
				rs.BootsMs += ms(e.Dur("boot"))
			}
		case "drain":
			if e.Str("reason") != "stop" {
				drained[e.Num("worker")] = e.Time
			}
		case "worker exited":
			if at, ok := drained[e.Num("worker")]; ok {
				d := ms(e.Time.Sub(at))
				rs.SlowestDrainMs = max(rs.SlowestDrainMs, d)
				if e.Time.After(lastExit) {
					lastExit, rs.LastDrainMs = e.Time, d
				}
			}
		case "restart complete":
			done = e.Time
			rs.MasterMs = ms(e.Dur("duration"))
		}
	}
	if signal.IsZero() { // cannot happen with a master that logs signals; fall back to our clock
		signal = sp.sent
	}
	rs.DurationMs = ms(done.Sub(signal))
	if !fork.IsZero() {
		rs.SignalToForkMs = round(float64(fork.Sub(signal))/1e6, 3)
		rs.SentToForkMs = round(float64(fork.Sub(sp.sent))/1e6, 3)
	}
	rs.BootsMs = round(rs.BootsMs, 1)
	return rs, window{signal.UnixNano(), done.UnixNano()}
}

func (r *raw) eventsNamed(message string) []loadtest.Event {
	var out []loadtest.Event
	for _, e := range r.events {
		if e.Message == message {
			out = append(out, e)
		}
	}
	return out
}

// judge records the targets.
func (res *result) judge() {
	res.Targets["zero_failures"] = target{Met: res.Failed == 0, Value: float64(res.Failed), Limit: 0}
	// Restart duration within 10% of the ideal plus the slowest drain:
	// the restart with the least margin.
	worst := target{Met: true}
	worstMargin := math.Inf(1)
	for _, rs := range res.Restarts {
		limit := 1.1*rs.IdealMs + rs.SlowestDrainMs
		if margin := limit - rs.DurationMs; margin < worstMargin {
			worstMargin = margin
			worst = target{Met: margin >= 0, Value: rs.DurationMs, Limit: round(limit, 1)}
		}
	}
	res.Targets["restart_duration_ms"] = worst
	if s, rs := res.Latency.Steady.P99, res.Latency.Restart.P99; s > 0 && rs > 0 {
		res.Targets["p99_restart_over_steady"] = target{Met: rs <= 2*s, Value: round(rs/s, 2), Limit: 2}
	}
	res.Targets["peak_rss_mb"] = target{Met: res.Master.PeakRSSMB < 30, Value: res.Master.PeakRSSMB, Limit: 30}
	if res.Master.IdleS > 0 {
		// The finer of the two measures when it is there.
		pct := res.Master.IdleCPUPct
		if res.Master.IdleCPUus > 0 {
			pct = round(res.Master.IdleCPUus/1e4/res.Master.IdleS, 4)
		}
		res.Targets["idle_cpu_pct"] = target{Met: pct < 1, Value: pct, Limit: 1}
	}
	if t := res.Throughput; t != nil {
		// Balanced in the kernel, the master's listener spreads
		// connections at least as evenly as SO_REUSEPORT's hash.
		limit := 0.98
		if res.Balance == "kernel" {
			limit = 1.0
		}
		res.Targets["throughput_ratio"] = target{Met: t.Ratio >= limit, Value: t.Ratio, Limit: limit}
	}
	if s := res.Spread; s != nil {
		res.Targets["spread_busiest"] = target{Met: s.Busiest <= s.Limit, Value: float64(s.Busiest), Limit: float64(s.Limit)}
	}
	if len(res.Restarts) > 0 {
		v := res.SignalToFirstFork.Max
		res.Targets["signal_to_first_fork_ms"] = target{Met: v < 5, Value: v, Limit: 5}
	}
}

var (
	stats = loadtest.Stats
	ms    = loadtest.Ms
	round = loadtest.Round
)
