package control

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/scenarios"
	ctl "github.com/dutchmaster/dutchmaster/sockets/control"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const patience = 10 * time.Second

// fakeCluster runs a scripted cluster on one goroutine, as the cluster
// actor would: the server's calls and the test's worker events are
// queued to it, and the server's Observe runs on it.
type fakeCluster struct {
	d     *scenarios.Driver
	calls chan func()
	done  chan struct{}
	seen  chan core.Input // every input, after Observe
	// asked is the step of the input ask sent, once taken; only the
	// cluster's goroutine uses it.
	asking bool
	asked  []core.Decision
	// refuse, when set, is Restart's answer (a configuration that does
	// not load); afterRestart, when set, runs on the cluster's goroutine
	// after a restart's step, before Restart returns.
	mu           sync.Mutex
	refuse       error
	afterRestart func()
	// upgrade is Upgrade's answer; upgrades the binaries it was asked for.
	upgrade  func(binary string) (UpgradeStarted, error)
	upgrades []string
}

func newFakeCluster(t *testing.T, s *Server, workers int) *fakeCluster {
	f := &fakeCluster{d: scenarios.NewDriver(), calls: make(chan func()), done: make(chan struct{}), seen: make(chan core.Input, 1000)}
	observe := func(now time.Time, in core.Input, out []core.Decision) {
		s.Observe(now, in, out)
		if f.asking {
			f.asking, f.asked = false, out
		}
		f.seen <- in
	}
	f.d.Start(actors.Options{Logger: zerolog.Nop(), Observe: observe, Workers: func() int { return workers }},
		func(o actors.Options) scenarios.Host { return scenarios.NewSyncHost(o) })
	go func() {
		defer close(f.done)
		for call := range f.calls {
			call()
		}
	}()
	t.Cleanup(func() { close(f.calls); <-f.done; f.d.Close() })
	return f
}

// do runs f on the cluster's goroutine and waits for it.
func (f *fakeCluster) do(fn func()) {
	done := make(chan struct{})
	f.calls <- func() { fn(); close(done) }
	<-done
}

func (f *fakeCluster) View(ctx context.Context) (core.View, error) {
	var v core.View
	f.do(func() { v = f.d.Host.View() })
	return v, nil
}

// ask sends an input as actors.Cluster.Ask does: the decisions of its
// step come back once Observe has seen it. Between calls the driver's
// queue is empty, so the first step after the send is the input's.
func (f *fakeCluster) ask(in core.Input) []core.Decision {
	var out []core.Decision
	f.do(func() {
		f.asking = true
		f.d.Send(in)
		out, f.asked = f.asked, nil
	})
	return out
}

func (f *fakeCluster) Restart(ctx context.Context, source string) ([]core.Decision, error) {
	f.mu.Lock()
	refuse, after := f.refuse, f.afterRestart
	f.mu.Unlock()
	if refuse != nil {
		return nil, refuse
	}
	out := f.ask(core.RestartRequested{Source: source})
	if after != nil {
		f.do(after)
	}
	return out, nil
}
func (f *fakeCluster) Stop(source string) {
	f.calls <- func() { f.d.Send(core.StopRequested{Source: source}) }
}
func (f *fakeCluster) ReplaceWorker(ctx context.Context, worker int, source string) ([]core.Decision, error) {
	return f.ask(core.ReplaceWorker{Worker: core.WorkerID(worker), Source: source}), nil
}
func (f *fakeCluster) Scale(ctx context.Context, n int, source string) ([]core.Decision, error) {
	return f.ask(core.ScaleTo{Target: n, Source: source}), nil
}

// Upgrade answers with f.upgrade, and refuses without one.
func (f *fakeCluster) Upgrade(ctx context.Context, binary string) (UpgradeStarted, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.upgrades = append(f.upgrades, binary)
	if f.upgrade == nil {
		return UpgradeStarted{}, errors.New("upgrade refused: not in this test")
	}
	return f.upgrade(binary)
}

