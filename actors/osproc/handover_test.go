package osproc_test

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/actors/osproc"
	"github.com/dutchmaster/dutchmaster/sockets/testproc"
)

func init() {
	testproc.Register("streamer", roleStreamer)
}

// roleStreamer writes, round after round until its channel reads EOF (a
// drain), an IPC line {"seq":i}, the stdout line "out i", the stderr line
// "err i" (the first two each in two writes, so that a reader may catch a
// line half written) and the notify datagram STATUS=i; then it sends
// {"done":n}, n rounds written whole, and exits 7.
func roleStreamer([]string) int {
	c := workerIPC()
	eof := make(chan struct{})
	go func() {
		c.readAll()
		close(eof)
	}()
	for i := 0; ; i++ {
		select {
		case <-eof:
			c.send(map[string]int{"done": i})
			return 7
		default:
		}
		c.write([]byte(`{"seq":`))
		c.write([]byte(strconv.Itoa(i) + "}\n"))
		fmt.Fprint(os.Stdout, "out ")
		fmt.Fprintf(os.Stdout, "%d\n", i)
		fmt.Fprintf(os.Stderr, "err %d\n", i)
		if _, err := daemon.SdNotify(false, "STATUS="+strconv.Itoa(i)); err != nil {
			fmt.Fprintln(os.Stderr, "sd_notify:", err)
			return 1
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// collector keeps every event of one worker, across runtimes.
type collector struct {
	mu     sync.Mutex
	events []any
}

func (c *collector) add(msg any) {
	c.mu.Lock()
	c.events = append(c.events, msg)
	c.mu.Unlock()
}

func (c *collector) snapshot() []any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]any(nil), c.events...)
}

// exitedOf waits for the worker's Exited.
func (c *collector) exited(t *testing.T) actors.Exited {
	t.Helper()
	var e actors.Exited
	testproc.WaitFor(t, testTimeout, "the worker's exit", func() bool {
		for _, msg := range c.snapshot() {
			if x, ok := msg.(actors.Exited); ok {
				e = x
				return true
			}
		}
		return false
	})
	return e
}

// streamed is what a streamer's events say: its IPC rounds, the done
// count (-1 without), the notify rounds, in the order delivered.
type streamed struct {
	seqs, statuses []int
	done           int
	exitLast       bool // Exited is the last event
}

func streamOf(t *testing.T, events []any) streamed {
	t.Helper()
	s := streamed{done: -1}
	for i, msg := range events {
		switch m := msg.(type) {
		case actors.IPC:
			var v map[string]int
			if err := json.Unmarshal(m.Line, &v); err != nil {
				s.seqs = append(s.seqs, -1) // a line cut by a kill, if last
				continue
			}
			if n, ok := v["seq"]; ok {
				s.seqs = append(s.seqs, n)
			} else if n, ok := v["done"]; ok {
				s.done = n
			}
		case actors.Notify:
			n, err := strconv.Atoi(strings.TrimPrefix(m.Payload, "STATUS="))
			if err != nil {
				t.Fatalf("notify %q", m.Payload)
			}
			s.statuses = append(s.statuses, n)
		case actors.Exited:
			s.exitLast = i == len(events)-1
		}
	}
	return s
}

// checkRounds fails unless got is 0, 1, ..., n-1 (n < 0: any length, and
// the last round may be -1: a line cut short by a kill).
func checkRounds(t *testing.T, what string, got []int, n int) {
	t.Helper()
	if n < 0 && len(got) > 0 && got[len(got)-1] == -1 {
		got = got[:len(got)-1]
	}
	for i, v := range got {
		if v != i {
			t.Fatalf("%s: round %d is %d (lost or duplicated): %v", what, i, v, got)
		}
	}
	if n >= 0 && len(got) != n {
		t.Fatalf("%s: %d rounds, want %d", what, len(got), n)
	}
}

// outputLines are the logged lines of one worker's stream.
func outputLines(t *testing.T, logs string, worker int, stream string) []string {
	t.Helper()
	var out []string
	for line := range strings.SplitSeq(logs, "\n") {
		if line == "" {
			continue
		}
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if v["stream"] == stream && v[actors.FieldWorker] == float64(worker) {
			out = append(out, v["message"].(string))
		}
	}
	return out
}

// checkOutput fails unless a stream's lines are "PREFIX 0" .. "PREFIX
// n-1" (n < 0: any count, the last line possibly cut short by a kill).
func checkOutput(t *testing.T, logs string, worker int, stream, prefix string, n int) {
	t.Helper()
	lines := outputLines(t, logs, worker, stream)
	if n < 0 && len(lines) > 0 && !strings.HasPrefix(lines[len(lines)-1], prefix+" ") {
		lines = lines[:len(lines)-1] // a line cut by the kill
	}
	var rounds []int
	for _, l := range lines {
		v, err := strconv.Atoi(strings.TrimPrefix(l, prefix+" "))
		if err != nil {
			if n < 0 && l == lines[len(lines)-1] {
				break
			}
			t.Fatalf("worker %d %s: line %q", worker, stream, l)
		}
		rounds = append(rounds, v)
	}
	checkRounds(t, fmt.Sprintf("worker %d %s", worker, stream), rounds, n)
}

