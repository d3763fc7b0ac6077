package osproc_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/osproc"
	"github.com/dutchmaster/dutchmaster/sockets"
	"github.com/dutchmaster/dutchmaster/sockets/testproc"
)

// The tests start real processes: the test binary itself, re-run in a
// worker role (testproc, so no helper binary can drift). The binary is
// also its own trampoline: importing osproc installs it, and
// Config.Executable defaults to os.Executable().
func TestMain(m *testing.M) { testproc.Main(m) }

// testTimeout bounds every wait on a process or an event: generous, so a
// loaded machine (and -race) does not fail, finite, so a bug does not hang.
const testTimeout = testproc.Timeout

func testBinary(t testing.TB) string {
	t.Helper()
	return testproc.Executable(t)
}

// role is a worker command: this binary in the named role, with args.
// newRuntime moves the role's name into the workers' environment
// (testproc.Environ), so the workers' arguments are args alone.
func role(t testing.TB, name string, args ...string) []string {
	return append([]string{testBinary(t), name}, args...)
}

// newRuntime starts a runtime for one test, closed (and checked) at the
// end. Unset fields get test defaults: the role environment, the test's
// stderr for worker output.
// (The zero Logger, the default, writes nowhere.)
func newRuntime(t *testing.T, cfg osproc.Config) *osproc.Runtime {
	t.Helper()
	if len(cfg.Command) >= 2 && cfg.Command[0] == testBinary(t) {
		cfg.Env = append(testproc.Environ(cfg.Command[1]), cfg.Env...)
		cfg.Command = append([]string{cfg.Command[0]}, cfg.Command[2:]...)
	}
	if cfg.Stdout == nil {
		cfg.Stdout = os.Stderr
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	rt, err := osproc.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeRuntime(t, rt) })
	return rt
}

// closed are the runtimes a test closed itself (Close is not idempotent).
var closed sync.Map

// closeRuntime closes rt once, failing the test on an error.
func closeRuntime(t *testing.T, rt *osproc.Runtime) {
	t.Helper()
	if _, done := closed.LoadOrStore(rt, true); done {
		return
	}
	if err := rt.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// recorder collects the events of one worker, as the events func of Fork.
type recorder struct {
	ch chan any
}

func newRecorder() *recorder { return &recorder{ch: make(chan any, 4096)} }

// events is the func given to Fork; it must never block the runtime.
func (r *recorder) events(msg any) {
	select {
	case r.ch <- msg:
	default:
		panic(fmt.Sprintf("recorder full, dropping %#v", msg))
	}
}

// next waits for the next event.
func (r *recorder) next(t *testing.T) any {
	t.Helper()
	select {
	case msg := <-r.ch:
		return msg
	case <-time.After(testTimeout):
		t.Fatalf("no event within %v", testTimeout)
		return nil
	}
}

// expect waits for the next event and fails unless it is a T.
func expect[T any](t *testing.T, r *recorder) T {
	t.Helper()
	msg := r.next(t)
	v, ok := msg.(T)
	if !ok {
		t.Fatalf("got %T %+v, want %T", msg, msg, v)
	}
	return v
}

// until collects events up to and including the first T, returning it
// and the events before it.
func until[T any](t *testing.T, r *recorder) (T, []any) {
	t.Helper()
	var before []any
	for {
		msg := r.next(t)
		if v, ok := msg.(T); ok {
			return v, before
		}
		before = append(before, msg)
	}
}

// drained returns the events still queued; call it once nothing more can
// come (after Exited and Close, or after ForkFailed and Close).
func (r *recorder) drained() []any {
	var out []any
	for {
		select {
		case msg := <-r.ch:
			out = append(out, msg)
		default:
			return out
		}
	}
}

// spawn forks one worker and waits for Spawned.
func spawn(t *testing.T, rt *osproc.Runtime, spec actors.WorkerSpec) (*recorder, int) {
	t.Helper()
	rec := newRecorder()
	rt.Fork(spec, rec.events)
	msg := rec.next(t)
	sp, ok := msg.(actors.Spawned)
	if !ok {
		t.Fatalf("Fork: got %T %+v, want Spawned", msg, msg)
	}
	if sp.PID <= 0 {
		t.Fatalf("Spawned with pid %d", sp.PID)
	}
	return rec, sp.PID
}

// decode unmarshals an IPC line, failing on anything else.
func decode(t *testing.T, msg any, v any) {
	t.Helper()
	ipc, ok := msg.(actors.IPC)
	if !ok {
		t.Fatalf("got %T %+v, want IPC", msg, msg)
	}
	if ipc.Err != "" {
		t.Fatalf("IPC error %q", ipc.Err)
	}
	if err := json.Unmarshal(ipc.Line, v); err != nil {
		t.Fatalf("IPC line %q: %v", ipc.Line, err)
	}
}

// nextReport waits for the worker's report, its first IPC line.
func nextReport(t *testing.T, rec *recorder) report {
	t.Helper()
	var rep report
	decode(t, rec.next(t), &rep)
	return rep
}

// bind binds a listener for the test, closed at the end.
func bind(t *testing.T, spec string) *sockets.Listener {
	t.Helper()
	s, err := sockets.ParseSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	l, err := sockets.Bind(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// watch opens a pidfd on pid, so the test can wait for that very process
// to end even if the number is reused. It is closed at the end of the test,
// after a SIGKILL in case a failing test left the process alive. ok is
// false when the process is already gone.
func watch(t *testing.T, pid int) (fd int, ok bool) {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return -1, false
	}
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", pid, err)
	}
	t.Cleanup(func() {
		_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		unix.Close(fd)
	})
	return fd, true
}

// waitGone waits until the process behind a pidfd has ended (a zombie
// counts: it runs no more), failing after the bound.
func waitGone(t *testing.T, fd int, what string) {
	t.Helper()
	if fd < 0 {
		return
	}
	deadline := time.Now().Add(testTimeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("%s still alive after %v", what, testTimeout)
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(left/time.Millisecond)+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatalf("poll pidfd of %s: %v", what, err)
		}
		if n > 0 {
			return
		}
	}
}

// alive says whether the process behind a pidfd still runs, right now.
func alive(t *testing.T, fd int) bool {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	if err != nil && !errors.Is(err, unix.EINTR) {
		t.Fatalf("poll pidfd: %v", err)
	}
	return n == 0
}

// helperCommand runs this binary in a role directly (not as a worker),
// killed if it outlives the test's bound.
func helperCommand(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	return testproc.Command(t, name, args...)
}

// startHelper starts this binary in a role and returns it and its
// stdout; it is killed and waited for when the test ends.
func startHelper(t *testing.T, name string, args ...string) (*exec.Cmd, io.Reader) {
	t.Helper()
	cmd := helperCommand(t, name, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, out
}

// syncBuffer is a log destination safe for the runtime's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// envValue returns the value of key in env and how often key occurs.
func envValue(env []string, key string) (value string, count int) {
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if k == key {
			value, count = v, count+1
		}
	}
	return value, count
}
