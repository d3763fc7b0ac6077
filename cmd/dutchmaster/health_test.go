package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster/cmd/internal/loadtest"
)

// healthLoad is a short closed-loop load on the cluster, bounded in count
// and time.
func healthLoad(addr string, timeout time.Duration) *loadtest.Load {
	return loadtest.Start(loadtest.Spec{Addr: addr, Clients: 4, Mode: loadtest.ModeClose, Timeout: timeout,
		MaxRequests: 200000, Deadline: time.Now().Add(2 * patience)})
}

// TestWatchdogHungWorker: a Go worker (sockets/worker) whose handlers all
// block stops heartbeating; the master forks its successor, and once that
// one listens aborts it (SIGABRT), its stacks in the log. Requests that
// reach the other workers all succeed throughout: every failed request is
// one that the hung worker took.
func TestWatchdogHungWorker(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	m := startMaster(t, "worker", nil, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0",
		"--watchdog", "1500ms", "--log-worker-output", "--control", sock)
	addr := m.address()
	m.waitFor(0, "cluster ready", nil)
	// ctl status shows each worker's heartbeat age and memory.
	deadline := time.Now().Add(patience)
	for beating := 0; beating < 2; {
		if time.Now().After(deadline) {
			t.Fatal("ctl status shows no heartbeat for the workers")
		}
		beating = 0
		for _, w := range status(t, sock).Workers {
			if w.HeartbeatAge != nil && w.RSS > 0 {
				beating++
				t.Logf("w%d: rss %d, heartbeat %.2fs ago", w.ID, w.RSS, *w.HeartbeatAge)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	load := healthLoad(addr, 3*time.Second)
	defer load.Finish()
	if !load.WaitDone(200, patience) {
		t.Fatal("the load made no progress")
	}

	go get(addr, "/hang") // never answered: the worker that takes it hangs
	hungRequest, _ := m.waitFor(0, "hung request", nil)
	hungPID := hungRequest.num("pid")
	missed, next := m.waitFor(0, "worker hung: forking its successor, then aborting it", nil)
	if missed.num("pid") != hungPID && hungPID != 0 {
		t.Fatalf("worker pid %d found hung, but pid %d took /hang", missed.num("pid"), hungPID)
	}
	hungID := missed.num("worker")
	fork, _ := m.waitFor(next, "fork", map[string]any{"slot": missed.num("slot")})
	_, listened := m.waitFor(next, "worker listening", map[string]any{"worker": fork.num("worker")})
	abort, aborted := m.waitFor(next, "abort", map[string]any{"worker": hungID})
	if abort.str("reason") != "hung; w"+strconv.Itoa(fork.num("worker"))+" serves its slot" {
		t.Errorf("abort reason %q, want the successor's name", abort.str("reason"))
	}
	if aborted < listened {
		t.Error("the hung worker was aborted before its successor listened")
	}
	exited, _ := m.waitFor(next, "worker exited", map[string]any{"worker": hungID})
	// A Go program dies of SIGABRT by writing its stacks and exiting 2.
	if r := exited.str("reason"); !strings.HasPrefix(r, "signal SIGABRT") && !strings.HasPrefix(r, "code 2") {
		t.Errorf("hung worker's exit: %q, want its death by SIGABRT", r)
	}
	if len(m.all("SIGABRT: abort")) == 0 {
		t.Error("the hung worker's stacks are not in the log")
	}

	// The load goes on against the two healthy workers.
	mark := load.DoneCount()
	if !load.WaitDone(mark+200, patience) {
		t.Fatal("the load made no progress after the abort")
	}
	load.Finish()
	took := len(m.all("hung request"))
	if failed := load.FailedCount(); failed > took {
		t.Errorf("%d requests failed, but only %d reached the hung worker: %+v", failed, took, load.Failures)
	}
	if len(load.Samples) == 0 {
		t.Fatal("no request succeeded")
	}
	if n := len(m.all("worker hung: forking its successor, then aborting it")); n != 1 {
		t.Errorf("%d workers found hung, want 1 (the healthy ones beat)", n)
	}
	m.stop()
}

// TestMaxMemoryRecycle: a worker whose memory grows past --max-memory is
// replaced, its successor listening first, while a load sees no failed
// request.
func TestMaxMemoryRecycle(t *testing.T) {
	m := startMaster(t, "worker", nil, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0",
		"--max-memory", "120M", "--memory-interval", "100ms", "--max-memory-jitter", "200ms")
	addr := m.address()
	m.waitFor(0, "cluster ready", nil)
	load := healthLoad(addr, 10*time.Second)
	defer load.Finish()
	if !load.WaitDone(200, patience) {
		t.Fatal("the load made no progress")
	}
	body, err := get(addr, "/grow?mb=160")
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(body)
	if err != nil {
		t.Fatalf("/grow answered %q", body)
	}
	due, next := m.waitFor(0, "worker due for recycling", map[string]any{"pid": float64(pid), "cause": "memory"})
	id := due.num("worker")
	m.waitFor(next, "recycling worker", map[string]any{"worker": id})
	m.waitFor(next, "drain", map[string]any{"worker": id})
	m.waitFor(next, "worker exited", map[string]any{"worker": id})
	waitGone(t, pid)
	mark := load.DoneCount()
	if !load.WaitDone(mark+200, patience) {
		t.Fatal("the load made no progress after the recycle")
	}
	load.Finish()
	if failed := load.FailedCount(); failed != 0 {
		t.Errorf("%d of %d requests failed during the recycle: %+v", failed, load.DoneCount(), load.Failures)
	}
	if n := len(m.all("recycling worker")); n != 1 {
		t.Errorf("%d recycles, want 1 (the other worker stays under the limit)", n)
	}
	m.stop()
}

// TestMaxMemoryRecycleBackoff: a worker over --max-memory from its start
// is replaced by one just like it; its recycles back off as a crash loop
// does (no recycle before the backoff the master logged has passed), and
// the slot is flagged as flapping.
func TestMaxMemoryRecycleBackoff(t *testing.T) {
	m := startMaster(t, "worker", []string{"DM_TEST_BALLAST_MB=160"}, "--workers", "1", "--listen", "http=tcp://127.0.0.1:0",
		"--max-memory", "120M", "--memory-interval", "100ms", "--max-memory-jitter", "1ms",
		"--backoff", "1s", "--backoff-max", "2s")
	m.waitFor(0, "cluster ready", nil)
	var last time.Time
	next := 0
	for i := 1; i <= 3; i++ {
		var backoff time.Duration
		if i > 1 {
			// The failure before this recycle set the slot's backoff.
			e, _, err := m.WaitFor(next, "worker over its memory limit from its start: its recycles back off", nil, patience)
			if err != nil {
				t.Fatal(err)
			}
			if b, _, err := m.WaitFor(next, "slot backing off", nil, patience); err == nil && b.Time.Sub(e.Time) < time.Second {
				backoff, _ = time.ParseDuration(b.Str("delay"))
			}
		}
		e, n, err := m.WaitFor(next, "recycling worker", map[string]any{"cause": "memory"}, patience)
		if err != nil {
			t.Fatal(err)
		}
		if i > 1 && e.Time.Sub(last) < backoff {
			t.Errorf("recycle %d came %s after the one before, within the backoff of %s", i, e.Time.Sub(last), backoff)
		}
		if i > 1 && backoff == 0 {
			t.Errorf("recycle %d: no backoff logged before it", i)
		}
		last, next = e.Time, n
	}
	m.waitFor(0, "slot flapping: its workers keep failing", nil)
	m.stop()
}

// TestMaxRequestsRecycle: a Go worker given DUTCHMASTER_MAX_REQUESTS
// counts its requests and asks for its recycle; the workers are replaced
// one at a time, each successor listening first, and the load sees no
// failed request.
func TestMaxRequestsRecycle(t *testing.T) {
	m := startMaster(t, "worker", nil, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0",
		"--max-requests", "300", "--max-requests-jitter", "100")
	addr := m.address()
	m.waitFor(0, "cluster ready", nil)
	load := healthLoad(addr, 10*time.Second)
	defer load.Finish()
	first, next := m.waitFor(0, "recycling worker", map[string]any{"cause": "max-requests"})
	m.waitFor(next, "drain", map[string]any{"worker": first.num("worker")})
	m.waitFor(next, "worker exited", map[string]any{"worker": first.num("worker")})
	m.waitFor(next, "recycling worker", map[string]any{"cause": "max-requests"})
	load.Finish()
	if failed := load.FailedCount(); failed != 0 {
		t.Errorf("%d of %d requests failed during the recycles: %+v", failed, load.DoneCount(), load.Failures)
	}
	// Never two at once: each recycle began after the one before ended.
	var running int
	for _, e := range m.events() {
		switch e.str("message") {
		case "recycling worker":
			if running++; running > 1 {
				t.Fatal("two recycles at once")
			}
		case "worker exited":
			if e.str("was") == "draining" {
				running = max(running-1, 0)
			}
		}
	}
	m.stop()
}

// TestRecordReplayHealth: the journal of a master with a watchdog and
// recycling records the heartbeats, the memory samples and the seed of the
// jitter, and `dutchmaster replay` reproduces every decision, the limits
// drawn at each fork and the recycle included.
func TestRecordReplayHealth(t *testing.T) {
	journal := filepath.Join(t.TempDir(), "health.jsonl")
	m := startMaster(t, "worker", nil, "--record", journal, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0",
		"--watchdog", "3s", "--max-memory", "120M", "--memory-interval", "100ms", "--max-memory-jitter", "300ms",
		"--max-lifetime", "1h", "--max-requests", "100000")
	addr := m.address()
	m.waitFor(0, "cluster ready", nil)
	if _, err := get(addr, "/grow?mb=160"); err != nil {
		t.Fatal(err)
	}
	m.waitFor(0, "restart complete", map[string]any{"source": "recycle memory"})
	m.stop()
	data, err := os.ReadFile(journal)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"seed":`, `"type":"WorkerHeartbeat"`, `"type":"UsageSampled"`, `"type":"Recycled"`,
		`"max_requests":`, `"kind":"lifetime"`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("journal lacks %s", want)
		}
	}
	if r := runDutchmaster(t, 0, "replay", journal); r.code != 0 || !strings.HasPrefix(r.stdout, journal+": the same decisions: ") {
		t.Fatalf("replay: %s", r)
	}
}
