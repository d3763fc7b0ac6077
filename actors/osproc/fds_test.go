package osproc_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/osproc"
	"github.com/dutchmaster/dutchmaster/sockets"
)

// TestWorkerGetsOnlyItsDescriptors: a worker holds fds 0, 1, 2, its
// listeners at 3.. in order, the IPC channel after them, and nothing else,
// even when the master's process holds a descriptor without close-on-exec
// and never ran sockets.CloseOnExecAll: the trampoline sweeps before it
// execs the worker.
func TestWorkerGetsOnlyItsDescriptors(t *testing.T) {
	web := bind(t, "web=tcp://127.0.0.1:0")
	sockPath := filepath.Join(t.TempDir(), "s.sock")
	sock := bind(t, "sock=unix://"+sockPath)

	// A descriptor leaked the way a careless launcher or C library leaks
	// one: no O_CLOEXEC. Moved above the worker's range (3..5), where exec's
	// dup2 would otherwise replace it.
	strayPath := filepath.Join(t.TempDir(), "stray")
	if err := os.WriteFile(strayPath, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	low, err := unix.Open(strayPath, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	stray, err := unix.FcntlInt(uintptr(low), unix.F_DUPFD, 100)
	unix.Close(low)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(stray)

	rt := newRuntime(t, osproc.Config{
		Command:   role(t, "report"),
		Listeners: []*sockets.Listener{web, sock},
	})

	// The master's process did not sweep: the stray is still inheritable here.
	if flags, err := unix.FcntlInt(uintptr(stray), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC != 0 {
		t.Fatalf("the stray descriptor should be inheritable in the master (flags %d, %v)", flags, err)
	}
	rec, _ := spawn(t, rt, actors.WorkerSpec{ID: 1})
	rep := nextReport(t, rec)
	expectExit(t, rec, 0)
	if _, leaked := rep.Links[stray]; leaked {
		t.Errorf("the stray descriptor %d reached the worker: %q", stray, rep.Links[stray])
	}

	if got, want := inherited(rep), []int{0, 1, 2, 3, 4, 5}; !slices.Equal(got, want) {
		t.Errorf("worker inherited fds %v, want %v; all fds %v, links %v", got, want, rep.FDs, rep.Links)
	}
	if rep.Links[0] != "/dev/null" {
		t.Errorf("fd 0 is %q, want /dev/null", rep.Links[0])
	}
	for fd, l := range map[int]*sockets.Listener{3: web, 4: sock} {
		if want := socketLink(t, l.File()); rep.Links[fd] != want {
			t.Errorf("fd %d is %q, want %s's socket %s", fd, rep.Links[fd], l.Name(), want)
		}
	}
	if want := "inet " + web.Addr().String(); rep.Sockets[3] != want {
		t.Errorf("fd 3 bound to %q, want %q", rep.Sockets[3], want)
	}
	if want := "unix " + sockPath; rep.Sockets[4] != want {
		t.Errorf("fd 4 bound to %q, want %q", rep.Sockets[4], want)
	}
	// The channel: an unnamed unix socket whose other end the master made.
	if rep.Sockets[5] != "unix unnamed" || rep.Peers[5] != os.Getpid() {
		t.Errorf("fd 5 (IPC channel) is %q with peer pid %d, want an unnamed unix socket connected to the master (pid %d)",
			rep.Sockets[5], rep.Peers[5], os.Getpid())
	}
	if v, _ := envValue(rep.Env, "NODE_CHANNEL_FD"); v != "5" {
		t.Errorf("NODE_CHANNEL_FD=%q, want 5", v)
	}
}

// inherited are the worker's descriptors that came through exec: those
// without close-on-exec. The worker's own Go runtime opens descriptors
// before any of its code runs (the cgroup files behind GOMAXPROCS, the
// poller's epoll and eventfd), all close-on-exec; a descriptor that
// survived exec cannot have the flag, since exec closes those that do.
func inherited(rep report) []int {
	var fds []int
	for _, fd := range rep.FDs {
		if !rep.CloseOnExec[fd] {
			fds = append(fds, fd)
		}
	}
	return fds
}

// socketLink is how /proc/PID/fd shows the socket behind f.
func socketLink(t *testing.T, f *os.File) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("socket:[%d]", st.Ino)
}

// expectExit waits for the next event, which must be Exited with code.
func expectExit(t *testing.T, rec *recorder, code int) actors.Exited {
	t.Helper()
	ex := expect[actors.Exited](t, rec)
	if ex.Code != code || ex.Signal != 0 {
		t.Errorf("Exited %+v, want code %d and no signal", ex, code)
	}
	return ex
}
