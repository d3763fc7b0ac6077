package main

import (
	"bufio"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/dutchmaster/dutchmaster/cmd/internal/loadtest"
)

// `dmbench -node` runs one small plain-HTTP Node.js app (nodeapp/app.js)
// under three primaries side by side: dutchmaster, a 20-line node:cluster
// primary with dutch-master's rolling restart (nodeapp/primary.js), and
// PM2 in cluster mode when npm can install it into a temporary directory.
// Each system runs each worker count once; one run measures, in order:
//
//   - the failed requests, by kind, of a closed-loop load in each
//     connection mode over cfg.Restarts rolling restarts (the next one
//     once every old worker has exited);
//   - each restart's duration: from the trigger (SIGUSR2; `pm2 reload`
//     for PM2, whose CLI start is included) to the last old worker's
//     drain (its server starts closing), beside the ideal, workers × boot;
//   - how long each old worker lives after its drain;
//   - how 16 keep-alive connections opened together spread over the
//     workers;
//   - throughput of a keep-alive load without restarts;
//   - the primary's peak RSS (VmHWM) and CPU over the whole run (PM2: its
//     daemon).
//
// The app writes its listening, drain and exit to an events file, so
// the measures are the same whatever the primary logs.

// nodeKillTimeout is how long dutchmaster and PM2 let an old worker
// drain before they kill it: PM2's default (dutchmaster's is 30 s). A
// plain Node.js server keeps serving a busy keep-alive connection after
// its close(), so in keep-alive mode an old worker may live this long;
// and dutchmaster, which never runs more than 2 × workers + max-surge
// processes, may wait for such workers before it forks more. The
// node:cluster primary, like dutch-master, kills no one: its old workers
// live as long as their clients keep the connections.
const nodeKillTimeout = 1600 * time.Millisecond

//go:embed nodeapp/app.js nodeapp/primary.js
var nodeApp embed.FS

// nodeSystem starts the app under one primary.
type nodeSystem struct {
	name  string
	start func(r *nodeRun) (*nodeInstance, error)
}

// nodeInstance is a running primary.
type nodeInstance struct {
	pid     int          // the primary (PM2: its daemon)
	restart func() error // starts a rolling restart
	stop    func() error // stops gracefully, bounded; kills what is left
}

// nodeRun is one system at one worker count.
type nodeRun struct {
	cfg     config
	dir     string // this run's own directory
	app     string // the app's directory
	addr    string
	events  *nodeEvents
	dmBin   string
	pm2Bin  string
	workers int
}

// nodeResult is what a run measured.
type nodeResult struct {
	System   string                      `json:"system"`
	Workers  int                         `json:"workers"`
	Requests map[string]int64            `json:"requests"` // by connection mode
	Failed   map[string]map[string]int64 `json:"failed"`   // by mode, then kind
	Restarts int                         `json:"restarts"` // completed, both modes
	// Restart durations in seconds, median and max, and the ideal.
	RestartP50 float64 `json:"restart_p50_s"`
	RestartMax float64 `json:"restart_max_s"`
	IdealS     float64 `json:"ideal_s"`
	// Old workers' lifetime after their drain, ms, median and max.
	AfterDrainP50 float64 `json:"after_drain_p50_ms"`
	AfterDrainMax float64 `json:"after_drain_max_ms"`
	Share         []int   `json:"share"` // connections per worker, most first
	RPS           float64 `json:"rps"`
	PeakRSSMB     float64 `json:"peak_rss_mb"`
	CPUS          float64 `json:"cpu_s"`
}