// queued is how many bytes wait unread on a socket or pipe descriptor.
func queued(fd int) int {
	n, err := unix.IoctlGetInt(fd, unix.SIOCINQ) // FIONREAD, for pipes too
	if err != nil {
		return -1
	}
	return n
}

// streamerConfig runs streamers, their output logged to logs.
func streamerConfig(t *testing.T, logs *syncBuffer) osproc.Config {
	return osproc.Config{
		Command: []string{testBinary(t)}, Env: testproc.Environ("streamer"),
		LogOutput: true, Logger: zerolog.New(logs),
	}
}

// startStreamers forks n streamers and waits until each has delivered a
// few rounds.
func startStreamers(t *testing.T, rt *osproc.Runtime, n int) ([]*collector, []int) {
	t.Helper()
	cols := make([]*collector, n)
	pids := make([]int, n)
	for i := range n {
		cols[i] = &collector{}
		rt.Fork(actors.WorkerSpec{ID: core.WorkerID(i + 1), Slot: i}, cols[i].add)
	}
	for i, c := range cols {
		testproc.WaitFor(t, testTimeout, "a few rounds", func() bool {
			s := streamOf(t, c.snapshot())
			return len(s.seqs) >= 5 && len(s.statuses) >= 5
		})
		sp, ok := c.snapshot()[0].(actors.Spawned)
		if !ok {
			t.Fatalf("worker %d: first event %T", i+1, c.snapshot()[0])
		}
		pids[i] = sp.PID
	}
	return cols, pids
}

// TestHandoverLosesNothing: three streaming workers are handed over from
// one runtime to another (in this process, with the handed descriptors
// duplicated as an exec keeps them, and the first runtime abandoned). No
// IPC line, notify datagram or output line is lost or duplicated; what
// the workers write while paused arrives after. Worker 1, drained while
// paused, exits then: its exit is reported by the second runtime, with
// its code. Worker 2 is drained and worker 3 killed through the second
// runtime. No descriptor is left open.
func TestHandoverLosesNothing(t *testing.T) {
	before := testproc.OpenFDs(t)
	t.Cleanup(func() { // last: after the test's own pidfds are closed
		if after := testproc.OpenFDs(t); after != before {
			t.Errorf("%d descriptors open after both runtimes closed, %d before", after, before)
		}
	})
	var logs syncBuffer
	cfg := streamerConfig(t, &logs)
	rt1, err := osproc.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cols, pids := startStreamers(t, rt1, 3)

	if err := rt1.Pause(); err != nil {
		t.Fatal(err)
	}
	delivered := make([]int, len(cols))
	for i, c := range cols {
		delivered[i] = len(c.snapshot())
	}
	// Worker 1 is drained and exits while paused.
	rt1.Drain(1, actors.DrainIPC)
	w1, _ := watch(t, pids[0])
	waitGone(t, w1, "worker 1, drained while paused")

	st, fds, err := rt1.Handover()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Workers) != 3 || len(fds) != 1+3*3 {
		t.Fatalf("handover: %d workers, %d descriptors; want 3 and 10", len(st.Workers), len(fds))
	}
	if !st.Workers[0].Draining {
		t.Error("worker 1, drained, not handed over as draining")
	}
	// Workers 2 and 3 go on writing: it waits in the kernel.
	for _, w := range st.Workers[1:] {
		testproc.WaitFor(t, testTimeout, "lines written while paused", func() bool {
			return queued(w.Channel) > 0 && queued(w.Stdout) > 0 && queued(w.Stderr) > 0
		})
	}
	testproc.WaitFor(t, testTimeout, "datagrams sent while paused", func() bool { return queued(st.Notify.FD) > 0 })
	for i, c := range cols {
		if n := len(c.snapshot()); n != delivered[i] {
			t.Fatalf("worker %d: %d events delivered while paused", i+1, n-delivered[i])
		}
	}

	// What an exec does: the descriptors stay open (here under new
	// numbers), the state goes as JSON, the old image's objects go.
	dup := map[int]int{}
	for _, fd := range fds {
		n, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		dup[fd] = n
	}
	st.Notify.FD = dup[st.Notify.FD]
	for i := range st.Workers {
		w := &st.Workers[i]
		w.Channel, w.Stdout, w.Stderr = dup[w.Channel], dup[w.Stdout], dup[w.Stderr]
	}
	data, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := rt1.Abandon(); err != nil {
		t.Fatal(err)
	}
	var st2 osproc.State
	if err := json.Unmarshal(data, &st2); err != nil {
		t.Fatal(err)
	}
	rt2, err := osproc.Adopt(cfg, st2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeRuntime(t, rt2) })
	if rt2.NotifySocket() != st.Notify.Path {
		t.Errorf("adopted notify socket %s, want %s", rt2.NotifySocket(), st.Notify.Path)
	}
	for i, c := range cols {
		rt2.Reattach(core.WorkerID(i+1), c.add)
	}
	// The adopted readers can be stopped again (a later upgrade).
	pauseWithin(t, rt2)
	rt2.Unpause()

	// Worker 1 exited while paused: reported now, after all it wrote.
	if e := cols[0].exited(t); e.Code != 7 || e.Signal != 0 {
		t.Errorf("worker 1 exit %+v, want code 7", e)
	}
	// Worker 2 drained, worker 3 killed, by the new runtime.
	rt2.Drain(2, actors.DrainIPC)
	if e := cols[1].exited(t); e.Code != 7 || e.Signal != 0 {
		t.Errorf("worker 2 exit %+v, want code 7", e)
	}
	testproc.WaitFor(t, testTimeout, "worker 3's lines after the handover", func() bool {
		return len(cols[2].snapshot()) > delivered[2]+10
	})
	rt2.Kill(3)
	if e := cols[2].exited(t); e.Signal != syscall.SIGKILL {
		t.Errorf("worker 3 exit %+v, want SIGKILL", e)
	}
	closeRuntime(t, rt2)

	for i, c := range cols {
		s := streamOf(t, c.snapshot())
		name := fmt.Sprintf("worker %d", i+1)
		if !s.exitLast {
			t.Errorf("%s: Exited is not its last event", name)
		}
		if len(c.snapshot()) < delivered[i]+2 {
			t.Errorf("%s: nothing delivered after the handover but its exit", name)
		}
		n := s.done
		if i < 2 && n < 0 {
			t.Fatalf("%s: no done line", name)
		}
		checkRounds(t, name+" IPC", s.seqs, n)
		checkRounds(t, name+" notify", s.statuses, n)
		checkOutput(t, logs.String(), i+1, "stdout", "out", n)
		checkOutput(t, logs.String(), i+1, "stderr", "err", n)
	}
}

