package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/dutchmaster/dutchmaster/cmd/internal/loadtest"
)

// dmbench -upgrade: in-place upgrades of the master (`dutchmaster ctl
// upgrade`) under load. Two builds of dutchmaster that differ only in
// their version string take turns, so that every upgrade changes the
// version the master reports. A run is one worker count in one connection
// mode: a closed-loop load, then -upgrades upgrades, each after -between
// more finished requests, the middle one while a rolling restart (SIGUSR2)
// has a replacement forked, so that the rollout completes under the new
// image. A soak run then upgrades -soak-upgrades times in the first mode
// and compares the master's memory and descriptors after the first
// upgrade and after the last.
//
// Each upgrade is timed twice: by the master's log (the new image's
// "upgrade: took over" carries "paused", from the old image's handing
// over to the new one's taking over, during which neither signals nor the
// control socket are answered) and by the ctl command's own line
// ("upgraded: pid N kept, OLD → NEW, master unavailable D").

// upgradeVersions are the version strings of the two builds.
var upgradeVersions = [2]string{"vA", "vB"}

// upgradeConfig is one -upgrade run.
type upgradeConfig struct {
	config
	Kind     string // "upgrade", or "soak" (no rollout)
	Upgrades int
	Rollout  bool // the middle upgrade during a rolling restart
}

// upgradeBinaries are the programs an -upgrade run starts: Dutchmaster[i]
// has version upgradeVersions[i].
type upgradeBinaries struct {
	Dutchmaster [2]string
	Hello       string
}

// upgradeResult is one -upgrade run's JSON line.
type upgradeResult struct {
	Kind     string           `json:"kind"` // "upgrade" or "soak"
	Workers  int              `json:"workers"`
	Mode     string           `json:"mode"`
	Clients  int              `json:"clients"`
	LoadS    float64          `json:"load_s"`
	BootMs   float64          `json:"boot_ms"`
	WorkMs   float64          `json:"work_ms"`
	Requests int64            `json:"requests"`
	Failed   int64            `json:"failed"`
	Failures map[string]int64 `json:"failures"` // by kind (loadtest.FailKinds)
	// FailureDetail lists the first failures, each placed against the
	// upgrades and the latest drain.
	FailureDetail []upgradeFailure `json:"failure_detail,omitempty"`
	Latency       struct {
		Steady  latencyStats `json:"steady"`
		Upgrade latencyStats `json:"upgrade"` // requests overlapping a ctl upgrade
	} `json:"latency_ms"`
	// The master unavailable per upgrade, ms: PausedMs by the new image's
	// log ("paused"), CtlMs as ctl upgrade reports it (from its receipt of
	// the master's acceptance to the first status the new image answers,
	// asked every 20 ms, so it can be less than PausedMs when ctl was
	// scheduled late), LogGapMs between the two images' log lines' times.
	PausedMs minMedMax `json:"paused_ms"`
	CtlMs    minMedMax `json:"ctl_unavailable_ms"`
	LogGapMs minMedMax `json:"log_gap_ms"`
	// CommandMs: each ctl upgrade command from its start to its exit.
	CommandMs minMedMax         `json:"command_ms"`
	Upgrades  []upgradeStats    `json:"upgrades"`
	Rollout   *rolloutStats     `json:"rollout,omitempty"`
	Master    upgradeMaster     `json:"master"`
	Targets   map[string]target `json:"targets"`
}

// upgradeFailure is a failed request placed against the upgrades.
type upgradeFailure struct {
	loadtest.Failure
	Upgrade int `json:"upgrade,omitempty"` // 1-based upgrade whose ctl command it overlapped, 0 none
}

// upgradeStats is one upgrade.
type upgradeStats struct {
	N             int     `json:"n"`
	From          string  `json:"from"`
	To            string  `json:"to"`
	Rollout       bool    `json:"rollout,omitempty"` // during a rolling restart
	PausedMs      float64 `json:"paused_ms"`
	CtlMs         float64 `json:"ctl_unavailable_ms"`
	LogGapMs      float64 `json:"log_gap_ms"`
	CommandMs     float64 `json:"command_ms"`
	WorkersKept   bool    `json:"workers_kept"` // the master's children the same before and after (not checked in a rollout)
	Requests      int     `json:"requests"`     // finished requests overlapping the ctl command
	start, end    int64   // the ctl command, Unix ns
	tookOverIndex int     // index after "upgrade: took over" in the log
}