// nodeBench runs every system at every worker count and prints one JSON
// line per run, then the table.
func nodeBench(cfg config, counts []int, dmBin, pm2 string, stdout, stderr io.Writer) int {
	if _, err := exec.LookPath("node"); err != nil {
		fmt.Fprintln(stderr, "dmbench: -node needs node on PATH")
		return 1
	}
	tmp, err := os.MkdirTemp("", "dmbench-node-")
	if err != nil {
		fmt.Fprintf(stderr, "dmbench: %v\n", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	app := filepath.Join(tmp, "app")
	if err := writeNodeApp(app); err != nil {
		fmt.Fprintf(stderr, "dmbench: %v\n", err)
		return 1
	}
	if dmBin == "" {
		bin, err := loadtest.Build(filepath.Join(tmp, "bin"))
		if err != nil {
			fmt.Fprintf(stderr, "dmbench: %v\n", err)
			return 1
		}
		dmBin = bin.Dutchmaster
	}
	systems := []nodeSystem{{"dutchmaster", startDutchmaster}, {"node:cluster", startNodePrimary}}
	if pm2 == "" {
		cfg.note("node: installing pm2@latest with npm")
		pm2, err = installPM2(filepath.Join(tmp, "pm2"), cfg.Patience*3)
	}
	if err != nil {
		fmt.Fprintf(stderr, "dmbench: PM2 skipped: %v\n", err)
	} else {
		systems = append(systems, nodeSystem{"pm2", startPM2})
	}

	status := 0
	var results []*nodeResult
	enc := json.NewEncoder(stdout)
	for _, n := range counts {
		for _, sys := range systems {
			r := &nodeRun{cfg: cfg, dir: filepath.Join(tmp, fmt.Sprintf("%s-%d", strings.ReplaceAll(sys.name, ":", "-"), n)),
				app: app, dmBin: dmBin, pm2Bin: pm2, workers: n}
			res, err := r.run(sys)
			if err != nil {
				fmt.Fprintf(stderr, "dmbench: %s, %d workers: %v\n", sys.name, n, err)
				status = 1
				continue
			}
			enc.Encode(res)
			results = append(results, res)
		}
	}
	printNodeTable(stdout, results)
	return status
}

func writeNodeApp(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, name := range []string{"app.js", "primary.js"} {
		b, err := nodeApp.ReadFile("nodeapp/" + name)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// installPM2 installs the latest PM2 from npm into dir, bounded in time,
// and returns its CLI.
func installPM2(dir string, bound time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "install", "pm2@latest", "--prefix", dir, "--no-audit", "--no-fund", "--loglevel=error")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm install pm2@latest: %v: %s", err, strings.TrimSpace(string(out)))
	}
	bin := filepath.Join(dir, "node_modules", ".bin", "pm2")
	if _, err := os.Stat(bin); err != nil {
		return "", err
	}
	return bin, nil
}

func (r *nodeRun) env() []string {
	return []string{
		"PORT=" + portOf(r.addr),
		"BENCH_EVENTS=" + r.events.path,
		"BENCH_BOOT_MS=" + strconv.FormatInt(r.cfg.Boot.Milliseconds(), 10),
		"BENCH_WORK_MS=" + strconv.FormatInt(r.cfg.Work.Milliseconds(), 10),
		"WORKERS=" + strconv.Itoa(r.workers),
	}
}

func portOf(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }

// run starts the system, measures, and stops it; every process it
// started is gone when it returns.
func (r *nodeRun) run(sys nodeSystem) (res *nodeResult, err error) {
	cfg := r.cfg
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return nil, err
	}
	r.events = &nodeEvents{path: filepath.Join(r.dir, "events"), pids: map[int]*nodeWorker{}}
	if err := os.WriteFile(r.events.path, nil, 0o644); err != nil {
		return nil, err
	}
	if r.addr, err = freePort(); err != nil {
		return nil, err
	}
	cfg.note("node: %s, %d workers: starting", sys.name, r.workers)
	inst, err := sys.start(r)
	if err != nil {
		return nil, err
	}
	defer func() {
		if serr := inst.stop(); err == nil && serr != nil {
			err = fmt.Errorf("stop: %w", serr)
		}
		r.killLeftovers()
	}()
	if err := r.waitListening(nil); err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	res = &nodeResult{System: sys.name, Workers: r.workers, Requests: map[string]int64{}, Failed: map[string]map[string]int64{},
		IdealS: loadtest.Round(float64(r.workers)*cfg.Boot.Seconds(), 3)}
	var durations, afterDrain []float64
	counted := map[int]bool{}
	for _, mode := range []string{loadtest.ModeClose, loadtest.ModeKeepAlive} {
		l := loadtest.Start(loadtest.Spec{Addr: r.addr, Clients: cfg.Clients, Mode: mode, Timeout: cfg.Timeout,
			MaxRequests: cfg.MaxRequests, Deadline: time.Now().Add(time.Duration(cfg.Restarts+2) * cfg.Patience)})
		time.Sleep(300 * time.Millisecond)
		for i := 1; i <= cfg.Restarts; i++ {
			d, err := r.rollingRestart(inst)
			if err != nil {
				l.Finish()
				return nil, fmt.Errorf("%s, restart %d: %w", mode, i, err)
			}
			durations = append(durations, d.Seconds())
			res.Restarts++
			cfg.note("node: %s, %d workers, %s: restart %d in %.2f s", sys.name, r.workers, mode, i, d.Seconds())
			time.Sleep(200 * time.Millisecond)
		}
		l.Finish()
		afterDrain = append(afterDrain, r.afterDrain(counted)...)
		res.Requests[mode] = int64(len(l.Samples) + len(l.Failures))
		res.Failed[mode] = map[string]int64{}
		for k, v := range l.ByKind {
			res.Failed[mode][k] = v
		}
	}
	res.RestartP50, res.RestartMax = median(durations), slices.Max(append(durations, 0))
	res.AfterDrainP50, res.AfterDrainMax = median(afterDrain), slices.Max(append(afterDrain, 0))
	for _, p := range []*float64{&res.RestartP50, &res.RestartMax} {
		*p = loadtest.Round(*p, 3)
	}
	for _, p := range []*float64{&res.AfterDrainP50, &res.AfterDrainMax} {
		*p = loadtest.Round(*p, 1)
	}
	if res.Share, err = connectionShare(r.addr, 16, cfg.Timeout); err != nil {
		return nil, fmt.Errorf("connection share: %w", err)
	}
	for len(res.Share) < r.workers {
		res.Share = append(res.Share, 0) // a worker that got none
	}
	if cfg.Throughput > 0 {
		l := loadtest.Start(loadtest.Spec{Addr: r.addr, Clients: cfg.Clients, Mode: loadtest.ModeKeepAlive, Timeout: cfg.Timeout,
			MaxRequests: cfg.MaxRequests, Deadline: time.Now().Add(cfg.Throughput)})
		l.Wait()
		res.RPS = loadtest.Round(float64(len(l.Samples))/l.Ended.Sub(l.Began).Seconds(), 0)
	}
	cpu, err := loadtest.CPU(inst.pid)
	if err != nil {
		return nil, err
	}
	rss, err := loadtest.PeakRSS(inst.pid)
	if err != nil {
		return nil, err
	}
	res.CPUS, res.PeakRSSMB = loadtest.Round(cpu.Seconds(), 2), loadtest.Round(float64(rss)/(1<<20), 1)
	return res, nil
}

// rollingRestart triggers one restart and waits until every old worker
// has drained (or exited) and as many new ones listen; it returns the
// time from the trigger to the last old worker's drain. The old workers
// may live on: an old worker serves its keep-alive connections until the
// primary kills it or the client closes them.
func (r *nodeRun) rollingRestart(inst *nodeInstance) (time.Duration, error) {
	old := r.events.live()
	if len(old) != r.workers {
		return 0, fmt.Errorf("%d workers live before the restart, want %d", len(old), r.workers)
	}
	t0 := time.Now()
	if err := inst.restart(); err != nil {
		return 0, err
	}
	if err := r.waitListening(old); err != nil {
		return 0, err
	}
	var last time.Time
	for _, w := range r.events.workers(old) {
		d := w.drained
		if d.IsZero() {
			d = w.exited // exited without a drain (killed): its exit stands for it
		}
		if d.After(last) {
			last = d
		}
	}
	return last.Sub(t0), nil
}

// afterDrain waits, at most cfg.Patience, until every drained worker has
// exited (the load that kept them is over), and returns each one's life
// after its drain, in ms, once.
func (r *nodeRun) afterDrain(counted map[int]bool) []float64 {
	deadline := time.Now().Add(r.cfg.Patience)
	for {
		_ = r.events.read()
		waiting := false
		for _, pid := range r.events.all() {
			if w := r.events.pids[pid]; !w.drained.IsZero() && w.exited.IsZero() {
				waiting = true
			}
		}
		if !waiting || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	var out []float64
	for _, pid := range r.events.all() {
		w := r.events.pids[pid]
		if counted[pid] || w.drained.IsZero() && w.exited.IsZero() {
			continue
		}
		counted[pid] = true
		d, x := w.drained, w.exited
		if d.IsZero() {
			d = x
		}
		if x.IsZero() {
			x = time.Now() // still alive after the patience
		}
		out = append(out, float64(x.Sub(d))/1e6)
	}
	return out
}

// waitListening waits until every old pid has drained or exited and
// r.workers others listen without draining, at most cfg.Patience.
func (r *nodeRun) waitListening(old []int) error {
	deadline := time.Now().Add(r.cfg.Patience)
	for {
		if err := r.events.read(); err != nil {
			return err
		}
		gone := true
		for _, pid := range old {
			if !r.events.done(pid) {
				gone = false
			}
		}
		live := r.events.live()
		if gone && len(live) == r.workers && !slices.ContainsFunc(live, func(p int) bool { return slices.Contains(old, p) }) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %d workers listening (want %d), old ones drained: %v", r.cfg.Patience, len(live), r.workers, gone)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// killLeftovers kills every worker of the run still alive (the primary
// should have stopped them).
func (r *nodeRun) killLeftovers() {
	_ = r.events.read()
	for _, pid := range r.events.all() {
		if loadtest.Alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// nodeWorker is one worker's life, as the app reported it.
type nodeWorker struct {
	listening, drained, exited time.Time
}

// nodeEvents reads the app's events file as it grows.
type nodeEvents struct {
	path   string
	offset int64
	rest   string
	pids   map[int]*nodeWorker
}

func (e *nodeEvents) read() error {
	f, err := os.Open(e.path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Seek(e.offset, io.SeekStart); err != nil {
		return err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	e.offset += int64(len(b))
	text := e.rest + string(b)
	i := strings.LastIndexByte(text, '\n')
	e.rest = text[i+1:]
	sc := bufio.NewScanner(strings.NewReader(text[:i+1]))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			continue
		}
		pid, _ := strconv.Atoi(f[1])
		ms, _ := strconv.ParseFloat(f[2], 64)
		at := time.UnixMicro(int64(ms * 1000))
		w := e.pids[pid]
		if w == nil {
			w = &nodeWorker{}
			e.pids[pid] = w
		}
		switch f[0] {
		case "L":
			w.listening = at
		case "D":
			w.drained = at
		case "X":
			w.exited = at
		}
	}
	// A worker that died without its exit handler (SIGKILL) is seen gone.
	for pid, w := range e.pids {
		if w.exited.IsZero() && !loadtest.Alive(pid) {
			w.exited = time.Now()
		}
	}
	return nil
}

// live are the workers listening, not draining and not exited.
func (e *nodeEvents) live() []int {
	var out []int
	for pid, w := range e.pids {
		if !w.listening.IsZero() && w.drained.IsZero() && w.exited.IsZero() {
			out = append(out, pid)
		}
	}
	slices.Sort(out)
	return out
}

// done: the worker drained or exited.
func (e *nodeEvents) done(pid int) bool {
	w := e.pids[pid]
	return w == nil && !loadtest.Alive(pid) || w != nil && (!w.drained.IsZero() || !w.exited.IsZero())
}

func (e *nodeEvents) workers(pids []int) []*nodeWorker {
	var out []*nodeWorker
	for _, pid := range pids {
		if w := e.pids[pid]; w != nil {
			out = append(out, w)
		}
	}
	return out
}

func (e *nodeEvents) all() []int {
	var out []int
	for pid := range e.pids {
		out = append(out, pid)
	}
	return out
}

// connectionShare opens n keep-alive connections together, sends one
// request on each, and counts the connections each worker answered, most
// first.
func connectionShare(addr string, n int, timeout time.Duration) ([]int, error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	byPID := map[string]int{}
	var firstErr error
	start := make(chan struct{})
	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i := range n {
		wg.Go(func() {
			<-start
			c, err := net.DialTimeout("tcp", addr, timeout)
			if err == nil {
				conns[i] = c
				c.SetDeadline(time.Now().Add(timeout))
				_, err = fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
			}
			var resp *http.Response
			if err == nil {
				resp, err = http.ReadResponse(bufio.NewReader(c), nil)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				firstErr = cmpOr(firstErr, err)
				return
			}
			resp.Body.Close()
			byPID[resp.Header.Get("X-Worker-Pid")]++
		})
	}
	close(start)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	var share []int
	for _, c := range byPID {
		share = append(share, c)
	}
	slices.SortFunc(share, func(a, b int) int { return b - a })
	return share, nil
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// startProcess starts cmd with its output in the run's directory, and
// returns a stop that signals sig, waits at most patience, then kills.
func (r *nodeRun) startProcess(name string, cmd *exec.Cmd, sig syscall.Signal) (*nodeInstance, error) {
	out, err := os.Create(filepath.Join(r.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); out.Close() }()
	stop := func() error {
		_ = cmd.Process.Signal(sig)
		select {
		case <-done:
			return nil
		case <-time.After(r.cfg.Patience):
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("%s did not stop within %s; killed", name, r.cfg.Patience)
		}
	}
	return &nodeInstance{pid: cmd.Process.Pid, stop: stop, restart: func() error { return cmd.Process.Signal(syscall.SIGUSR2) }}, nil
}

func startDutchmaster(r *nodeRun) (*nodeInstance, error) {
	args := []string{"--workers", strconv.Itoa(r.workers), "--log-format", "json", "--control", filepath.Join(r.dir, "ctl.sock"), "--dir", r.app,
		"--kill-timeout", nodeKillTimeout.String()}
	for _, kv := range r.env() {
		args = append(args, "--env", kv)
	}
	args = append(args, "--", "node", "app.js")
	return r.startProcess("dutchmaster", exec.Command(r.dmBin, args...), syscall.SIGTERM)
}

func startNodePrimary(r *nodeRun) (*nodeInstance, error) {
	cmd := exec.Command("node", filepath.Join(r.app, "primary.js"))
	cmd.Env = append(os.Environ(), r.env()...)
	return r.startProcess("primary", cmd, syscall.SIGTERM)
}

// startPM2 starts PM2's daemon (PM2_HOME in the run's directory) with the
// app in cluster mode; a restart is `pm2 reload`, the stop `pm2 kill`.
func startPM2(r *nodeRun) (*nodeInstance, error) {
	home := filepath.Join(r.dir, "pm2home")
	env := map[string]string{}
	for _, kv := range r.env() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	eco, _ := json.Marshal(map[string]any{"apps": []map[string]any{{
		"name": "bench", "script": filepath.Join(r.app, "app.js"), "exec_mode": "cluster", "instances": r.workers,
		"env": env, "autorestart": true, "kill_timeout": nodeKillTimeout.Milliseconds(), "out_file": filepath.Join(r.dir, "app-out.log"), "error_file": filepath.Join(r.dir, "app-err.log"),
	}}})
	ecoPath := filepath.Join(r.dir, "ecosystem.json")
	if err := os.WriteFile(ecoPath, eco, 0o644); err != nil {
		return nil, err
	}
	pm2 := func(args ...string) error {
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Patience)
		defer cancel()
		cmd := exec.CommandContext(ctx, r.pm2Bin, args...)
		cmd.Env = append(os.Environ(), "PM2_HOME="+home)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("pm2 %s: %v: %s", strings.Join(args, " "), err, lastLines(string(out), 5))
		}
		return nil
	}
	daemonPID := func() int {
		b, _ := os.ReadFile(filepath.Join(home, "pm2.pid"))
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return pid
	}
	if err := pm2("start", ecoPath); err != nil {
		if pid := daemonPID(); pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		return nil, err
	}
	pid := daemonPID()
	if pid == 0 {
		return nil, errors.New("pm2: no daemon pid in PM2_HOME")
	}
	return &nodeInstance{
		pid:     pid,
		restart: func() error { return pm2("reload", "bench") },
		stop: func() error {
			err := pm2("kill")
			deadline := time.Now().Add(r.cfg.Patience)
			for loadtest.Alive(pid) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if loadtest.Alive(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				err = errors.Join(err, errors.New("pm2 daemon killed"))
			}
			return err
		},
	}, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

// printNodeTable prints the runs side by side.
func printNodeTable(w io.Writer, results []*nodeResult) {
	if len(results) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "system\tworkers\trequests close/keepalive\tfailed close\tfailed keepalive\trestart s p50/max\tideal s\tafter drain ms p50/max\tshare of 16 conns\trps\tRSS MB\tCPU s\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%d/%d\t%s\t%s\t%.2f/%.2f\t%.2f\t%.0f/%.0f\t%s\t%.0f\t%.1f\t%.2f\t\n",
			r.System, r.Workers, r.Requests[loadtest.ModeClose], r.Requests[loadtest.ModeKeepAlive],
			failText(r.Failed[loadtest.ModeClose]), failText(r.Failed[loadtest.ModeKeepAlive]),
			r.RestartP50, r.RestartMax, r.IdealS, r.AfterDrainP50, r.AfterDrainMax,
			shareText(r.Share), r.RPS, r.PeakRSSMB, r.CPUS)
	}
	tw.Flush()
}

func failText(m map[string]int64) string {
	var parts []string
	var total int64
	for _, k := range loadtest.FailKinds {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
			total += m[k]
		}
	}
	if total == 0 {
		return "0"
	}
	return strings.Join(parts, ", ")
}

func shareText(s []int) string {
	parts := make([]string, len(s))
	for i, c := range s {
		parts[i] = strconv.Itoa(c)
	}
	return strings.Join(parts, "/")
}
