//go:build linux

package main

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestReplacementNeverReady: a new release that never becomes ready is
// killed at the ready timeout, the rollout is reported aborted, and the
// old workers keep answering throughout.
func TestReplacementNeverReady(t *testing.T) {
	m := startMaster(t, "worker", []string{"DM_TEST_FAIL_GEN=2", "DM_TEST_FAIL=never-ready"},
		"--workers", "2", "--ready-timeout", "1s", "--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	_, next := m.waitFor(0, "cluster ready", nil)
	old, _ := listeningPIDs(m, 0, 2)
	traffic := startLoad(addr, 2, 100000)
	m.signal(syscall.SIGUSR2)
	_, next = m.waitFor(next, "ready timeout", nil)
	e, _ := m.waitFor(next, "rollout aborted", nil)
	traffic.finish()
	if e.str("reason") == "" {
		t.Error("the abort names no reason")
	}
	if n := traffic.failed.Load(); n != 0 || traffic.ok.Load() == 0 {
		t.Errorf("%d requests failed, %d succeeded during the aborted rollout", n, traffic.ok.Load())
	}
	for _, pid := range old {
		if !alive(pid) {
			t.Errorf("old worker %d was stopped", pid)
		}
	}
	if drains := m.all("drain"); len(drains) != 0 {
		t.Errorf("%d drains during an aborted rollout", len(drains))
	}
	m.stop()
}

// TestReplacementCrashesAtStart: the rollout aborts at the first failed
// replacement, with its exit code and last stderr line in the log.
func TestReplacementCrashesAtStart(t *testing.T) {
	m := startMaster(t, "worker", []string{"DM_TEST_FAIL_GEN=2", "DM_TEST_FAIL=crash"},
		"--workers", "2", "--log-worker-output", "--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	_, next := m.waitFor(0, "cluster ready", nil)
	old, _ := listeningPIDs(m, 0, 2)
	m.signal(syscall.SIGUSR2)
	e, _ := m.waitFor(next, "rollout aborted", nil)
	if got := e.str("reason"); got != "exited before ready: code 1: worker: failing at start on purpose" {
		t.Errorf("abort reason %q: want the exit code and the last stderr line", got)
	}
	if forks := len(m.all("fork")); forks != 3 {
		t.Errorf("%d forks: want 2 at start and the one failed replacement", forks)
	}
	if _, err := get(addr, "/"); err != nil {
		t.Fatal(err)
	}
	for _, pid := range old {
		if !alive(pid) {
			t.Errorf("old worker %d was stopped", pid)
		}
	}
	m.stop()
}

// TestOldWorkerIgnoresStopSignal: a worker that ignores SIGTERM is killed
// at the kill timeout, counted from its drain.
func TestOldWorkerIgnoresStopSignal(t *testing.T) {
	m := startMaster(t, "systemd-worker", []string{"DM_TEST_FAIL_GEN=1", "DM_TEST_FAIL=ignore-term"},
		"--workers", "1", "--kill-timeout", "1s", "--listen", "http=tcp://127.0.0.1:0")
	m.address()
	_, next := m.waitFor(0, "cluster ready", nil)
	m.signal(syscall.SIGUSR2)
	d, next := m.waitFor(next, "drain", nil)
	k, next := m.waitFor(next, "kill timeout", map[string]any{"worker": d.num("worker")})
	m.waitFor(next, "worker exited", map[string]any{"worker": d.num("worker"), "reason": "killed SIGKILL"})
	if took := logTime(t, k).Sub(logTime(t, d)); took < time.Second {
		t.Errorf("killed %s after its drain, before the 1s kill timeout", took)
	}
	m.waitFor(next, "restart complete", nil)
	m.stop()
}

// TestCrashLoopBacksOff: a worker that always dies is re-forked with
// exponential backoff: over a few seconds the forks stay few, the slot is
// flagged as flapping, and the master keeps running.
func TestCrashLoopBacksOff(t *testing.T) {
	m := startMaster(t, "worker", []string{"DM_TEST_FAIL_GEN=1", "DM_TEST_FAIL=crash"},
		"--workers", "1", "--backoff", "200ms", "--backoff-max", "10s", "--listen", "http=tcp://127.0.0.1:0")
	m.address()
	_, next := m.waitFor(0, "slot flapping: its workers keep failing", nil)
	// Forks 1 and 2 come at once, then 200ms, 400ms, 800ms, 1.6s ... apart:
	// the sixth fork is at least 3s after the first.
	e, _ := m.waitFor(next, "fork", map[string]any{"worker": 6})
	first, _ := m.waitFor(0, "fork", map[string]any{"worker": 1})
	if gap := logTime(t, e).Sub(logTime(t, first)); gap < 3*time.Second {
		t.Errorf("6 forks within %s: the backoff does not hold", gap)
	}
	m.stop()
}

// TestRestartBurst: 20 restart signals sent at once coalesce: at most two
// rollouts, ending on workers forked after the last signal, with at most
// one extra rollout's worth of forks.
func TestRestartBurst(t *testing.T) {
	m := startMaster(t, "worker", []string{"DM_TEST_BOOT=300ms"}, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
	m.address()
	_, next := m.waitFor(0, "cluster ready", nil)
	var last logEvent
	for range 20 {
		m.signal(syscall.SIGUSR2)
		// Signals of one kind that are pending together merge into one
		// (the kernel keeps one pending bit per signal): each is sent once
		// the master has taken the one before, still well inside the
		// first rollout's boot.
		last, next = m.waitFor(next, "signal received", nil)
	}
	done, _ := m.waitFor(next, "restart complete", nil)
	final := done.num("generation")
	rollouts := len(m.all("restart requested"))
	if rollouts > 2 {
		t.Errorf("%d rollouts for one burst, want at most 2", rollouts)
	}
	if c := len(m.all("restart requested during rollout: coalesced")); c+rollouts != 20 {
		t.Errorf("%d coalesced + %d rollouts: 20 signals were not all counted", c, rollouts)
	}
	finalForks := 0
	for _, f := range m.all("fork") {
		if f.num("generation") == final {
			finalForks++
			if logTime(t, f).Before(logTime(t, last)) {
				t.Errorf("worker %d of the final generation was forked before the last signal", f.num("worker"))
			}
		}
	}
	if finalForks != 2 {
		t.Errorf("%d workers of the final generation %d, want 2", finalForks, final)
	}
	if forks := len(m.all("fork")); forks > 2+2*2 {
		t.Errorf("%d forks: more than one extra rollout's worth", forks)
	}
	m.stop()
}

// TestScaleSignals: SIGTTIN adds a worker, SIGTTOU drains the oldest.
func TestScaleSignals(t *testing.T) {
	m := startMaster(t, "worker", nil, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
	m.address()
	_, next := m.waitFor(0, "cluster ready", nil)
	m.signal(syscall.SIGTTIN)
	_, next = m.waitFor(next, "scale", map[string]any{"from": 2, "to": 3})
	_, next = m.waitFor(next, "worker listening", map[string]any{"worker": 3})
	m.signal(syscall.SIGTTOU)
	_, next = m.waitFor(next, "scale", map[string]any{"from": 3, "to": 2})
	_, next = m.waitFor(next, "drain", map[string]any{"reason": "scale down", "worker": 1})
	m.waitFor(next, "worker exited", map[string]any{"worker": 1})
	m.stop()
}

// TestConfigReload: every rolling restart re-reads --config; an invalid
// file (bad YAML, a bad log level) refuses the restart and leaves the
// workers alone; a new log level is said to wait for a new master.
func TestConfigReload(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "dutchmaster.yaml")
	writeFile(t, cfg, "workers: 1\n", 0o644)
	m := startMaster(t, "worker", nil, "--config", cfg, "--listen", "http=tcp://127.0.0.1:0")
	m.address()
	_, next := m.waitFor(0, "cluster ready", map[string]any{"workers": 1})

	writeFile(t, cfg, "workers: [broken\n", 0o644)
	m.signal(syscall.SIGUSR2)
	_, next = m.waitFor(next, "restart refused: the configuration does not load; the workers are left as they are", nil)
	if forks := len(m.all("fork")); forks != 1 {
		t.Fatalf("%d forks after a refused restart", forks)
	}

	writeFile(t, cfg, "workers: 1\nlog-level: loud\n", 0o644)
	m.signal(syscall.SIGUSR2)
	_, next = m.waitFor(next, "restart refused: the configuration does not load; the workers are left as they are", nil)
	if forks := len(m.all("fork")); forks != 1 {
		t.Fatalf("%d forks after a refused restart", forks)
	}

	writeFile(t, cfg, "workers: 2\npolicy: blue-green\nlog-level: debug\n", 0o644)
	m.signal(syscall.SIGUSR2)
	_, next = m.waitFor(next, "log-format and log-level change only with a new master; keeping the current ones",
		map[string]any{"log_level": "debug"})
	_, next = m.waitFor(next, "configuration reloaded", map[string]any{"policy": "blue-green"})
	m.waitFor(next, "restart complete", nil)
	listening := 0
	for _, e := range m.all("worker listening") {
		if e.num("generation") == 2 {
			listening++
		}
	}
	if listening != 2 {
		t.Errorf("%d workers of the new generation, want the 2 of the new file", listening)
	}
	m.stop()
}

// logTime is the time of a log event.
func logTime(t *testing.T, e logEvent) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, e.str("time"))
	if err != nil {
		t.Fatalf("log time %q: %v", e.str("time"), err)
	}
	return ts
}