// rolloutStats is the rolling restart an upgrade fell in.
type rolloutStats struct {
	Upgrade    int     `json:"upgrade"`     // which upgrade
	Generation int     `json:"generation"`  // the rollout's
	DurationMs float64 `json:"duration_ms"` // "restart requested" to "restart complete"
	// CompletedUnderNew: "restart complete" was logged after the new image
	// took over.
	CompletedUnderNew bool `json:"completed_under_new"`
}

// upgradeMaster is the master's pid and its readings: before the first
// upgrade, after the first, after the last (each after -between more
// requests, so no ctl connection is still open). Before also counts the
// descriptors the first image inherited open from dmbench's own parent,
// which the first exec closes: the first and last readings compare.
type upgradeMaster struct {
	PID        int     `json:"pid"`
	Before     reading `json:"before"`
	AfterFirst reading `json:"after_first"`
	AfterLast  reading `json:"after_last"`
	RSSDiffKB  int64   `json:"rss_diff_kb"` // after the last - after the first
	FDDiff     int     `json:"fd_diff"`
}

// reading is the master's VmRSS, descriptors and threads at one moment.
type reading struct {
	RSSKB   int64 `json:"rss_kb"`
	FDs     int   `json:"fds"`
	Threads int   `json:"threads"`
}

type minMedMax struct {
	N      int     `json:"n"`
	Min    float64 `json:"min"`
	Median float64 `json:"median"`
	Max    float64 `json:"max"`
}

// spanOf returns the count, minimum, median (the lower of the middle two
// for an even count) and maximum.
func spanOf(v []float64) minMedMax {
	if len(v) == 0 {
		return minMedMax{}
	}
	v = slices.Clone(v)
	slices.Sort(v)
	return minMedMax{N: len(v), Min: round(v[0], 3), Median: round(v[(len(v)-1)/2], 3), Max: round(v[len(v)-1], 3)}
}

// Targets of the in-place upgrade.
const (
	unavailableLimitMs = 100
	// rssToleranceKB: a fresh image's resident memory moves with when its
	// collector last ran, so "equal" is within this.
	rssToleranceKB = 1024
)

