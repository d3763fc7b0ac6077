package main

import (
	"testing"
)

// TestNodeWatchdogBlockedEventLoop: an unmodified Node.js app (no line of
// it knows of a watchdog) whose handler blocks its event loop for ever on
// one request is found hung by --watchdog (the preload module's heartbeats
// come from the event loop, so they stop), replaced, and once its
// successor listens, aborted; the other worker, beating all along, is not
// touched, and the app answers on the new worker.
func TestNodeWatchdogBlockedEventLoop(t *testing.T) {
	m, addr, pids, next := clusterApp(t, 2, "--watchdog", "1s", "--log-worker-output")
	go get(addr, "/block") // never answered: the worker that takes it blocks
	blocking, _ := m.waitFor(next, "blocking the event loop", nil)
	hungID := blocking.num("worker")
	missed, after := m.waitFor(next, "worker hung: forking its successor, then aborting it", nil)
	if missed.num("worker") != hungID {
		t.Fatalf("w%d found hung, but w%d blocked its event loop", missed.num("worker"), hungID)
	}
	blocked := missed.num("pid")
	fork, _ := m.waitFor(after, "fork", map[string]any{"slot": missed.num("slot")})
	_, listened := m.waitFor(after, "worker listening", map[string]any{"worker": fork.num("worker")})
	_, aborted := m.waitFor(after, "abort", map[string]any{"worker": hungID})
	if aborted < listened {
		t.Error("the blocked worker was aborted before its successor listened")
	}
	m.waitFor(after, "worker exited", map[string]any{"worker": hungID})
	waitGone(t, blocked)

	// Both live workers answer: the one that never stopped beating, and
	// the successor.
	var healthy int
	for _, pid := range pids {
		if pid != blocked {
			healthy = pid
		}
	}
	answered := pidsAnswering(t, addr, 2, 400)
	if !answered[healthy] || answered[blocked] || len(answered) != 2 {
		t.Errorf("pids answering after the abort: %v; want pid %d and the successor, not %d", answered, healthy, blocked)
	}
	if n := len(m.all("worker hung: forking its successor, then aborting it")); n != 1 {
		t.Errorf("%d workers found hung, want 1 (the other beats from its event loop)", n)
	}
	m.stop()
}
