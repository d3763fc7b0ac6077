package main

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/dutchmaster/dutchmaster/cmd/internal/loadtest"
)

// soakConfig is one soak: rolling restarts under load, with workers
// SIGKILLed at random moments.
type soakConfig struct {
	Workers  int
	Restarts int           // rolling restarts to complete
	Boot     time.Duration // HELLO_BOOT_DELAY
	Work     time.Duration // HELLO_WORK
	Grace    time.Duration // HELLO_GRACE

	KeepAliveClients int // closed-loop clients on kept-alive connections
	MaxPerConn       int // requests per kept-alive connection before the client opens a new one
	CloseClients     int // closed-loop clients with a new connection per request

	KillBetween float64 // chance of a SIGKILL of a worker before each restart
	KillDuring  float64 // chance of one during each restart
	Seed        uint64

	MaxRequests int64
	Timeout     time.Duration // per request
	Patience    time.Duration // bound of every wait on the master or an event

	Log io.Writer // progress notes; nil: none
}

func (c soakConfig) note(format string, args ...any) {
	if c.Log != nil {
		fmt.Fprintf(c.Log, "dmsoak: "+format+"\n", args...)
	}
}

// masterSample is the master read once the cluster has settled after a
// restart: from /proc, and from its own /metrics (the Go runtime's view:
// loadtest.GoStats says what each figure is).
type masterSample struct {
	Restart int     `json:"restart"`
	AtS     float64 `json:"at_s"`
	RSSKiB  int64   `json:"rss_kib"`
	FDs     int     `json:"fds"`
	Threads int     `json:"threads"`
	CPUS    float64 `json:"cpu_s"`

	Goroutines   int   `json:"goroutines"`     // go_goroutines
	HeapAllocKiB int64 `json:"heap_alloc_kib"` // go_memstats_heap_alloc_bytes
	HeapGoalKiB  int64 `json:"heap_goal_kib"`  // go_memstats_next_gc_bytes
}

// soakResult is the soak's JSON report.
type soakResult struct {
	Workers   int     `json:"workers"`
	Restarts  int     `json:"restarts"`         // completed
	Aborted   int     `json:"rollouts_aborted"` // retried
	DurationS float64 `json:"duration_s"`
	Kills     struct {
		Between int `json:"between_restarts"`
		During  int `json:"during_restarts"`
		// Connections the killed workers held when they died.
		Connections int `json:"connections"`
	} `json:"kills"`
	Requests  int64            `json:"requests"`
	Failed    int64            `json:"failed"`
	Excused   int64            `json:"excused"`   // on a connection held by a worker the soak killed
	Unexcused int64            `json:"unexcused"` // every other failure: must be 0
	ByKind    map[string]int64 `json:"unexcused_by_kind"`
	// UnexcusedDetail lists the first unexcused failures.
	UnexcusedDetail []failureDetail  `json:"unexcused_detail,omitempty"`
	ExcusedByKind   map[string]int64 `json:"excused_by_kind"`
	Latency         struct {
		KeepAlive loadtest.LatencyStats `json:"keepalive"`
		Close     loadtest.LatencyStats `json:"close"`
	} `json:"latency_ms"`
	Master struct {
		PID       int          `json:"pid"`
		First     masterSample `json:"first"` // after the first restart
		Last      masterSample `json:"last"`  // after the last one
		MaxRSSKiB int64        `json:"max_rss_kib"`
		MinFDs    int          `json:"min_fds"`
		MaxFDs    int          `json:"max_fds"`
		MaxThread int          `json:"max_threads"`
		PeakRSSMB float64      `json:"peak_rss_mb"` // VmHWM at the end
		// RSS growth over the second half of the run: the mean of the
		// last tenth of the readings over the mean of the tenth that ends
		// at the middle (the first half is the heap's warm-up), and the
		// same as a slope, in KiB per 100 restarts.
		RSSGrowth float64 `json:"rss_growth"`
		RSSSlope  float64 `json:"rss_kib_per_100_restarts"`

		// Goroutines (go_goroutines) at every reading: the least and the
		// most, and the most over the first and over the last tenth of
		// the readings, which goroutinesFlat compares.
		MinGoroutines      int   `json:"min_goroutines"`
		MaxGoroutines      int   `json:"max_goroutines"`
		FirstMaxGoroutines int   `json:"first_tenth_max_goroutines"`
		LastMaxGoroutines  int   `json:"last_tenth_max_goroutines"`
		MinHeapAllocKiB    int64 `json:"min_heap_alloc_kib"`
		MaxHeapAllocKiB    int64 `json:"max_heap_alloc_kib"`
		MinHeapGoalKiB     int64 `json:"min_heap_goal_kib"`
		MaxHeapGoalKiB     int64 `json:"max_heap_goal_kib"`
		// The heap goal's growth over the second half, as for RSS: the
		// heap goal is set by each GC from the heap it found live, so it
		// is the live heap's trace (heap_alloc also holds the garbage
		// made since the last GC, up to as much again).
		HeapGoalGrowth float64 `json:"heap_goal_growth"`
		HeapGoalSlope  float64 `json:"heap_goal_kib_per_100_restarts"`
		// The heap goal's most over the second quarter of the readings
		// and over the last tenth, which heapFlat compares.
		BaseMaxHeapGoalKiB int64  `json:"second_quarter_max_heap_goal_kib"`
		LastMaxHeapGoalKiB int64  `json:"last_tenth_max_heap_goal_kib"`
		ExitStatus         string `json:"exit"`
	} `json:"master"`
	LeftBehind []int            `json:"left_behind,omitempty"` // worker pids alive after the master exited
	TCP        map[string]int64 `json:"tcp"`
	Verdict    map[string]bool  `json:"verdict"`

	series []masterSample // every reading, for -series
}

