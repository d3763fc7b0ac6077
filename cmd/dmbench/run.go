package main

import (
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/dutchmaster/dutchmaster/cmd/internal/loadtest"
)

// config is one run: one worker count, one connection mode.
type config struct {
	Workers  int
	Mode     string // loadtest.ModeClose or loadtest.ModeKeepAlive
	Clients  int
	Restarts int
	Balance  string        // the master's --balance; "": its default
	Boot     time.Duration // HELLO_BOOT_DELAY
	Work     time.Duration // HELLO_WORK

	// Duration > 0: the load lasts at least Duration and the restarts are
	// spread evenly over it (each one waits for the previous to complete).
	// Duration = 0: the run is paced by counts only, as the test needs:
	// each restart after Between more finished requests, and Between more
	// after the last one.
	Duration time.Duration
	Between  int64

	Warmup      time.Duration // requests started this early are left out of steady state
	MaxRequests int64         // bound of the load's request count
	Timeout     time.Duration // per request
	Patience    time.Duration // bound of every wait on a process or log event

	Idle       time.Duration // quiet period for the master's idle CPU; 0: not measured
	Throughput time.Duration // length of each shared/SO_REUSEPORT segment; 0: not measured

	Log io.Writer // progress notes; nil: none
}

func (c config) note(format string, args ...any) {
	if c.Log != nil {
		fmt.Fprintf(c.Log, "dmbench: "+format+"\n", args...)
	}
}

// restartSpan is where one restart's events lie in the master's log.
type restartSpan struct {
	from, to   int // event indexes: from before the signal, to after "restart complete"
	generation int
	sent       time.Time
}

// raw is what a run collected, before analysis.
type raw struct {
	cfg        config
	bin        loadtest.Binaries
	events     []loadtest.Event
	log        string
	spans      []restartSpan
	load       *loadtest.Load
	cpuLoad    time.Duration // master CPU at the end of the restart load
	cpuTotal   time.Duration
	peakRSS    int64
	idleCPU    time.Duration // utime+stime over the quiet period
	idleRun    time.Duration // the same from schedstat, in ns
	tput       *throughputStats
	masterPID  int
	masterAddr string
	tcp        map[string]int64 // kernel TCP counters' change over the restart load
	spread     *spreadStats     // 16 connections opened together, before the load
}

// run performs one run: start the master, load it while restarting it,
// then compare throughput with SO_REUSEPORT workers and measure the idle
// master. Every wait is bounded by cfg.Patience.
func run(cfg config, bin loadtest.Binaries) (*result, string, error) {
	cfg.note("%d workers, %s: starting the master", cfg.Workers, cfg.Mode)
	m, err := startMaster(bin, cfg.Workers, cfg.Balance, cfg.Boot, cfg.Work, cfg.Patience)
	if err != nil {
		return nil, "", err
	}
	r := &raw{cfg: cfg, bin: bin, masterPID: m.PID(), masterAddr: m.Addr}
	err = r.collect(m)
	if serr := m.Stop(cfg.Patience); err == nil {
		err = serr
	}
	r.events, r.log = m.Snapshot(), m.Log()
	if err != nil {
		return nil, r.log, err
	}
	return r.analyze(), r.log, nil
}

func (r *raw) collect(m *loadtest.Master) error {
	cfg := r.cfg
	bound := cfg.Duration + time.Duration(cfg.Restarts+2)*cfg.Patience
	spread, err := measureSpread(m.Addr, cfg.Workers, cfg.Timeout)
	if err != nil {
		return err
	}
	r.spread = spread
	tcpBefore, err := loadtest.ReadTCPCounters()
	if err != nil {
		return err
	}
	l := loadtest.Start(loadtest.Spec{
		Addr: m.Addr, Clients: cfg.Clients, Mode: cfg.Mode, Timeout: cfg.Timeout,
		MaxRequests: cfg.MaxRequests, Deadline: time.Now().Add(bound),
	})
	r.load = l
	defer l.Finish()
	t0 := l.Began
	cfg.note("%d workers, %s: load from %d clients, %d restarts", cfg.Workers, cfg.Mode, cfg.Clients, cfg.Restarts)
	for i := 1; i <= cfg.Restarts; i++ {
		if err := r.pace(l, t0.Add(time.Duration(i)*cfg.Duration/time.Duration(cfg.Restarts+1))); err != nil {
			return err
		}
		span := restartSpan{from: m.Mark(), sent: time.Now()}
		if err := m.Signal(syscall.SIGUSR2); err != nil {
			return err
		}
		e, _, err := m.WaitFor(span.from, "restart requested", nil, cfg.Patience)
		if err != nil {
			return err
		}
		span.generation = e.Num("generation")
		if _, span.to, err = m.WaitFor(span.from, "restart complete", map[string]any{"generation": span.generation}, cfg.Patience); err != nil {
			return err
		}
		r.spans = append(r.spans, span)
		cfg.note("%d workers, %s: restart %d complete", cfg.Workers, cfg.Mode, i)
	}
	if err := r.pace(l, t0.Add(cfg.Duration)); err != nil {
		return err
	}
	l.Finish()
	tcpAfter, err := loadtest.ReadTCPCounters()
	if err != nil {
		return err
	}
	r.tcp = loadtest.TCPDelta(tcpBefore, tcpAfter)
	if r.cpuLoad, err = loadtest.CPU(m.PID()); err != nil {
		return err
	}

	if cfg.Throughput > 0 {
		cfg.note("%d workers, %s: throughput, the master's listener vs SO_REUSEPORT", cfg.Workers, cfg.Mode)
		if r.tput, err = compareThroughput(cfg, m, r.bin); err != nil {
			return err
		}
	}
	if cfg.Idle > 0 {
		cfg.note("%d workers, %s: idle master for %s", cfg.Workers, cfg.Mode, cfg.Idle)
		before, err := loadtest.CPU(m.PID())
		if err != nil {
			return err
		}
		runBefore, err := loadtest.RunTime(m.PID())
		if err != nil {
			return err
		}
		time.Sleep(cfg.Idle)
		after, err := loadtest.CPU(m.PID())
		if err != nil {
			return err
		}
		runAfter, err := loadtest.RunTime(m.PID())
		if err != nil {
			return err
		}
		r.idleCPU, r.idleRun = after-before, runAfter-runBefore
	}
	if r.cpuTotal, err = loadtest.CPU(m.PID()); err != nil {
		return err
	}
	r.peakRSS, err = loadtest.PeakRSS(m.PID())
	return err
}

// pace waits for the next step of the run: until `at` when the run is
// timed, else until cfg.Between more requests have finished.
func (r *raw) pace(l *loadtest.Load, at time.Time) error {
	if r.cfg.Duration > 0 {
		time.Sleep(time.Until(at))
		return nil
	}
	want := l.DoneCount() + r.cfg.Between
	if !l.WaitDone(want, r.cfg.Patience) {
		return fmt.Errorf("load stalled: %d of %d requests finished within %s", l.DoneCount(), want, r.cfg.Patience)
	}
	return nil
}
