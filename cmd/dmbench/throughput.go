package main

import (
	"fmt"
	"time"

	"github.com/dutchmaster/dutchmaster/cmd/internal/loadtest"
)

// throughputStats compares closed-loop requests per second through the
// master's shared socket with the same workers binding the port with
// SO_REUSEPORT. The workers' CPU per request and the largest share of
// requests one worker answered tell why the two differ.
type throughputStats struct {
	SegmentS     float64 `json:"segment_s"`
	SharedRPS    float64 `json:"shared_rps"`
	ReusePortRPS float64 `json:"reuseport_rps"`
	Ratio        float64 `json:"ratio"` // shared / reuseport
	// Workers' CPU (all of them, from schedstat) per successful request, µs.
	SharedCPUus    float64 `json:"shared_worker_cpu_us"`
	ReusePortCPUus float64 `json:"reuseport_worker_cpu_us"`
	// Largest fraction of the requests answered by one worker.
	SharedMaxShare    float64 `json:"shared_max_share"`
	ReusePortMaxShare float64 `json:"reuseport_max_share"`
	Failed            int64   `json:"failed"`
	// Each segment's requests per second, in the order run (the spread
	// between the two of one kind is the measurement's noise).
	SharedSegments    []float64 `json:"shared_segments_rps"`
	ReusePortSegments []float64 `json:"reuseport_segments_rps"`
}

// segment is one load of the comparison.
type segment struct {
	ok       int
	seconds  float64
	cpu      time.Duration
	maxShare float64
	failed   int
}

// compareThroughput loads the master's shared socket at addr, then the
// same number of workers binding their own SO_REUSEPORT sockets, in the
// order shared, reuseport, reuseport, shared, so that a drift of the
// machine during the run weighs on both alike.
func compareThroughput(cfg config, m *loadtest.Master, bin loadtest.Binaries) (*throughputStats, error) {
	rp, err := startReusePort(bin, cfg.Workers, cfg.Boot, cfg.Work, cfg.Patience)
	if err != nil {
		return nil, err
	}
	defer rp.stop(cfg.Patience)
	var shared, reuse []segment
	for _, toShared := range []bool{true, false, false, true} {
		addr, pids := rp.addr, rp.pids()
		if toShared {
			addr, pids = m.Addr, m.WorkerPIDs()
		}
		s, err := measureSegment(cfg, addr, pids)
		if err != nil {
			return nil, err
		}
		if toShared {
			shared = append(shared, s)
		} else {
			reuse = append(reuse, s)
		}
	}
	if err := rp.stop(cfg.Patience); err != nil {
		return nil, err
	}
	st := &throughputStats{SegmentS: cfg.Throughput.Seconds()}
	for _, s := range shared {
		st.SharedSegments = append(st.SharedSegments, round(float64(s.ok)/s.seconds, 0))
	}
	for _, s := range reuse {
		st.ReusePortSegments = append(st.ReusePortSegments, round(float64(s.ok)/s.seconds, 0))
	}
	var sharedOK, reuseOK int
	sharedOK, st.SharedRPS, st.SharedCPUus, st.SharedMaxShare, st.Failed = sum(shared)
	reuseOK, st.ReusePortRPS, st.ReusePortCPUus, st.ReusePortMaxShare, _ = sum(reuse)
	for _, s := range reuse {
		st.Failed += int64(s.failed)
	}
	if sharedOK == 0 || reuseOK == 0 {
		return nil, fmt.Errorf("throughput: %d requests succeeded through the shared socket, %d with SO_REUSEPORT", sharedOK, reuseOK)
	}
	st.Ratio = st.SharedRPS / st.ReusePortRPS
	return st, nil
}

// measureSegment runs one closed-loop load of cfg.Throughput against addr
// and reads the CPU the worker processes pids used meanwhile.
func measureSegment(cfg config, addr string, pids []int) (segment, error) {
	before, err := sumCPU(pids)
	if err != nil {
		return segment{}, err
	}
	l := loadtest.Start(loadtest.Spec{
		Addr: addr, Clients: cfg.Clients, Mode: cfg.Mode, Timeout: cfg.Timeout,
		MaxRequests: cfg.MaxRequests, Deadline: time.Now().Add(cfg.Throughput),
	})
	l.Wait()
	after, err := sumCPU(pids)
	if err != nil {
		return segment{}, err
	}
	s := segment{ok: len(l.Samples), seconds: l.Ended.Sub(l.Began).Seconds(), cpu: after - before, failed: len(l.Failures)}
	byPID := map[int]int{}
	for _, x := range l.Samples {
		byPID[x.PID]++
	}
	for _, n := range byPID {
		s.maxShare = max(s.maxShare, float64(n)/float64(max(s.ok, 1)))
	}
	return s, nil
}

// sum adds up segments: requests, requests per second, worker CPU per
// request in µs, the mean of the largest shares, and failures.
func sum(segs []segment) (ok int, rps, cpuUs, maxShare float64, failed int64) {
	var seconds float64
	var cpu time.Duration
	for _, s := range segs {
		ok += s.ok
		seconds += s.seconds
		cpu += s.cpu
		maxShare += s.maxShare / float64(len(segs))
		failed += int64(s.failed)
	}
	if ok > 0 {
		cpuUs = float64(cpu.Microseconds()) / float64(ok)
	}
	return ok, float64(ok) / seconds, round(cpuUs, 1), round(maxShare, 3), failed
}

// sumCPU adds up the CPU time of processes, from schedstat (nanoseconds:
// clock ticks are too coarse for a few seconds of a few workers).
func sumCPU(pids []int) (time.Duration, error) {
	var total time.Duration
	for _, pid := range pids {
		c, err := loadtest.RunTime(pid)
		if err != nil {
			return 0, fmt.Errorf("worker pid %d: %w", pid, err)
		}
		total += c
	}
	return total, nil
}
