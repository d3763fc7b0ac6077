package sdnotify

import (
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/scenarios"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sent collects notifications in order.
type sent chan string

func (s sent) send(state string) error {
	s <- state
	return nil
}

// next waits for the next n notifications, with MONOTONIC_USEC's value
// replaced by N and newlines by "|".
func (s sent) next(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	for range n {
		select {
		case st := <-s:
			lines := strings.Split(st, "\n")
			for j, l := range lines {
				if v, ok := strings.CutPrefix(l, "MONOTONIC_USEC="); ok {
					if n, err := strconv.ParseInt(v, 10, 64); err != nil || n <= 0 {
						lines[j] = "MONOTONIC_USEC=invalid " + v
					} else {
						lines[j] = "MONOTONIC_USEC=N"
					}
				}
			}
			out = append(out, strings.Join(lines, "|"))
		case <-time.After(10 * time.Second):
			t.Fatalf("got %q, then nothing for 10s", out)
		}
	}
	return out
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestNotifySequence: READY=1 once the first generation listens;
// RELOADING=1 (with MONOTONIC_USEC) then READY=1 around a rolling restart,
// whether it completes or aborts; a worker's own replacement changes
// STATUS only; STOPPING=1 at the stop.
func TestNotifySequence(t *testing.T) {
	s := make(sent, 100)
	n := newNotifier(zerolog.Nop(), s.send)
	d := scenarios.NewDriver()
	defer d.Close()
	// Each check takes as many notifications as it expects: one that
	// should not have been sent shows up, out of place, in the next check.
	check := func(step string, want ...string) {
		t.Helper()
		if got := s.next(t, len(want)); !slices.Equal(got, want) {
			t.Fatalf("%s:\n got %q\nwant %q", step, got, want)
		}
	}
	d.Start(actors.Options{Logger: zerolog.Nop(), Observe: n.Observe, Workers: func() int { return 2 }},
		func(o actors.Options) scenarios.Host { return scenarios.NewSyncHost(o) })
	must(t, d.SettleWorkers())
	check("first generation ready", "READY=1|STATUS=ready: 2 workers, generation 1")

	must(t, d.Signal(syscall.SIGUSR2))
	check("restart", "RELOADING=1|MONOTONIC_USEC=N|STATUS=restarting: rolling to generation 2 (SIGUSR2), 2 workers")
	must(t, d.SettleWorkers())
	check("restart done", "READY=1|STATUS=ready: 2 workers, generation 2; restart complete")

	must(t, d.Deliver(3, actors.IPC{Line: []byte(`{"event":"request-restart"}`)}))
	must(t, d.SettleWorkers())
	check("worker's own replacement",
		"STATUS=ready: 2 workers, generation 2; replacing workers on their request",
		"STATUS=ready: 2 workers, generation 2; restart complete")

	must(t, d.Signal(syscall.SIGUSR2))
	v := d.Host.View()
	must(t, d.Deliver(v.Workers[len(v.Workers)-1].ID, actors.Exited{Code: 1}))
	check("aborted restart",
		"RELOADING=1|MONOTONIC_USEC=N|STATUS=restarting: rolling to generation 3 (SIGUSR2), 2 workers",
		"READY=1|STATUS=ready: 2 workers, generation 3; restart aborted: exited before ready: code 1")

	must(t, d.Signal(syscall.SIGTTIN))
	check("scale", "STATUS=ready: 3 workers, generation 3; scaled")
	must(t, d.SettleWorkers())

	must(t, d.Signal(syscall.SIGTERM))
	must(t, d.SettleWorkers())
	check("stop", "STOPPING=1|STATUS=stopping (SIGTERM): draining the workers", "STATUS=stopped")
	n.Close()
	n.Observe(time.Now(), core.StopRequested{}, nil) // after Close: nothing, no panic
	if len(s) != 0 {
		t.Fatalf("unexpected notifications: %q", s.next(t, len(s)))
	}
}

// TestReadyFact pins the core's fact that READY=1 waits for: Ready, once,
// at the step where the first generation listens.
func TestReadyFact(t *testing.T) {
	c := core.New(core.Config{})
	now := time.Now()
	inputs := []core.Input{core.Start{Target: 2}, core.WorkerSpawned{Worker: 1, PID: 10}, core.WorkerSpawned{Worker: 2, PID: 11},
		core.WorkerListening{Worker: 1}, core.WorkerListening{Worker: 2}, // ready here
		core.RestartRequested{Source: "test", Target: 2}, core.WorkerListening{Worker: 3}}
	var got []string
	for i, in := range inputs {
		for _, d := range c.Step(now, in) {
			if r, ok := d.(core.Ready); ok {
				got = append(got, fmt.Sprintf("step %d: %+v", i, r))
			}
		}
	}
	if want := []string{"step 4: {Generation:1 Workers:2}"}; !slices.Equal(got, want) {
		t.Fatalf("Ready facts %q, want %q", got, want)
	}
}

// TestNotifierSends: with NOTIFY_SOCKET set, notifications arrive as
// datagrams on that socket, as systemd would read them.
func TestNotifierSends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	n := NewNotifier(zerolog.Nop())
	if n == nil {
		t.Fatal("no notifier with NOTIFY_SOCKET set")
	}
	n.Observe(time.Now(), core.StopRequested{Source: "SIGTERM"}, nil)
	n.Close()
	buf := make([]byte, 4096)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	nb, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:nb]); !strings.HasPrefix(got, "STOPPING=1\n") {
		t.Fatalf("got %q", got)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if NewNotifier(zerolog.Nop()) != nil {
		t.Fatal("a notifier without NOTIFY_SOCKET")
	}
}