// soak is a running soak.
type soak struct {
	cfg     soakConfig
	m       *loadtest.Master
	port    int
	state   *loadtest.Cluster
	applied int // events applied to state
	kills   []*kill
	rng     *rand.Rand
	began   time.Time
	samples []masterSample
}

// runSoak starts the master, loads it, restarts it cfg.Restarts times with
// random kills, then stops it and reports. The error is for a soak that
// could not run to its end; failed requests are in the result.
func runSoak(cfg soakConfig, bin loadtest.Binaries) (*soakResult, string, error) {
	m, err := loadtest.StartMaster(bin.Dutchmaster, []string{
		"--workers", strconv.Itoa(cfg.Workers),
		"--listen", "http=tcp://127.0.0.1:0",
		// The default backoff: a killed worker counts as a failure of its
		// slot, and a rollout's replacement clears the count, so the
		// kills between rollouts never add up to a long wait.
		// For the goroutines and the heap, which /proc does not show.
		"--metrics", "127.0.0.1:0",
		"--env", "HELLO_BOOT_DELAY=" + cfg.Boot.String(),
		"--env", "HELLO_WORK=" + cfg.Work.String(),
		"--env", "HELLO_GRACE=" + cfg.Grace.String(),
		"--", bin.Hello,
	}, cfg.Patience)
	if err != nil {
		return nil, "", err
	}
	_, port, _ := net.SplitHostPort(m.Addr)
	s := &soak{cfg: cfg, m: m, state: loadtest.NewCluster(), rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5eed)), began: time.Now()}
	s.port, _ = strconv.Atoi(port)
	res, err := s.run()
	if serr := m.Stop(cfg.Patience); err == nil {
		err = serr
	}
	if err != nil {
		return nil, m.Log(), err
	}
	s.finish(res)
	return res, m.Log(), nil
}

