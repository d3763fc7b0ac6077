package osproc_test

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/osproc"
	"github.com/dutchmaster/dutchmaster/sockets"
)

// staleProtocolEnv is what a master started by systemd or by Node.js finds
// in its own environment: values meant for the master, wrong for a worker.
var staleProtocolEnv = map[string]string{
	"LISTEN_FDS":                      "9",
	"LISTEN_PID":                      "1",
	"LISTEN_FDNAMES":                  "stale",
	"LISTEN_PIDFDID":                  "42",
	"NOTIFY_SOCKET":                   "/run/systemd/notify",
	"NODE_CHANNEL_FD":                 "99",
	"NODE_CHANNEL_SERIALIZATION_MODE": "advanced",
	"NODE_UNIQUE_ID":                  "7",
	"WATCHDOG_PID":                    "1",
	"WATCHDOG_USEC":                   "1000000",
}

// TestWorkerEnvironment: the worker's environment carries the protocol
// variables with this worker's values (LISTEN_PID its own pid, set by the
// trampoline), its identity, Config.Env over the master's own values, and
// none of the stale protocol variables of the master's environment.
func TestWorkerEnvironment(t *testing.T) {
	for k, v := range staleProtocolEnv {
		t.Setenv(k, v)
	}
	t.Setenv("OSPROC_TEST_OVERRIDE", "master")
	t.Setenv("OSPROC_TEST_INHERITED", "yes")

	web := bind(t, "web=tcp://127.0.0.1:0")
	sock := bind(t, "unix://"+filepath.Join(t.TempDir(), "s.sock")) // unnamed: listen1
	rt := newRuntime(t, osproc.Config{
		Command:   role(t, "report"),
		Listeners: []*sockets.Listener{web, sock},
		Env:       []string{"OSPROC_TEST_OVERRIDE=config", "OSPROC_TEST_EXTRA=a=b"},
	})
	rec, pid := spawn(t, rt, actors.WorkerSpec{ID: 17, Slot: 2, Generation: 3})
	rep := nextReport(t, rec)
	expectExit(t, rec, 0)

	if rep.PID != pid {
		t.Errorf("worker reports pid %d, Spawned said %d", rep.PID, pid)
	}
	want := map[string]string{
		"LISTEN_FDS":                      "2",
		"LISTEN_FDNAMES":                  "web:listen1",
		"LISTEN_PID":                      strconv.Itoa(rep.PID),
		"NODE_CHANNEL_FD":                 "5",
		"NODE_CHANNEL_SERIALIZATION_MODE": "json",
		"NOTIFY_SOCKET":                   rt.NotifySocket(),
		"DUTCHMASTER_WORKER_ID":           "17",
		"DUTCHMASTER_SLOT":                "2",
		"DUTCHMASTER_GENERATION":          "3",
		"OSPROC_TEST_OVERRIDE":            "config",
		"OSPROC_TEST_EXTRA":               "a=b",
		"OSPROC_TEST_INHERITED":           "yes",
	}
	for k, v := range want {
		got, n := envValue(rep.Env, k)
		if n != 1 || got != v {
			t.Errorf("%s=%q (set %d times), want %q once", k, got, n, v)
		}
	}
	for _, k := range []string{"LISTEN_PIDFDID", "NODE_UNIQUE_ID", "WATCHDOG_PID", "WATCHDOG_USEC", "DUTCHMASTER_TRAMPOLINE"} {
		if v, n := envValue(rep.Env, k); n != 0 {
			t.Errorf("%s=%q reached the worker", k, v)
		}
	}
	// Abstract: a master that dies without Close leaves no file.
	if !strings.HasPrefix(rt.NotifySocket(), "@dutchmaster-notify-") {
		t.Errorf("NOTIFY_SOCKET %s, want @dutchmaster-notify-<hex>", rt.NotifySocket())
	}
}

// TestWorkerEnvironmentWithoutListeners: with no listeners there is no
// LISTEN_* at all, not even the master's own stale LISTEN_PID (a receiver
// would otherwise look for sockets that are not there).
func TestWorkerEnvironmentWithoutListeners(t *testing.T) {
	for k, v := range staleProtocolEnv {
		t.Setenv(k, v)
	}
	rt := newRuntime(t, osproc.Config{Command: role(t, "report")})
	rec, _ := spawn(t, rt, actors.WorkerSpec{ID: 1})
	rep := nextReport(t, rec)
	expectExit(t, rec, 0)

	for _, k := range []string{"LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID", "LISTEN_PIDFDID"} {
		if v, n := envValue(rep.Env, k); n != 0 {
			t.Errorf("%s=%q reached a worker without listeners", k, v)
		}
	}
	if v, _ := envValue(rep.Env, "NODE_CHANNEL_FD"); v != "3" {
		t.Errorf("NODE_CHANNEL_FD=%q, want 3 (right after stderr)", v)
	}
	if v, _ := envValue(rep.Env, "NOTIFY_SOCKET"); v != rt.NotifySocket() {
		t.Errorf("NOTIFY_SOCKET=%q, want %q", v, rt.NotifySocket())
	}
}

// TestWorkerEnvironmentHealth: with a watchdog, a worker gets its own
// WATCHDOG_USEC and WATCHDOG_PID (its own pid, which only exists after the
// fork: the trampoline sets it), never the master's; with a request limit,
// DUTCHMASTER_MAX_REQUESTS.
func TestWorkerEnvironmentHealth(t *testing.T) {
	for k, v := range staleProtocolEnv {
		t.Setenv(k, v)
	}
	rt := newRuntime(t, osproc.Config{Command: role(t, "report"), Watchdog: 1500 * time.Millisecond})
	rec, pid := spawn(t, rt, actors.WorkerSpec{ID: 1, MaxRequests: 1042})
	rep := nextReport(t, rec)
	expectExit(t, rec, 0)
	want := map[string]string{
		"WATCHDOG_USEC":            "1500000",
		"WATCHDOG_PID":             strconv.Itoa(pid),
		"DUTCHMASTER_MAX_REQUESTS": "1042",
	}
	for k, v := range want {
		if got, n := envValue(rep.Env, k); n != 1 || got != v {
			t.Errorf("%s=%q (set %d times), want %q once", k, got, n, v)
		}
	}
}