// TestListenFDs: the variables are taken only when LISTEN_PID is this
// process, and unset in every case.

// TestUpgradeNotifications: around an in-place upgrade, Reloading sends
// RELOADING=1 (with MONOTONIC_USEC) before it returns, since an exec
// follows; Ready (the exec failed) sends READY=1, but not while a rolling
// restart is under way, whose end sends it; in the new image, Resumed
// takes the resumed cluster's view (a new Notifier knows nothing) and
// behaves alike. Before the first generation is ready both are silent.
func TestUpgradeNotifications(t *testing.T) {
	s := make(sent, 100)
	old := newNotifier(zerolog.Nop(), s.send)
	cur := old // the image the cluster's steps reach
	d := scenarios.NewDriver()
	defer d.Close()
	check := func(step string, want ...string) {
		t.Helper()
		if got := s.next(t, len(want)); !slices.Equal(got, want) {
			t.Fatalf("%s:\n got %q\nwant %q", step, got, want)
		}
	}
	none := func(step string) {
		t.Helper()
		if len(s) != 0 {
			t.Fatalf("%s: unexpected %q", step, s.next(t, len(s)))
		}
	}
	old.Reloading()
	old.Ready()
	none("before ready")

	d.Start(actors.Options{Logger: zerolog.Nop(), Observe: func(now time.Time, in core.Input, out []core.Decision) { cur.Observe(now, in, out) },
		Workers: func() int { return 2 }},
		func(o actors.Options) scenarios.Host { return scenarios.NewSyncHost(o) })
	must(t, d.SettleWorkers())
	check("first generation ready", "READY=1|STATUS=ready: 2 workers, generation 1")

	old.Reloading()
	if len(s) != 1 {
		t.Fatalf("Reloading returned with %d notifications sent, want RELOADING=1 sent", len(s))
	}
	check("upgrade", "RELOADING=1|MONOTONIC_USEC=N|STATUS=upgrading the master")
	old.Ready()
	check("exec failed", "READY=1|STATUS=ready: 2 workers, generation 1")

	// An upgrade during a rolling restart: the unit stays reloading until
	// the rollout ends, in the old image (exec failed) as in the new one.
	must(t, d.Signal(syscall.SIGUSR2))
	check("restart", "RELOADING=1|MONOTONIC_USEC=N|STATUS=restarting: rolling to generation 2 (SIGUSR2), 2 workers")
	old.Reloading()
	check("upgrade during the restart", "RELOADING=1|MONOTONIC_USEC=N|STATUS=upgrading the master")
	old.Ready()
	none("exec failed during the restart")

	cur = newNotifier(zerolog.Nop(), s.send)
	cur.Resumed(d.Host.View())
	none("resumed during the restart")
	must(t, d.SettleWorkers())
	check("restart done in the new image", "READY=1|STATUS=ready: 2 workers, generation 2; restart complete")

	old.Close()
	old = cur
	old.Reloading()
	check("second upgrade", "RELOADING=1|MONOTONIC_USEC=N|STATUS=upgrading the master")
	cur = newNotifier(zerolog.Nop(), s.send)
	cur.Resumed(d.Host.View())
	check("resumed", "READY=1|STATUS=ready: 2 workers, generation 2; master upgraded")
	old.Close()

	must(t, d.Signal(syscall.SIGTERM))
	must(t, d.SettleWorkers())
	check("stop in the new image", "STOPPING=1|STATUS=stopping (SIGTERM): draining the workers", "STATUS=stopped")
	cur.Reloading()
	cur.Ready()
	cur.Close()
	none("after the stop")
}