func (s *soak) run() (*soakResult, error) {
	cfg := s.cfg
	res := &soakResult{Workers: cfg.Workers, ByKind: map[string]int64{}, ExcusedByKind: map[string]int64{}}
	res.Master.PID = s.m.PID()
	if err := s.waitSettled(); err != nil {
		return nil, err
	}
	tcpBefore, err := loadtest.ReadTCPCounters()
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(time.Duration(cfg.Restarts+2) * cfg.Patience)
	keep := loadtest.Start(loadtest.Spec{Addr: s.m.Addr, Clients: cfg.KeepAliveClients, Mode: loadtest.ModeKeepAlive,
		MaxPerConn: cfg.MaxPerConn, Timeout: cfg.Timeout, MaxRequests: cfg.MaxRequests, Deadline: deadline})
	defer keep.Finish()
	closing := loadtest.Start(loadtest.Spec{Addr: s.m.Addr, Clients: cfg.CloseClients, Mode: loadtest.ModeClose,
		Timeout: cfg.Timeout, MaxRequests: cfg.MaxRequests, Deadline: deadline})
	defer closing.Finish()

	for res.Restarts < cfg.Restarts {
		if s.rng.Float64() < cfg.KillBetween {
			if err := s.killOne(false); err != nil {
				return nil, err
			}
			if err := s.waitSettled(); err != nil {
				return nil, err
			}
		}
		complete, err := s.restart()
		if err != nil {
			return nil, err
		}
		if !complete {
			res.Aborted++
			continue
		}
		res.Restarts++
		if err := s.waitSettled(); err != nil {
			return nil, err
		}
		if err := s.sample(res.Restarts); err != nil {
			return nil, err
		}
		if res.Restarts%20 == 0 {
			cfg.note("%d restarts, %d kills, %d+%d requests, %d failed", res.Restarts, len(s.kills),
				keep.DoneCount(), closing.DoneCount(), keep.FailedCount()+closing.FailedCount())
		}
	}
	keep.Finish()
	closing.Finish()
	tcpAfter, err := loadtest.ReadTCPCounters()
	if err != nil {
		return nil, err
	}
	res.TCP = loadtest.TCPDelta(tcpBefore, tcpAfter)
	res.DurationS = loadtest.Round(time.Since(s.began).Seconds(), 1)
	if res.Master.PeakRSSMB, err = peakMB(s.m.PID()); err != nil {
		return nil, err
	}
	for _, l := range []*loadtest.Load{keep, closing} {
		var lat []float64
		for _, x := range l.Samples {
			lat = append(lat, float64(x.Latency)/1e6)
		}
		if l == keep {
			res.Latency.KeepAlive = loadtest.Stats(lat)
		} else {
			res.Latency.Close = loadtest.Stats(lat)
		}
		res.Requests += int64(len(l.Samples) + len(l.Failures))
		res.Failed += int64(len(l.Failures))
		for _, f := range l.Failures {
			if excusedBy(f, s.kills) != nil {
				res.Excused++
				res.ExcusedByKind[f.Kind]++
				continue
			}
			res.Unexcused++
			res.ByKind[f.Kind]++
			if len(res.UnexcusedDetail) < 20 {
				res.UnexcusedDetail = append(res.UnexcusedDetail, s.detail(f, l.Spec.Mode))
			}
		}
	}
	for _, k := range s.kills {
		if k.During {
			res.Kills.During++
		} else {
			res.Kills.Between++
		}
		res.Kills.Connections += k.Conns
	}
	return res, nil
}

// failureDetail places an unexcused failure among the kills and the
// master's events.
type failureDetail struct {
	loadtest.Failure
	Mode string `json:"mode"`
	// The nearest kill, in ms from the failure's start (negative: before).
	NearestKillMs float64 `json:"nearest_kill_ms"`
	KilledWorker  int     `json:"killed_worker,omitempty"`
	// The master's events from 50 ms before the request to its failure.
	Events []string `json:"events"`
}

func (s *soak) detail(f loadtest.Failure, mode string) failureDetail {
	d := failureDetail{Failure: f, Mode: mode}
	best := time.Duration(1<<63 - 1)
	for _, k := range s.kills {
		if dt := k.At.Sub(f.Start); dt.Abs() < best.Abs() {
			best, d.NearestKillMs, d.KilledWorker = dt, loadtest.Ms(dt), k.Worker
		}
	}
	for _, e := range s.m.Snapshot() {
		if e.Time.After(f.Start.Add(-50*time.Millisecond)) && !e.Time.After(f.End) {
			d.Events = append(d.Events, fmt.Sprintf("%s %s worker %d (pid %d) %s", e.Time.Format("15:04:05.000000"), e.Message, e.Num("worker"), e.Num("pid"), e.Str("reason")))
		}
	}
	return d
}

func peakMB(pid int) (float64, error) {
	b, err := loadtest.PeakRSS(pid)
	return loadtest.Round(float64(b)/(1<<20), 1), err
}

// restart sends SIGUSR2 and waits for the rollout's end, killing a worker
// on the way with probability KillDuring. It reports whether the rollout
// completed (it aborts if a replacement fails before it is ready).
func (s *soak) restart() (bool, error) {
	p := s.cfg.Patience
	from := s.m.Mark()
	if err := s.m.Signal(syscall.SIGUSR2); err != nil {
		return false, err
	}
	e, _, err := s.m.WaitFor(from, "restart requested", nil, p)
	if err != nil {
		return false, err
	}
	gen := e.Num("generation")
	if s.rng.Float64() < s.cfg.KillDuring {
		// Once a first replacement listens: old and new workers serve.
		if _, _, err := s.m.WaitFor(from, "worker listening", map[string]any{"generation": gen}, p); err != nil {
			return false, err
		}
		if err := s.killOne(true); err != nil {
			return false, err
		}
	}
	deadline := time.NewTimer(p)
	defer deadline.Stop()
	for next := from; ; {
		grew := s.m.Grew()
		events, n := s.m.Since(next)
		next = n
		for _, e := range events {
			switch {
			case e.Message == "restart complete" && e.Num("generation") == gen:
				return true, nil
			case e.Message == "rollout aborted":
				s.cfg.note("rollout %d aborted: %s", gen, e.Str("reason"))
				return false, nil
			}
		}
		select {
		case <-grew:
		case <-s.m.Done():
			return false, fmt.Errorf("master exited (%v) during restart %d", s.m.Err(), gen)
		case <-deadline.C:
			return false, fmt.Errorf("restart to generation %d not complete within %s", gen, p)
		}
	}
}

