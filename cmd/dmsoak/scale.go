package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/dutchmaster/dutchmaster/cmd/internal/loadtest"
)

// scaleConfig is the scale run: for each worker count, start, one rolling
// restart, stop.
type scaleConfig struct {
	Counts   []int
	Repeat   int           // runs of each count, interleaved; the report takes the medians
	Boot     time.Duration // HELLO_BOOT_DELAY
	MaxSurge int
	Patience time.Duration
	Log      io.Writer
}

func (c scaleConfig) note(format string, args ...any) {
	if c.Log != nil {
		fmt.Fprintf(c.Log, "dmsoak: "+format+"\n", args...)
	}
}

// scaleRow is one worker count. Phases are timed from the master's log
// (start: "cluster starting" to "cluster ready"; restart: "restart
// requested" to "restart complete"), the stop from SIGTERM to the
// master's exit. CPU is the master's own (schedstat, all its threads),
// over each phase.
type scaleRow struct {
	Workers int `json:"workers"`
	// Balance is the master's listener mode (its "balance" line): kernel
	// holds a socket per worker's slot besides the worker's descriptors.
	Balance     string  `json:"balance"`
	StartS      float64 `json:"start_s"`
	RestartS    float64 `json:"restart_s"`
	StopS       float64 `json:"stop_s"`
	StartCPUS   float64 `json:"start_cpu_s"`
	RestartCPUS float64 `json:"restart_cpu_s"`
	// The master settled after the start: VmRSS, threads, descriptors,
	// and goroutines (go_goroutines, from its /metrics; the one serving
	// the scrape among them).
	RSSMB      float64 `json:"rss_mb"`
	Threads    int     `json:"threads"`
	FDs        int     `json:"fds"`
	Goroutines int     `json:"goroutines"`
	// After the restart: VmRSS, VmHWM, threads, goroutines.
	RestartRSSMB      float64 `json:"restart_rss_mb"`
	PeakRSSMB         float64 `json:"peak_rss_mb"`
	RestartThreads    int     `json:"restart_threads"`
	RestartGoroutines int     `json:"restart_goroutines"`
	ExitStatus        string  `json:"exit"`
	LeftBehind        int     `json:"left_behind"`
}

// runScale runs every count Repeat times, the counts in turn (64, 128,
// 256, 64, ...: a drift of a shared machine weighs on all alike), and
// returns every run and, per count, the medians.
func runScale(cfg scaleConfig, bin loadtest.Binaries) (runs, medians []scaleRow, err error) {
	byCount := map[int][]scaleRow{}
	for i := range max(cfg.Repeat, 1) {
		for _, n := range cfg.Counts {
			cfg.note("%d workers, run %d: start", n, i+1)
			row, err := scaleOne(cfg, bin, n)
			if err != nil {
				return runs, nil, fmt.Errorf("%d workers: %w", n, err)
			}
			runs = append(runs, row)
			byCount[n] = append(byCount[n], row)
		}
	}
	for _, n := range cfg.Counts {
		medians = append(medians, median(byCount[n]))
	}
	return runs, medians, nil
}