// waitInput waits until the cluster has taken an input of type T.
func waitInput[T core.Input](t *testing.T, f *fakeCluster) T {
	t.Helper()
	deadline := time.After(patience)
	for {
		select {
		case in := <-f.seen:
			if v, ok := in.(T); ok {
				return v
			}
		case <-deadline:
			var zero T
			t.Fatalf("no %T within %s", zero, patience)
			return zero
		}
	}
}

// lockedBuffer is a log written from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

type setup struct {
	s    *Server
	f    *fakeCluster
	logs *lockedBuffer
	path string
}

func start(t *testing.T, workers int, opts Options) setup {
	t.Helper()
	logs := &lockedBuffer{}
	opts.Path = filepath.Join(t.TempDir(), "ctl.sock")
	opts.Logger = zerolog.New(logs)
	opts.Name = "web"
	s, err := Listen(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	f := newFakeCluster(t, s, workers)
	s.Serve(f)
	f.do(func() { must(t, f.d.SettleWorkers()) })
	return setup{s, f, logs, opts.Path}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func dial(t *testing.T, path string) *ctl.Client {
	t.Helper()
	c, err := ctl.Dial(path, patience)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// async sends a request on its own connection and returns the reply's channel.
func async(t *testing.T, path string, req ctl.Request) chan ctl.Reply {
	c := dial(t, path)
	ch := make(chan ctl.Reply, 1)
	go func() {
		rep, err := c.Do(req)
		if err != nil {
			rep = ctl.Reply{Error: "client: " + err.Error()}
		}
		ch <- rep
	}()
	return ch
}

func recv(t *testing.T, ch chan ctl.Reply) ctl.Reply {
	t.Helper()
	select {
	case rep := <-ch:
		return rep
	case <-time.After(patience):
		t.Fatalf("no reply within %s", patience)
		return ctl.Reply{}
	}
}

// TestSocketMode: the socket file is 0600 and goes away at Close.
func TestSocketMode(t *testing.T) {
	st := start(t, 1, Options{})
	fi, err := os.Stat(st.path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %s, want a socket with 0600", fi.Mode())
	}
	// Another master on the same path is refused.
	if _, err := Listen(Options{Path: st.path}); err == nil || !strings.Contains(err.Error(), "another master") {
		t.Fatalf("second Listen: %v", err)
	}
	st.s.Close()
	if _, err := os.Stat(st.path); !os.IsNotExist(err) {
		t.Fatalf("socket file after Close: %v", err)
	}
}

// TestStatus: status lists every worker with its slot's restarts.
func TestStatus(t *testing.T) {
	st := start(t, 2, Options{})
	// A crash: slot 0 has one restart.
	st.f.do(func() {
		must(t, st.f.d.Deliver(1, actors.Exited{Code: 1}))
		must(t, st.f.d.SettleWorkers())
	})
	rep, err := dial(t, st.path).Do(ctl.Request{Command: ctl.CommandStatus})
	if err != nil || !rep.OK {
		t.Fatalf("%+v %v", rep, err)
	}
	s := rep.Status
	if s.Name != "web" || s.PID != os.Getpid() || s.Target != 2 || s.Listening != 2 || !s.Ready || len(s.Workers) != 2 {
		t.Fatalf("status %+v", s)
	}
	byID := map[int]ctl.WorkerStatus{}
	for _, w := range s.Workers {
		byID[w.ID] = w
	}
	if w := byID[3]; w.Slot != 0 || w.Restarts != 1 || w.State != "listening" || w.PID != scenarios.PIDBase+3 {
		t.Fatalf("worker 3: %+v", w)
	}
	if w := byID[2]; w.Restarts != 0 {
		t.Fatalf("worker 2: %+v", w)
	}
	if s.Slots[0].Restarts != 1 || s.Slots[0].Failures != 1 {
		t.Fatalf("slot 0: %+v", s.Slots[0])
	}
}

// TestRestart: a restart is answered when its rollout ends, complete or
// aborted; one made during a rollout joins it.
func TestRestart(t *testing.T) {
	st := start(t, 2, Options{})
	ch := async(t, st.path, ctl.Request{Command: ctl.CommandRestart})
	waitInput[core.RestartRequested](t, st.f)
	select {
	case rep := <-ch:
		t.Fatalf("answered before the rollout ended: %+v", rep)
	default:
	}
	joined := async(t, st.path, ctl.Request{Command: ctl.CommandRestart})
	waitInput[core.RestartRequested](t, st.f)
	st.f.do(func() { must(t, st.f.d.SettleWorkers()) })
	for _, c := range []chan ctl.Reply{ch, joined} {
		rep := recv(t, c)
		if !rep.OK || rep.Rollout == nil || rep.Rollout.Outcome != core.OutcomeComplete || rep.Rollout.Generation != 3 {
			t.Fatalf("reply %+v %+v", rep, rep.Rollout)
		}
	}

	ch = async(t, st.path, ctl.Request{Command: ctl.CommandRestart})
	waitInput[core.RestartRequested](t, st.f)
	st.f.do(func() {
		v := st.f.d.Host.View()
		must(t, st.f.d.Deliver(v.Workers[len(v.Workers)-1].ID, actors.Exited{Code: 1}))
	})
	rep := recv(t, ch)
	if rep.OK || rep.Rollout == nil || rep.Rollout.Outcome != core.OutcomeAborted || !strings.Contains(rep.Error, "exited before ready") {
		t.Fatalf("aborted: %+v %+v", rep, rep.Rollout)
	}
	if !strings.Contains(st.logs.String(), `"command":"restart"`) {
		t.Errorf("restart not logged:\n%s", st.logs)
	}
}

// TestRestartEndedBeforeRead: a restart whose rollout ends before its
// handler has read the decisions of its step is answered with that end.
func TestRestartEndedBeforeRead(t *testing.T) {
	st := start(t, 2, Options{})
	st.f.mu.Lock()
	st.f.afterRestart = func() { must(t, st.f.d.SettleWorkers()) }
	st.f.mu.Unlock()
	rep := recv(t, async(t, st.path, ctl.Request{Command: ctl.CommandRestart}))
	if !rep.OK || rep.Rollout == nil || rep.Rollout.Outcome != core.OutcomeComplete || rep.Rollout.Generation != 2 {
		t.Fatalf("reply %+v %+v", rep, rep.Rollout)
	}
	if len(rep.Rollout.Serving) != 2 {
		t.Errorf("reply of a rollout that ended before it was read: serving %v, want the 2 workers", rep.Rollout.Serving)
	}
	// Its input was seen before its reply; the wait below is for the
	// next restart's.
	waitInput[core.RestartRequested](t, st.f)
	// A later restart waits for its own rollout, not the one that ended.
	st.f.mu.Lock()
	st.f.afterRestart = nil
	st.f.mu.Unlock()
	ch := async(t, st.path, ctl.Request{Command: ctl.CommandRestart})
	waitInput[core.RestartRequested](t, st.f)
	select {
	case rep := <-ch:
		t.Fatalf("answered before its rollout ended: %+v", rep)
	case <-time.After(50 * time.Millisecond):
	}
	st.f.do(func() { must(t, st.f.d.SettleWorkers()) })
	if rep := recv(t, ch); !rep.OK || rep.Rollout == nil || rep.Rollout.Generation != 3 {
		t.Fatalf("second reply %+v %+v", rep, rep.Rollout)
	}
}

// TestScaleRefused: a scale the cluster refuses (it stops) is answered
// with the reason.
func TestScaleRefused(t *testing.T) {
	st := start(t, 1, Options{})
	st.f.Stop("test")
	waitInput[core.StopRequested](t, st.f)
	rep, err := dial(t, st.path).Do(ctl.Request{Command: ctl.CommandScale, Workers: 2})
	if err != nil || rep.OK || rep.Error != "scale ignored: stopping" {
		t.Fatalf("%+v %v", rep, err)
	}
}

// TestRestartRefused: a restart the master refuses (its configuration
// does not load) is answered with the reason at once.
func TestRestartRefused(t *testing.T) {
	st := start(t, 1, Options{})
	refuse := errors.New("restart refused: --config x.yaml: not valid YAML")
	st.f.mu.Lock()
	st.f.refuse = refuse
	st.f.mu.Unlock()
	rep, err := dial(t, st.path).Do(ctl.Request{Command: ctl.CommandRestart})
	if err != nil || rep.OK || rep.Error != refuse.Error() {
		t.Fatalf("%+v %v", rep, err)
	}
}

// TestScaleAndStop: scale answers with the new target; stop answers once
// the cluster stopped; a restart while stopping is refused with why.
func TestScaleAndStop(t *testing.T) {
	st := start(t, 2, Options{})
	c := dial(t, st.path)
	rep, err := c.Do(ctl.Request{Command: ctl.CommandScale, Workers: 3})
	if err != nil || !rep.OK || rep.Target != 3 {
		t.Fatalf("scale: %+v %v", rep, err)
	}
	if rep, _ := c.Do(ctl.Request{Command: ctl.CommandScale, Workers: 0}); rep.OK || !strings.Contains(rep.Error, "want 1 to 4096") {
		t.Fatalf("scale 0: %+v", rep)
	}
	st.f.do(func() { must(t, st.f.d.SettleWorkers()) })
	if rep, _ := c.Do(ctl.Request{Command: ctl.CommandStatus}); rep.Status.Listening != 3 {
		t.Fatalf("after scale: %+v", rep.Status)
	}

	stop := async(t, st.path, ctl.Request{Command: ctl.CommandStop})
	waitInput[core.StopRequested](t, st.f)
	if rep, _ := c.Do(ctl.Request{Command: ctl.CommandRestart}); rep.OK || rep.Error != "restart ignored: stopping" {
		t.Fatalf("restart while stopping: %+v", rep)
	}
	st.f.do(func() { must(t, st.f.d.SettleWorkers()) })
	if rep := recv(t, stop); !rep.OK {
		t.Fatalf("stop: %+v", rep)
	}
	// Stopped already: answered at once.
	if rep, _ := c.Do(ctl.Request{Command: ctl.CommandStop}); !rep.OK {
		t.Fatalf("second stop: %+v", rep)
	}
}

// TestBadRequests: unknown commands and malformed lines are answered
// with an error and the connection goes on; an oversized line closes it.
func TestBadRequests(t *testing.T) {
	st := start(t, 1, Options{MaxLine: 1024})
	c := dial(t, st.path)
	if rep, _ := c.Do(ctl.Request{Command: "reboot"}); rep.OK || !strings.Contains(rep.Error, `unknown command "reboot"`) {
		t.Fatalf("unknown: %+v", rep)
	}
	conn, err := net.Dial("unix", st.path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	for _, line := range []string{"not json\n", `{"command":"status","extra":1}` + "\n"} {
		conn.Write([]byte(line))
		l, err := r.ReadString('\n')
		if err != nil || !strings.Contains(l, "malformed request") {
			t.Fatalf("%q: %s %v", line, l, err)
		}
	}
	conn.Write([]byte(`{"command":"status"}` + "\n"))
	if l, err := r.ReadString('\n'); err != nil || !strings.Contains(l, `"ok":true`) {
		t.Fatalf("after malformed lines: %s %v", l, err)
	}
	conn.Write([]byte(strings.Repeat("x", 4096) + "\n"))
	l, err := r.ReadString('\n')
	if err != nil || !strings.Contains(l, "request longer than 1024 bytes") {
		t.Fatalf("oversized: %s %v", l, err)
	}
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("connection still open after an oversized request")
	}
}

// TestRefusedPeer: a peer whose uid is not allowed gets an error reply
// and the refusal is logged with its uid and pid.
func TestRefusedPeer(t *testing.T) {
	st := start(t, 1, Options{Allow: func(uid uint32) bool { return false }})
	rep, err := dial(t, st.path).Do(ctl.Request{Command: ctl.CommandStatus})
	if err != nil || rep.OK || !strings.Contains(rep.Error, "permission denied") {
		t.Fatalf("%+v %v", rep, err)
	}
	logs := st.logs.String()
	if !strings.Contains(logs, "control connection refused") || !strings.Contains(logs, `"peer_pid":`+itoa(os.Getpid())) {
		t.Fatalf("refusal not logged:\n%s", logs)
	}
}

// TestCloseAnswersWaiting: a restart still waiting when the master exits
// is answered with an error; Close waits for the handlers.
func TestCloseAnswersWaiting(t *testing.T) {
	st := start(t, 2, Options{})
	ch := async(t, st.path, ctl.Request{Command: ctl.CommandRestart})
	waitInput[core.RestartRequested](t, st.f)
	st.s.Close()
	if rep := recv(t, ch); rep.OK || !strings.Contains(rep.Error, "exited before the rollout ended") {
		t.Fatalf("%+v", rep)
	}
}

// TestDialErrors: no socket, and a stale one, are said so.
func TestDialErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := ctl.Dial(filepath.Join(dir, "none.sock"), time.Second); err == nil || !strings.Contains(err.Error(), "no control socket") {
		t.Fatalf("missing: %v", err)
	}
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if _, err := ctl.Dial(stale, time.Second); err == nil || !strings.Contains(err.Error(), "stale") {
		t.Fatalf("stale: %v", err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestRestartsCounted: RESTARTS counts what the restarts metric counts,
// a rollout's replacements and re-forks after a failure; a scale down
// and the scale up that brings its slot back are no restart.
func TestRestartsCounted(t *testing.T) {
	st := start(t, 3, Options{})
	c := dial(t, st.path)
	restarts := func(when string) []int {
		t.Helper()
		rep, err := c.Do(ctl.Request{Command: ctl.CommandStatus})
		if err != nil || !rep.OK {
			t.Fatalf("status %s: %+v %v", when, rep, err)
		}
		var n []int
		for _, sl := range rep.Status.Slots {
			n = append(n, sl.Restarts)
		}
		for _, w := range rep.Status.Workers {
			if w.Restarts != n[w.Slot] {
				t.Errorf("%s: w%d has %d restarts, its slot %d", when, w.ID, w.Restarts, n[w.Slot])
			}
		}
		return n
	}
	for _, target := range []int{2, 3} {
		if rep, err := c.Do(ctl.Request{Command: ctl.CommandScale, Workers: target}); err != nil || !rep.OK {
			t.Fatalf("scale %d: %+v %v", target, rep, err)
		}
		st.f.do(func() { must(t, st.f.d.SettleWorkers()) })
	}
	if got := restarts("after scaling 3 → 2 → 3"); !slices.Equal(got, []int{0, 0, 0}) {
		t.Errorf("after scaling 3 → 2 → 3: restarts %v, want none", got)
	}
	restart := async(t, st.path, ctl.Request{Command: ctl.CommandRestart})
	waitInput[core.RestartRequested](t, st.f)
	st.f.do(func() { must(t, st.f.d.SettleWorkers()) })
	if rep := recv(t, restart); !rep.OK {
		t.Fatalf("restart: %+v", rep)
	}
	if got := restarts("after a rolling restart"); !slices.Equal(got, []int{1, 1, 1}) {
		t.Errorf("after a rolling restart: restarts %v, want 1 per slot", got)
	}
}

// TestRestartProgress: a restart that asks for progress gets a line per
// step of its rollout (from the cluster's typed steps) before its reply;
// one that does not gets its reply alone, so that a client that reads one
// line per request reads the next request's reply next.
func TestRestartProgress(t *testing.T) {
	st := start(t, 2, Options{})
	var mu sync.Mutex
	var events []ctl.Progress
	c := dial(t, st.path)
	ch := make(chan ctl.Reply, 1)
	// The started line counts the workers due when the handler looks,
	// so the second restart waits for it: sent earlier, it would join
	// the rollout first and make the first restart's replacement due too.
	started := make(chan struct{})
	go func() {
		rep, err := c.DoStream(ctl.Request{Command: ctl.CommandRestart, Progress: true}, func(p ctl.Progress) {
			mu.Lock()
			if len(events) == 0 {
				close(started)
			}
			events = append(events, p)
			mu.Unlock()
		})
		if err != nil {
			rep = ctl.Reply{Error: "client: " + err.Error()}
		}
		ch <- rep
	}()
	waitInput[core.RestartRequested](t, st.f)
	select {
	case <-started:
	case <-time.After(patience):
		t.Fatalf("no progress line within %s", patience)
	}

	// An old client on its own connection: restart, then status.
	old := dial(t, st.path)
	oldRep := make(chan ctl.Reply, 2)
	go func() {
		for _, req := range []ctl.Request{{Command: ctl.CommandRestart}, {Command: ctl.CommandStatus}} {
			rep, err := old.Do(req)
			if err != nil {
				rep = ctl.Reply{Error: "client: " + err.Error()}
			}
			oldRep <- rep
		}
	}()
	waitInput[core.RestartRequested](t, st.f)
	st.f.do(func() { must(t, st.f.d.SettleWorkers()) })

	rep := recv(t, ch)
	if !rep.OK || rep.Rollout == nil || rep.Rollout.Outcome != core.OutcomeComplete || len(rep.Rollout.Serving) != 2 {
		t.Fatalf("reply %+v %+v", rep, rep.Rollout)
	}
	mu.Lock()
	defer mu.Unlock()
	count := map[string]int{}
	for _, p := range events {
		count[p.Event]++
	}
	if len(events) == 0 || events[0].Event != ctl.ProgressStarted || events[0].Total != 2 || len(events[0].PIDs) != 2 {
		t.Fatalf("first progress line: want started, 2 workers, their pids: %+v", events)
	}
	if count[ctl.ProgressFork] < 2 || count[ctl.ProgressListening] < 2 || count[ctl.ProgressDrain] < 2 || count[ctl.ProgressExit] < 2 {
		t.Errorf("progress: want at least 2 forks, listening, drains and exits: %v", count)
	}
	if last := events[len(events)-1]; last.Replaced < 2 || last.Total != last.Replaced {
		t.Errorf("last progress line: want every due worker replaced: %+v", last)
	}
	if r := recv(t, oldRep); r.Rollout == nil || r.Rollout.Outcome != core.OutcomeComplete {
		t.Fatalf("old client's restart: %+v", r)
	}
	if r := recv(t, oldRep); !r.OK || r.Status == nil {
		t.Fatalf("old client's status, after its restart: %+v", r)
	}
}

// TestRestartWorker: restart with a worker replaces that worker alone;
// an unknown worker is refused by the cluster, with its reason.
func TestRestartWorker(t *testing.T) {
	st := start(t, 2, Options{})
	v, _ := st.f.View(context.Background())
	ch := async(t, st.path, ctl.Request{Command: ctl.CommandRestart, Worker: int(v.Workers[0].ID)})
	in := waitInput[core.ReplaceWorker](t, st.f)
	if in.Worker != v.Workers[0].ID || !strings.HasPrefix(in.Source, "ctl#") {
		t.Fatalf("input %+v", in)
	}
	st.f.do(func() { must(t, st.f.d.SettleWorkers()) })
	if rep := recv(t, ch); !rep.OK || rep.Rollout == nil || rep.Rollout.Outcome != core.OutcomeComplete {
		t.Fatalf("restart w%d: %+v", v.Workers[0].ID, rep)
	}
	after, _ := st.f.View(context.Background())
	if len(after.Workers) != 2 || after.Workers[0].ID != v.Workers[1].ID {
		t.Fatalf("after: want w%d kept and one replacement: %+v", v.Workers[1].ID, after.Workers)
	}
	rep, err := dial(t, st.path).Do(ctl.Request{Command: ctl.CommandRestart, Worker: 999})
	if err != nil || rep.OK || rep.Error != "restart w999 refused: no worker w999" {
		t.Fatalf("restart w999: %+v %v", rep, err)
	}
}