// sync applies the events logged since the last call.
func (s *soak) sync() {
	events, next := s.m.Since(s.applied)
	for _, e := range events {
		s.state.Apply(e)
	}
	s.applied = next
}

// waitSettled waits until the log shows a cluster at rest.
func (s *soak) waitSettled() error {
	deadline := time.NewTimer(s.cfg.Patience)
	defer deadline.Stop()
	for {
		grew := s.m.Grew()
		s.sync()
		if s.state.Settled() {
			return nil
		}
		select {
		case <-grew:
		case <-s.m.Done():
			return fmt.Errorf("master exited (%v) before its cluster settled", s.m.Err())
		case <-deadline.C:
			return fmt.Errorf("cluster not settled within %s: %d of %d workers, rollout %v", s.cfg.Patience, len(s.state.Live), s.state.Target, s.state.Rollout)
		}
	}
}

// killOne SIGKILLs a listening worker picked at random and waits for the
// master to log its exit.
func (s *soak) killOne(during bool) error {
	s.sync()
	ids := s.state.Listening()
	if len(ids) == 0 {
		return nil
	}
	id := ids[s.rng.IntN(len(ids))]
	from := s.m.Mark()
	k, err := killWorker(id, s.state.PIDs[id], s.port)
	if k != nil {
		k.During = during
		s.kills = append(s.kills, k)
	}
	if errors.Is(err, os.ErrProcessDone) {
		return nil // it exited meanwhile (drained)
	}
	if err != nil {
		return err
	}
	_, _, err = s.m.WaitFor(from, "worker exited", map[string]any{"worker": id}, s.cfg.Patience)
	return err
}

func (s *soak) sample(restart int) error {
	pid := s.m.PID()
	st, err := loadtest.ReadStatus(pid)
	if err != nil {
		return err
	}
	fds, err := loadtest.FDs(pid)
	if err != nil {
		return err
	}
	cpu, err := loadtest.CPU(pid)
	if err != nil {
		return err
	}
	// After /proc: the scrape's own connection is then closed and does
	// not count among the descriptors. Its serving goroutine does count
	// among the goroutines, the same one at every reading.
	gs, err := loadtest.ScrapeGo(s.m.MetricsAddr)
	if err != nil {
		return fmt.Errorf("reading the master's metrics after restart %d: %w", restart, err)
	}
	s.samples = append(s.samples, masterSample{
		Restart: restart, AtS: loadtest.Round(time.Since(s.began).Seconds(), 2),
		RSSKiB: st.RSS >> 10, FDs: fds, Threads: st.Threads, CPUS: loadtest.Round(cpu.Seconds(), 2),
		Goroutines: gs.Goroutines, HeapAllocKiB: gs.HeapAlloc >> 10, HeapGoalKiB: gs.HeapGoal >> 10,
	})
	return nil
}

// finish reads the master's exit and what it left, and judges the run.
func (s *soak) finish(res *soakResult) {
	res.Master.ExitStatus = "0"
	if err := s.m.Err(); err != nil {
		res.Master.ExitStatus = err.Error()
	}
	s.sync()
	res.LeftBehind = s.state.LeftBehind(time.Now().Add(s.cfg.Patience))
	res.series = s.samples
	judge(res, s.samples, s.cfg.Restarts)
}