// TestUnpauseGoesOn: a paused runtime delivers nothing; unpaused, it
// delivers what was written meanwhile and goes on as before.
func TestUnpauseGoesOn(t *testing.T) {
	var logs syncBuffer
	rt := newRuntime(t, streamerConfig(t, &logs))
	cols, _ := startStreamers(t, rt, 1)
	if err := rt.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := rt.Pause(); err == nil {
		t.Error("a second Pause: no error")
	}
	delivered := len(cols[0].snapshot())
	st, _, err := rt.Handover()
	if err != nil {
		t.Fatal(err)
	}
	w := st.Workers[0]
	testproc.WaitFor(t, testTimeout, "lines written while paused", func() bool {
		return queued(w.Channel) > 0 && queued(w.Stdout) > 0 && queued(st.Notify.FD) > 0
	})
	if n := len(cols[0].snapshot()); n != delivered {
		t.Fatalf("%d events delivered while paused", n-delivered)
	}
	rt.Unpause()
	testproc.WaitFor(t, testTimeout, "lines after Unpause", func() bool { return len(cols[0].snapshot()) > delivered+10 })
	// A Handover does not keep the readers from being stopped again.
	pauseWithin(t, rt)
	rt.Unpause()
	rt.Drain(1, actors.DrainIPC)
	if e := cols[0].exited(t); e.Code != 7 {
		t.Errorf("exit %+v, want code 7", e)
	}
	closeRuntime(t, rt)
	s := streamOf(t, cols[0].snapshot())
	checkRounds(t, "IPC", s.seqs, s.done)
	checkRounds(t, "notify", s.statuses, s.done)
	checkOutput(t, logs.String(), 1, "stdout", "out", s.done)
	checkOutput(t, logs.String(), 1, "stderr", "err", s.done)
}

// TestPauseRefusedWhileForking: a fork under way (here held in its
// before-fork hook) makes Pause refuse; once it is done, Pause goes.
func TestPauseRefusedWhileForking(t *testing.T) {
	release := make(chan struct{})
	rt := newRuntime(t, osproc.Config{
		Command:    role(t, "sleeper"),
		BeforeFork: func(string, []string) error { <-release; return nil },
	})
	rec := newRecorder()
	rt.Fork(actors.WorkerSpec{ID: 1}, rec.events)
	testproc.WaitFor(t, testTimeout, "the fork to count", func() bool { return rt.Forking() == 1 })
	if err := rt.Pause(); err == nil {
		t.Fatal("Pause during a fork: no error")
	}
	close(release)
	expect[actors.Spawned](t, rec)
	testproc.WaitFor(t, testTimeout, "the fork to end", func() bool { return rt.Forking() == 0 })
	if err := rt.Pause(); err != nil {
		t.Fatal(err)
	}
	rt.Kill(1)
	rt.Unpause()
	if e := expect[actors.Exited](t, rec); e.Signal != syscall.SIGKILL {
		t.Errorf("exit %+v, want SIGKILL", e)
	}
}

// pauseWithin pauses rt, failing if Pause does not return within
// testTimeout (a reader that cannot be stopped).
func pauseWithin(t *testing.T, rt *osproc.Runtime) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- rt.Pause() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Pause did not return: a reader cannot be stopped")
	}
}