// median is the row of per-field medians (the exit status and what was
// left behind: the worst).
func median(rows []scaleRow) scaleRow {
	m := scaleRow{Workers: rows[0].Workers, Balance: rows[0].Balance, ExitStatus: "0"}
	f := func(get func(scaleRow) float64) float64 {
		var v []float64
		for _, r := range rows {
			v = append(v, get(r))
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	m.StartS = f(func(r scaleRow) float64 { return r.StartS })
	m.RestartS = f(func(r scaleRow) float64 { return r.RestartS })
	m.StopS = f(func(r scaleRow) float64 { return r.StopS })
	m.StartCPUS = f(func(r scaleRow) float64 { return r.StartCPUS })
	m.RestartCPUS = f(func(r scaleRow) float64 { return r.RestartCPUS })
	m.RSSMB = f(func(r scaleRow) float64 { return r.RSSMB })
	m.RestartRSSMB = f(func(r scaleRow) float64 { return r.RestartRSSMB })
	m.PeakRSSMB = f(func(r scaleRow) float64 { return r.PeakRSSMB })
	m.Threads = int(f(func(r scaleRow) float64 { return float64(r.Threads) }))
	m.RestartThreads = int(f(func(r scaleRow) float64 { return float64(r.RestartThreads) }))
	m.FDs = int(f(func(r scaleRow) float64 { return float64(r.FDs) }))
	m.Goroutines = int(f(func(r scaleRow) float64 { return float64(r.Goroutines) }))
	m.RestartGoroutines = int(f(func(r scaleRow) float64 { return float64(r.RestartGoroutines) }))
	for _, r := range rows {
		if r.ExitStatus != "0" {
			m.ExitStatus = r.ExitStatus
		}
		m.LeftBehind = max(m.LeftBehind, r.LeftBehind)
	}
	return m
}

func scaleOne(cfg scaleConfig, bin loadtest.Binaries, n int) (scaleRow, error) {
	row := scaleRow{Workers: n}
	p := cfg.Patience
	m, err := loadtest.StartMaster(bin.Dutchmaster, []string{
		"--workers", strconv.Itoa(n), "--max-surge", strconv.Itoa(cfg.MaxSurge),
		"--listen", "http=tcp://127.0.0.1:0",
		"--metrics", "127.0.0.1:0", // for the goroutines
		"--env", "HELLO_BOOT_DELAY=" + cfg.Boot.String(),
		"--", bin.Hello,
	}, p)
	if err != nil {
		return row, err
	}
	defer m.Stop(p)
	pid := m.PID()
	startCPU, err := loadtest.RunTime(pid)
	if err != nil {
		return row, err
	}
	starting, _, err := m.WaitFor(0, "cluster starting", nil, p)
	if err != nil {
		return row, err
	}
	ready, next, err := m.WaitFor(0, "cluster ready", nil, p)
	if err != nil {
		return row, err
	}
	for _, e := range m.Snapshot() {
		if b := e.Str("balance"); b != "" {
			row.Balance = b
		}
	}
	row.StartS = loadtest.Round(ready.Time.Sub(starting.Time).Seconds(), 3)
	row.StartCPUS = loadtest.Round(startCPU.Seconds(), 3)
	st, err := loadtest.ReadStatus(pid)
	if err != nil {
		return row, err
	}
	row.RSSMB, row.Threads = mb(st.RSS), st.Threads
	if row.FDs, err = loadtest.FDs(pid); err != nil {
		return row, err
	}
	// After the descriptors, so that the scrape's connection is not
	// among them.
	gs, err := loadtest.ScrapeGo(m.MetricsAddr)
	if err != nil {
		return row, err
	}
	row.Goroutines = gs.Goroutines

	cfg.note("%d workers: rolling restart", n)
	before, err := loadtest.RunTime(pid)
	if err != nil {
		return row, err
	}
	if err := m.Signal(syscall.SIGUSR2); err != nil {
		return row, err
	}
	req, next, err := m.WaitFor(next, "restart requested", nil, p)
	if err != nil {
		return row, err
	}
	done, _, err := m.WaitFor(next, "restart complete", map[string]any{"generation": req.Num("generation")}, p)
	if err != nil {
		return row, err
	}
	after, err := loadtest.RunTime(pid)
	if err != nil {
		return row, err
	}
	row.RestartS = loadtest.Round(done.Time.Sub(req.Time).Seconds(), 3)
	row.RestartCPUS = loadtest.Round((after - before).Seconds(), 3)
	if st, err = loadtest.ReadStatus(pid); err != nil {
		return row, err
	}
	row.RestartRSSMB, row.PeakRSSMB, row.RestartThreads = mb(st.RSS), mb(st.PeakRSS), st.Threads
	if gs, err = loadtest.ScrapeGo(m.MetricsAddr); err != nil {
		return row, err
	}
	row.RestartGoroutines = gs.Goroutines

	cfg.note("%d workers: stop", n)
	workers := loadtest.NewCluster()
	for _, e := range m.Snapshot() {
		workers.Apply(e)
	}
	t0 := time.Now()
	if err := m.Stop(p); err != nil {
		return row, err
	}
	row.StopS = loadtest.Round(time.Since(t0).Seconds(), 3)
	row.ExitStatus = "0"
	if err := m.Err(); err != nil {
		row.ExitStatus = err.Error()
	}
	row.LeftBehind = len(workers.LeftBehind(time.Now().Add(p)))
	return row, nil
}

func mb(b int64) float64 { return loadtest.Round(float64(b)/(1<<20), 1) }

// printScale prints the rows (the medians), per worker, and the marginal
// cost of the workers added from one count to the next.
func printScale(w io.Writer, rows []scaleRow) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workers\tstart s\trestart s\tstop s\tstart ms/worker\trestart ms/worker\tstop ms/worker\tstart CPU ms/worker\trestart CPU ms/worker\tRSS MB\tRSS after restart MB\tpeak RSS MB\tthreads\tthreads after restart\tfds\tgoroutines\tgoroutines after restart\texit\tleft\t")
	for _, r := range rows {
		n := float64(r.Workers)
		fmt.Fprintf(tw, "%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.1f\t%.1f\t%.1f\t%d\t%d\t%d\t%d\t%d\t%s\t%d\t\n",
			r.Workers, r.StartS, r.RestartS, r.StopS,
			1000*r.StartS/n, 1000*r.RestartS/n, 1000*r.StopS/n, 1000*r.StartCPUS/n, 1000*r.RestartCPUS/n,
			r.RSSMB, r.RestartRSSMB, r.PeakRSSMB, r.Threads, r.RestartThreads, r.FDs, r.Goroutines, r.RestartGoroutines, r.ExitStatus, r.LeftBehind)
	}
	tw.Flush()
	if len(rows) < 2 {
		return
	}
	fmt.Fprintln(w, "marginal cost of one more worker:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "from\tto\tstart ms\trestart ms\tstop ms\tstart CPU ms\trestart CPU ms\tRSS KiB\tthreads\tfds\tgoroutines\t")
	for i := 1; i < len(rows); i++ {
		a, b := rows[i-1], rows[i]
		d := float64(b.Workers - a.Workers)
		fmt.Fprintf(tw, "%d\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.0f\t%.2f\t%.2f\t%.2f\t\n", a.Workers, b.Workers,
			1000*(b.StartS-a.StartS)/d, 1000*(b.RestartS-a.RestartS)/d, 1000*(b.StopS-a.StopS)/d,
			1000*(b.StartCPUS-a.StartCPUS)/d, 1000*(b.RestartCPUS-a.RestartCPUS)/d,
			1024*(b.RSSMB-a.RSSMB)/d, float64(b.Threads-a.Threads)/d, float64(b.FDs-a.FDs)/d, float64(b.Goroutines-a.Goroutines)/d)
	}
	tw.Flush()
}