// judge sums up the master's readings, one per restart, into res.Master
// and gives the verdicts.
func judge(res *soakResult, samples []masterSample, restarts int) {
	ms := &res.Master
	if n := len(samples); n > 0 {
		ms.First, ms.Last = samples[0], samples[n-1]
		ms.MinFDs = samples[0].FDs
		ms.MinGoroutines = samples[0].Goroutines
		ms.MinHeapAllocKiB, ms.MinHeapGoalKiB = samples[0].HeapAllocKiB, samples[0].HeapGoalKiB
		for _, x := range samples {
			ms.MaxRSSKiB = max(ms.MaxRSSKiB, x.RSSKiB)
			ms.MinFDs, ms.MaxFDs = min(ms.MinFDs, x.FDs), max(ms.MaxFDs, x.FDs)
			ms.MaxThread = max(ms.MaxThread, x.Threads)
			ms.MinGoroutines, ms.MaxGoroutines = min(ms.MinGoroutines, x.Goroutines), max(ms.MaxGoroutines, x.Goroutines)
			ms.MinHeapAllocKiB, ms.MaxHeapAllocKiB = min(ms.MinHeapAllocKiB, x.HeapAllocKiB), max(ms.MaxHeapAllocKiB, x.HeapAllocKiB)
			ms.MinHeapGoalKiB, ms.MaxHeapGoalKiB = min(ms.MinHeapGoalKiB, x.HeapGoalKiB), max(ms.MaxHeapGoalKiB, x.HeapGoalKiB)
		}
		ms.RSSGrowth, ms.RSSSlope = secondHalfGrowth(samples, func(x masterSample) int64 { return x.RSSKiB })
		ms.HeapGoalGrowth, ms.HeapGoalSlope = secondHalfGrowth(samples, func(x masterSample) int64 { return x.HeapGoalKiB })
		tenth := max(n/10, 1)
		for i := range tenth {
			ms.FirstMaxGoroutines = max(ms.FirstMaxGoroutines, samples[i].Goroutines)
			ms.LastMaxGoroutines = max(ms.LastMaxGoroutines, samples[n-1-i].Goroutines)
			ms.LastMaxHeapGoalKiB = max(ms.LastMaxHeapGoalKiB, samples[n-1-i].HeapGoalKiB)
		}
		for _, x := range samples[n/4 : max(n/2, n/4+1)] {
			ms.BaseMaxHeapGoalKiB = max(ms.BaseMaxHeapGoalKiB, x.HeapGoalKiB)
		}
	}
	res.Verdict = map[string]bool{
		"no_unexcused_failure": res.Unexcused == 0,
		"restarts_done":        res.Restarts == restarts,
		"master_exit_0":        res.Master.ExitStatus == "0",
		"nothing_left_behind":  len(res.LeftBehind) == 0,
		"fds_flat":             ms.MinFDs == ms.MaxFDs,
		// Flat: the second half adds at most 10%. The first half is
		// left out: the Go heap grows toward its working size there.
		"rss_flat":        ms.RSSGrowth <= 1.10,
		"heap_flat":       heapFlat(ms.BaseMaxHeapGoalKiB, ms.LastMaxHeapGoalKiB, ms.MinHeapGoalKiB),
		"goroutines_flat": goroutinesFlat(ms.FirstMaxGoroutines, ms.LastMaxGoroutines, ms.MinGoroutines),
	}
}

// goroutineSlack is how many goroutines the last tenth of the readings
// may have above the first tenth's most: goroutines of the master come
// and go on their own (an actor's mailbox runs on a goroutine only while
// it has messages) and one reading may catch one that the next does not:
// 17 to 20 over 200 restarts of 4 workers, 18 at most readings. A leak
// of one goroutine per restart or per kill passes the slack within a few
// tens of restarts.
const goroutineSlack = 5

// goroutinesFlat is the goroutine verdict: the most over the last tenth
// of the readings is at most goroutineSlack above the most over the first
// tenth. Both are taken with the cluster settled, so the same workers are
// alive and the first tenth needs no warm-up; comparing maxima, not
// single readings, keeps a goroutine caught in passing from deciding.
// No reading at all (least 0: the scrape always counts itself) fails.
func goroutinesFlat(firstMax, lastMax, least int) bool {
	return least > 0 && lastMax <= firstMax+goroutineSlack
}

// heapFlat is the heap verdict, on the heap goal: its most over the last
// tenth of the readings is at most 10% above its most over the second
// quarter (the first quarter is warm-up: the goal reaches its working
// size within the first few GCs). Not heap_alloc: by where a reading
// falls in the GC cycle, that lies anywhere from the live heap to about
// twice it (5.5 to 11.4 MiB in a run of 200 restarts). And not the RSS
// rule's mean of a tenth: the goal moves only at a GC, some 8 restarts
// apart, by up to 17% from one GC to the next (9.6 to 13.2 MiB in that
// run), so a tenth holds a few values and its mean is about as noisy as
// one of them. The most over a quarter is the top of that
// noise; a leak lifts the last tenth above it. No reading at all (least
// 0) fails.
func heapFlat(baseMax, lastMax, least int64) bool {
	return least > 0 && lastMax*100 <= baseMax*110
}

