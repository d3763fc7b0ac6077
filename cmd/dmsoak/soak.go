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

// masterSample is the master read from /proc once the cluster has settled
// after a restart.
type masterSample struct {
	Restart int     `json:"restart"`
	AtS     float64 `json:"at_s"`
	RSSKiB  int64   `json:"rss_kib"`
	FDs     int     `json:"fds"`
	Threads int     `json:"threads"`
	CPUS    float64 `json:"cpu_s"`
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
		RSSGrowth  float64 `json:"rss_growth"`
		RSSSlope   float64 `json:"rss_kib_per_100_restarts"`
		ExitStatus string  `json:"exit"`
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
		// A killed worker counts as a failure of its slot, and only a
		// worker that stays up --backoff-reset clears them: with a
		// rollout every few hundred ms none does, so a slot killed a few
		// times would wait up to --backoff-max (30 s) before its next
		// fork. A short maximum keeps the soak about restarts.
		"--backoff", "50ms", "--backoff-max", "100ms", "--backoff-reset", "1s",
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
	s.samples = append(s.samples, masterSample{
		Restart: restart, AtS: loadtest.Round(time.Since(s.began).Seconds(), 2),
		RSSKiB: st.RSS >> 10, FDs: fds, Threads: st.Threads, CPUS: loadtest.Round(cpu.Seconds(), 2),
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
	deadline := time.Now().Add(s.cfg.Patience)
	for _, pid := range s.state.AllPIDs() {
		for loadtest.Alive(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if loadtest.Alive(pid) {
			res.LeftBehind = append(res.LeftBehind, pid)
		}
	}
	res.series = s.samples
	if n := len(s.samples); n > 0 {
		ms := &res.Master
		ms.First, ms.Last = s.samples[0], s.samples[n-1]
		ms.MinFDs = s.samples[0].FDs
		for _, x := range s.samples {
			ms.MaxRSSKiB = max(ms.MaxRSSKiB, x.RSSKiB)
			ms.MinFDs, ms.MaxFDs = min(ms.MinFDs, x.FDs), max(ms.MaxFDs, x.FDs)
			ms.MaxThread = max(ms.MaxThread, x.Threads)
		}
		tenth := max(n/10, 1)
		mid := max(n/2, tenth)
		var middle, last float64
		for i := range tenth {
			middle += float64(s.samples[mid-1-i].RSSKiB)
			last += float64(s.samples[n-1-i].RSSKiB)
		}
		ms.RSSGrowth = loadtest.Round(last/middle, 3)
		if span := s.samples[n-1-tenth/2].Restart - s.samples[mid-1-tenth/2].Restart; span > 0 {
			ms.RSSSlope = loadtest.Round((last-middle)/float64(tenth)/float64(span)*100, 0)
		}
	}
	res.Verdict = map[string]bool{
		"no_unexcused_failure": res.Unexcused == 0,
		"restarts_done":        res.Restarts == s.cfg.Restarts,
		"master_exit_0":        res.Master.ExitStatus == "0",
		"nothing_left_behind":  len(res.LeftBehind) == 0,
		"fds_flat":             res.Master.MinFDs == res.Master.MaxFDs,
		// Flat: the second half adds at most 10%. The first half is
		// left out: the Go heap grows toward its working size there.
		"rss_flat": res.Master.RSSGrowth <= 1.10,
	}
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
	for name, v := range res.Verdict {
		if !v {
			fmt.Fprintf(w, "missed: %s\n", name)
		}
	}
}