// upgradeBench runs the -upgrade runs, prints their JSON lines and table,
// and returns the exit status.
func upgradeBench(cfg config, counts []int, modes []string, upgrades, soak int, hello string, stdout, stderr io.Writer, logDir string) int {
	dir, err := os.MkdirTemp("", "dmbench-up-")
	if err != nil {
		fmt.Fprintf(stderr, "dmbench: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	cfg.note("building dutchmaster %s and %s", upgradeVersions[0], upgradeVersions[1])
	bin, err := buildUpgradeBinaries(dir, hello)
	if err != nil {
		fmt.Fprintf(stderr, "dmbench: %v\n", err)
		return 1
	}

	var runs []upgradeConfig
	for _, n := range counts {
		for _, mode := range modes {
			c := upgradeConfig{config: cfg, Kind: "upgrade", Upgrades: upgrades, Rollout: true}
			c.Workers, c.Mode = n, mode
			runs = append(runs, c)
		}
	}
	if soak > 0 {
		c := upgradeConfig{config: cfg, Kind: "soak", Upgrades: soak}
		c.Workers, c.Mode = counts[0], modes[0]
		runs = append(runs, c)
	}

	status := 0
	var results []*upgradeResult
	enc := json.NewEncoder(stdout)
	for _, c := range runs {
		res, masterLog, err := runUpgrades(c, bin, dir)
		if logDir != "" {
			name := filepath.Join(logDir, fmt.Sprintf("master-%s-%d-%s.log", c.Kind, c.Workers, c.Mode))
			if werr := os.WriteFile(name, []byte(masterLog), 0o644); werr != nil {
				fmt.Fprintf(stderr, "dmbench: %v\n", werr)
			}
		}
		if err != nil {
			fmt.Fprintf(stderr, "dmbench: %s, %d workers, %s: %v\n", c.Kind, c.Workers, c.Mode, err)
			status = 1
		}
		if res == nil {
			continue
		}
		if res.Failed > 0 {
			status = 1
		}
		enc.Encode(res)
		results = append(results, res)
	}
	printUpgradeTable(stdout, results)
	return status
}

// buildUpgradeBinaries builds the two versions of dutchmaster into dir,
// and the example worker unless hello names one.
func buildUpgradeBinaries(dir, hello string) (upgradeBinaries, error) {
	bin := upgradeBinaries{Hello: hello}
	for i, v := range upgradeVersions {
		bin.Dutchmaster[i] = filepath.Join(dir, "dutchmaster-"+v)
		if err := loadtest.BuildVersion(bin.Dutchmaster[i], v); err != nil {
			return bin, err
		}
	}
	if bin.Hello == "" {
		bin.Hello = filepath.Join(dir, "hello")
		return bin, loadtest.BuildHello(bin.Hello)
	}
	return bin, nil
}

// upgradeRun is one run in progress.
type upgradeRun struct {
	cfg     upgradeConfig
	bin     upgradeBinaries
	sock    string
	m       *loadtest.Master
	current int // index of the build the master runs
	load    *loadtest.Load
	ups     []upgradeStats
	rollout *rolloutStats
	master  upgradeMaster
}

// runUpgrades performs one run: start the master on build 0 with a
// control socket in dir, load it, upgrade it cfg.Upgrades times.
func runUpgrades(cfg upgradeConfig, bin upgradeBinaries, dir string) (*upgradeResult, string, error) {
	u := &upgradeRun{cfg: cfg, bin: bin, sock: filepath.Join(dir, fmt.Sprintf("ctl-%s-%d-%s.sock", cfg.Kind, cfg.Workers, cfg.Mode))}
	cfg.note("%s, %d workers, %s: starting the master (%s)", cfg.Kind, cfg.Workers, cfg.Mode, upgradeVersions[0])
	m, err := startMaster(loadtest.Binaries{Dutchmaster: bin.Dutchmaster[0], Hello: bin.Hello},
		cfg.Workers, cfg.Balance, cfg.Boot, cfg.Work, cfg.Patience, "--control", u.sock)
	if err != nil {
		return nil, "", err
	}
	u.m = m
	u.master.PID = m.PID()
	if err := u.collect(); err != nil {
		m.Stop(cfg.Patience)
		return nil, m.Log(), err
	}
	// A master that does not stop fails the run, but its upgrades were
	// measured: the result goes with the error.
	err = m.Stop(cfg.Patience)
	if err != nil {
		err = fmt.Errorf("after the upgrades: %w", err)
	}
	return u.analyze(m.Snapshot()), m.Log(), err
}

func (u *upgradeRun) collect() error {
	cfg := u.cfg
	// Each upgrade waits at most a few patiences (ctl, the log, a rollout).
	bound := time.Duration(3*cfg.Upgrades+4) * cfg.Patience
	u.load = loadtest.Start(loadtest.Spec{
		Addr: u.m.Addr, Clients: cfg.Clients, Mode: cfg.Mode, Timeout: cfg.Timeout,
		MaxRequests: cfg.MaxRequests, Deadline: time.Now().Add(bound),
	})
	defer u.load.Finish()
	var err error
	if err = u.pace(); err != nil {
		return err
	}
	if u.master.Before, err = u.read(); err != nil {
		return err
	}
	middle := (cfg.Upgrades + 1) / 2
	cfg.note("%s, %d workers, %s: load from %d clients, %d upgrades", cfg.Kind, cfg.Workers, cfg.Mode, cfg.Clients, cfg.Upgrades)
	for i := 1; i <= cfg.Upgrades; i++ {
		if cfg.Rollout && i == middle {
			err = u.upgradeInRollout(i)
		} else {
			err = u.upgradeOnce(i, false)
		}
		if err != nil {
			return fmt.Errorf("upgrade %d: %w", i, err)
		}
		if err := u.pace(); err != nil {
			return err
		}
		if i == 1 || i == cfg.Upgrades {
			r, err := u.read()
			if err != nil {
				return err
			}
			if i == 1 {
				u.master.AfterFirst = r
			}
			u.master.AfterLast = r
		}
		if i%10 == 0 || i == cfg.Upgrades {
			cfg.note("%s, %d workers, %s: %d upgrades done", cfg.Kind, cfg.Workers, cfg.Mode, i)
		}
	}
	u.load.Finish()
	return nil
}

// pace waits until cfg.Between more requests have finished.
func (u *upgradeRun) pace() error {
	want := u.load.DoneCount() + u.cfg.Between
	if !u.load.WaitDone(want, u.cfg.Patience) {
		return fmt.Errorf("load stalled: %d of %d requests finished within %s", u.load.DoneCount(), want, u.cfg.Patience)
	}
	return nil
}

// read takes the master's VmRSS, descriptors and threads.
func (u *upgradeRun) read() (reading, error) {
	st, err := loadtest.ReadStatus(u.m.PID())
	if err != nil {
		return reading{}, err
	}
	fds, err := loadtest.FDs(u.m.PID())
	return reading{RSSKB: st.RSS >> 10, FDs: fds, Threads: st.Threads}, err
}

// upgradeInRollout sends SIGUSR2, waits for the rollout's first
// replacement to be forked, upgrades, and waits for the rollout to
// complete.
func (u *upgradeRun) upgradeInRollout(n int) error {
	p := u.cfg.Patience
	from := u.m.Mark()
	if err := u.m.Signal(syscall.SIGUSR2); err != nil {
		return err
	}
	req, _, err := u.m.WaitFor(from, "restart requested", nil, p)
	if err != nil {
		return err
	}
	gen := req.Num("generation")
	if _, _, err := u.m.WaitFor(from, "fork", map[string]any{"generation": gen, "replacement": true}, p); err != nil {
		return err
	}
	if err := u.upgradeOnce(n, true); err != nil {
		return err
	}
	done, at, err := u.m.WaitFor(from, "restart complete", map[string]any{"generation": gen}, p)
	if err != nil {
		return err
	}
	u.rollout = &rolloutStats{
		Upgrade: n, Generation: gen, DurationMs: ms(done.Time.Sub(req.Time)),
		CompletedUnderNew: at > u.ups[len(u.ups)-1].tookOverIndex,
	}
	return nil
}

// upgradeOnce runs `ctl upgrade --binary OTHER` with the build the master
// runs now, and reads both images' log lines of it.
func (u *upgradeRun) upgradeOnce(n int, rollout bool) error {
	p := u.cfg.Patience
	next := 1 - u.current
	var before []int
	if !rollout {
		before = children(u.m.PID())
	}
	from := u.m.Mark()
	ctx, cancel := context.WithTimeout(context.Background(), p)
	defer cancel()
	cmd := exec.CommandContext(ctx, u.bin.Dutchmaster[u.current], "ctl", "--control", u.sock, "upgrade", "--binary", u.bin.Dutchmaster[next])
	start := time.Now()
	out, err := cmd.CombinedOutput()
	end := time.Now()
	if err != nil {
		return fmt.Errorf("ctl upgrade: %v: %s", err, strings.TrimSpace(string(out)))
	}
	line, err := parseUpgraded(string(out))
	if err != nil {
		return err
	}
	if line.PID != u.m.PID() || line.To != upgradeVersions[next] {
		return fmt.Errorf("ctl upgrade says pid %d, %s → %s; want pid %d, → %s", line.PID, line.From, line.To, u.m.PID(), upgradeVersions[next])
	}
	hand, _, err := u.m.WaitFor(from, "upgrade: handing over", nil, p)
	if err != nil {
		return err
	}
	took, at, err := u.m.WaitFor(from, "upgrade: took over", nil, p)
	if err != nil {
		return err
	}
	if took.Num("pid") != u.m.PID() || took.Str("to") != upgradeVersions[next] {
		return fmt.Errorf("the master logged %q with pid %d, to %q; want pid %d, to %s", took.Message, took.Num("pid"), took.Str("to"), u.m.PID(), upgradeVersions[next])
	}
	if _, ok := took.Fields["paused"]; !ok {
		return fmt.Errorf("the master's %q has no \"paused\"", took.Message)
	}
	s := upgradeStats{
		N: n, From: line.From, To: line.To, Rollout: rollout,
		PausedMs: ms(took.Dur("paused")), CtlMs: ms(line.Unavailable),
		LogGapMs: ms(took.Time.Sub(hand.Time)), CommandMs: ms(end.Sub(start)),
		start: start.UnixNano(), end: end.UnixNano(), tookOverIndex: at,
	}
	if !rollout {
		s.WorkersKept = slices.Equal(before, children(u.m.PID()))
	}
	u.ups = append(u.ups, s)
	u.current = next
	return nil
}

// children are the master's child processes, in order.
func children(pid int) []int {
	c := loadtest.Children(pid)
	slices.Sort(c)
	return c
}

// upgradedLine is ctl upgrade's report.
type upgradedLine struct {
	PID         int
	From, To    string
	Unavailable time.Duration
}

// upgradedRe matches "upgraded: pid N kept, OLD → NEW, master unavailable D".
var upgradedRe = regexp.MustCompile(`(?m)^upgraded: pid (\d+) kept, (.+) → (.+), master unavailable (\S+)\s*$`)

// parseUpgraded finds ctl upgrade's report in its output.
func parseUpgraded(out string) (upgradedLine, error) {
	m := upgradedRe.FindStringSubmatch(out)
	if m == nil {
		return upgradedLine{}, fmt.Errorf("ctl upgrade printed no \"upgraded: pid N kept, OLD → NEW, master unavailable D\": %q", strings.TrimSpace(out))
	}
	pid, _ := strconv.Atoi(m[1])
	d, err := time.ParseDuration(m[4])
	if err != nil {
		return upgradedLine{}, fmt.Errorf("ctl upgrade: master unavailable %q: %v", m[4], err)
	}
	return upgradedLine{PID: pid, From: m[2], To: m[3], Unavailable: d}, nil
}

func (u *upgradeRun) analyze(events []loadtest.Event) *upgradeResult {
	cfg, l := u.cfg, u.load
	res := &upgradeResult{
		Kind: cfg.Kind, Workers: cfg.Workers, Mode: cfg.Mode, Clients: cfg.Clients,
		LoadS:  l.Ended.Sub(l.Began).Seconds(),
		BootMs: ms(cfg.Boot), WorkMs: ms(cfg.Work),
		Requests: int64(len(l.Samples) + len(l.Failures)),
		Failed:   int64(len(l.Failures)),
		Failures: map[string]int64{},
		Upgrades: u.ups,
		Rollout:  u.rollout,
		Master:   u.master,
		Targets:  map[string]target{},
	}
	for _, k := range loadtest.FailKinds {
		res.Failures[k] = l.ByKind[k]
	}
	res.Master.RSSDiffKB = u.master.AfterLast.RSSKB - u.master.AfterFirst.RSSKB
	res.Master.FDDiff = u.master.AfterLast.FDs - u.master.AfterFirst.FDs

	var paused, ctl, gap, command []float64
	for _, s := range u.ups {
		paused, ctl, gap, command = append(paused, s.PausedMs), append(ctl, s.CtlMs), append(gap, s.LogGapMs), append(command, s.CommandMs)
	}
	res.PausedMs, res.CtlMs, res.LogGapMs, res.CommandMs = spanOf(paused), spanOf(ctl), spanOf(gap), spanOf(command)

	warm := l.Began.Add(cfg.Warmup).UnixNano()
	var windows []window
	for _, up := range res.Upgrades {
		windows = append(windows, window{up.start, up.end})
	}
	steady, during, counts := splitLatencies(l.Samples, warm, windows)
	for i, n := range counts {
		res.Upgrades[i].Requests += n
	}
	res.Latency.Steady, res.Latency.Upgrade = stats(steady), stats(during)

	for i, f := range l.Failures {
		if i == maxDetail {
			break
		}
		uf := upgradeFailure{Failure: f}
		t := f.Start.UnixNano()
		for _, up := range res.Upgrades {
			if t < up.end && f.End.UnixNano() > up.start {
				uf.Upgrade = up.N
			}
		}
		uf.AfterMs = -1
		for _, e := range events {
			if e.Message == "drain" && e.Time.UnixNano() <= t {
				uf.AfterMs, uf.Worker = ms(time.Duration(t-e.Time.UnixNano())), e.Num("worker")
			}
		}
		res.FailureDetail = append(res.FailureDetail, uf)
	}
	res.judge()
	return res
}

// judge records the targets of the in-place upgrade.
func (res *upgradeResult) judge() {
	res.Targets["zero_failures"] = target{Met: res.Failed == 0, Value: float64(res.Failed), Limit: 0}
	if len(res.Upgrades) == 0 {
		return
	}
	res.Targets["paused_max_ms"] = target{Met: res.PausedMs.Max < unavailableLimitMs, Value: res.PausedMs.Max, Limit: unavailableLimitMs}
	res.Targets["ctl_unavailable_max_ms"] = target{Met: res.CtlMs.Max < unavailableLimitMs, Value: res.CtlMs.Max, Limit: unavailableLimitMs}
	diff := res.Master.RSSDiffKB
	res.Targets["rss_last_minus_first_kb"] = target{Met: diff <= rssToleranceKB && diff >= -rssToleranceKB, Value: float64(diff), Limit: rssToleranceKB}
	res.Targets["fds_last_minus_first"] = target{Met: res.Master.FDDiff == 0, Value: float64(res.Master.FDDiff), Limit: 0}
	changed := 0
	for _, s := range res.Upgrades {
		if !s.Rollout && !s.WorkersKept {
			changed++
		}
	}
	res.Targets["upgrades_changing_workers"] = target{Met: changed == 0, Value: float64(changed), Limit: 0}
	if r := res.Rollout; r != nil {
		res.Targets["rollout_completed_under_new"] = target{Met: r.CompletedUnderNew, Value: b2f(r.CompletedUnderNew), Limit: 1}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// printUpgradeTable prints the runs for a reader, then every target a run
// missed.
func printUpgradeTable(w io.Writer, results []*upgradeResult) {
	if len(results) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\tworkers\tmode\tupgrades\trequests\tfailed\tpaused ms min/med/max\tctl unavailable ms min/med/max\tctl upgrade ms med/max\tsteady p99/max ms\tupgrade p99/max ms\trollout\tRSS MB before/1st/last\tRSS Δ KB\tfds before/1st/last\tfds Δ\t")
	for _, r := range results {
		rollout := "-"
		if r.Rollout != nil {
			rollout = fmt.Sprintf("#%d %.1fs", r.Rollout.Upgrade, r.Rollout.DurationMs/1000)
			if !r.Rollout.CompletedUnderNew {
				rollout += " (before)"
			}
		}
		m := r.Master
		mb := func(kb int64) float64 { return float64(kb) / 1024 }
		s, x := r.Latency.Steady, r.Latency.Upgrade
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%.1f/%.1f/%.1f\t%.1f/%.1f/%.1f\t%.0f/%.0f\t%.1f/%.1f\t%.1f/%.1f\t%s\t%.1f/%.1f/%.1f\t%+d\t%d/%d/%d\t%+d\t\n",
			r.Kind, r.Workers, r.Mode, len(r.Upgrades), r.Requests, r.Failed,
			r.PausedMs.Min, r.PausedMs.Median, r.PausedMs.Max,
			r.CtlMs.Min, r.CtlMs.Median, r.CtlMs.Max,
			r.CommandMs.Median, r.CommandMs.Max,
			s.P99, s.Max, x.P99, x.Max, rollout,
			mb(m.Before.RSSKB), mb(m.AfterFirst.RSSKB), mb(m.AfterLast.RSSKB), m.RSSDiffKB,
			m.Before.FDs, m.AfterFirst.FDs, m.AfterLast.FDs, m.FDDiff)
	}
	tw.Flush()
	for _, r := range results {
		printMissed(w, fmt.Sprintf("%s, %d workers, %s", r.Kind, r.Workers, r.Mode), r.Targets)
	}
}