// secondHalfGrowth is the growth of a reading over the second half of the
// run: the mean of the last tenth of the readings over the mean of the
// tenth that ends at the middle (the first half is the heap's warm-up),
// and the same as a slope, in units per 100 restarts.
func secondHalfGrowth(samples []masterSample, get func(masterSample) int64) (ratio, per100 float64) {
	n := len(samples)
	tenth := max(n/10, 1)
	mid := max(n/2, tenth)
	var middle, last float64
	for i := range tenth {
		middle += float64(get(samples[mid-1-i]))
		last += float64(get(samples[n-1-i]))
	}
	if middle > 0 {
		ratio = loadtest.Round(last/middle, 3)
	}
	if span := samples[n-1-tenth/2].Restart - samples[mid-1-tenth/2].Restart; span > 0 {
		per100 = loadtest.Round((last-middle)/float64(tenth)/float64(span)*100, 0)
	}
	return ratio, per100
}

// ok reports whether every verdict holds.
func (res *soakResult) ok() bool {
	for _, v := range res.Verdict {
		if !v {
			return false
		}
	}
	return true
}

// printSoak prints the soak for a reader.
func printSoak(w io.Writer, res *soakResult) {
	ms := res.Master
	fmt.Fprintf(w, "soak: %d workers, %d rolling restarts (%d aborted and retried) in %.0f s; %d kills (%d between restarts, %d during), holding %d connections\n",
		res.Workers, res.Restarts, res.Aborted, res.DurationS, res.Kills.Between+res.Kills.During, res.Kills.Between, res.Kills.During, res.Kills.Connections)
	fmt.Fprintf(w, "requests: %d, failed %d: %d on connections of killed workers %v, %d other %v\n",
		res.Requests, res.Failed, res.Excused, res.ExcusedByKind, res.Unexcused, res.ByKind)
	fmt.Fprintf(w, "latency ms p50/p99/max: keep-alive %.1f/%.1f/%.1f, new connection %.1f/%.1f/%.1f\n",
		res.Latency.KeepAlive.P50, res.Latency.KeepAlive.P99, res.Latency.KeepAlive.Max,
		res.Latency.Close.P50, res.Latency.Close.P99, res.Latency.Close.Max)
	fmt.Fprintf(w, "master: RSS %d KiB after restart %d, %d KiB after restart %d (max %d; second half x%.3f, %+.0f KiB per 100 restarts; peak %.1f MB); fds %d, %d (min %d, max %d); threads %d, %d (max %d); CPU %.2f s; exit %s\n",
		ms.First.RSSKiB, ms.First.Restart, ms.Last.RSSKiB, ms.Last.Restart, ms.MaxRSSKiB, ms.RSSGrowth, ms.RSSSlope, ms.PeakRSSMB,
		ms.First.FDs, ms.Last.FDs, ms.MinFDs, ms.MaxFDs, ms.First.Threads, ms.Last.Threads, ms.MaxThread, ms.Last.CPUS, ms.ExitStatus)
	fmt.Fprintf(w, "master (its /metrics): goroutines %d, %d (min %d, max %d; most in the first tenth %d, in the last %d); heap alloc %d KiB, %d KiB (min %d, max %d); heap goal %d KiB, %d KiB (min %d, max %d; most in the second quarter %d, in the last tenth %d; second half x%.3f, %+.0f KiB per 100 restarts)\n",
		ms.First.Goroutines, ms.Last.Goroutines, ms.MinGoroutines, ms.MaxGoroutines, ms.FirstMaxGoroutines, ms.LastMaxGoroutines,
		ms.First.HeapAllocKiB, ms.Last.HeapAllocKiB, ms.MinHeapAllocKiB, ms.MaxHeapAllocKiB,
		ms.First.HeapGoalKiB, ms.Last.HeapGoalKiB, ms.MinHeapGoalKiB, ms.MaxHeapGoalKiB, ms.BaseMaxHeapGoalKiB, ms.LastMaxHeapGoalKiB, ms.HeapGoalGrowth, ms.HeapGoalSlope)
	for name, v := range res.Verdict {
		if !v {
			fmt.Fprintf(w, "missed: %s\n", name)
		}
	}
}
