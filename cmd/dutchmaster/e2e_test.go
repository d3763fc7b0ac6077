//go:build linux

package main

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// listeningPIDs waits for n "worker listening" events from index from on
// and returns their pids by worker id.
func listeningPIDs(m *master, from, n int) (map[int]int, int) {
	pids := map[int]int{}
	for range n {
		var e logEvent
		e, from = m.waitFor(from, "worker listening", nil)
		pids[e.num("worker")] = e.num("pid")
	}
	return pids, from
}

// load sends requests to addr with new connections from `clients`
// goroutines until stop is closed or `most` requests were sent, and counts
// the failures.
type load struct {
	ok, failed atomic.Int64
	firstErr   atomic.Value
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startLoad(addr string, clients int, most int64) *load {
	l := &load{stop: make(chan struct{})}
	var sent atomic.Int64
	for range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for sent.Add(1) <= most {
				select {
				case <-l.stop:
					return
				default:
				}
				if _, err := get(addr, "/"); err != nil {
					l.failed.Add(1)
					l.firstErr.CompareAndSwap(nil, err.Error())
				} else {
					l.ok.Add(1)
				}
			}
		}()
	}
	return l
}

func (l *load) finish() { close(l.stop); l.wg.Wait() }

// TestRollingRestart: 2 workers answer on a port; SIGUSR2 replaces every
// pid, no old worker is drained before its replacement listens, and not
// one request fails meanwhile; SIGTERM then stops everything and the
// master exits 0 with no worker left.
func TestRollingRestart(t *testing.T) {
	for _, role := range []string{"worker", "systemd-worker"} {
		t.Run(role, func(t *testing.T) {
			m := startMaster(t, role, []string{"DM_TEST_BOOT=200ms"}, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
			addr := m.address()
			_, next := m.waitFor(0, "cluster ready", nil)
			old, _ := listeningPIDs(m, 0, 2)
			for _, pid := range old {
				if body, err := get(addr, "/"); err != nil || body == "" {
					t.Fatalf("GET / before restart: %q, %v (pid %d)", body, err, pid)
				}
			}

			fresh := restartUnderLoad(t, m, addr, old, next)

			m.stop()
			waitGone(t, values(fresh)...)
		})
	}
}

// restartUnderLoad sends SIGUSR2 while clients hit addr, waits for the
// rollout, and checks what every rolling restart must give: each of the
// old workers (by id → pid) replaced by a new process, gone, never drained
// before a replacement listened, and not one failed request. It returns
// the new workers.
func restartUnderLoad(t *testing.T, m *master, addr string, old map[int]int, next int) map[int]int {
	t.Helper()
	traffic := startLoad(addr, 4, 100000)
	m.signal(syscall.SIGUSR2)
	_, done := m.waitFor(next, "restart complete", nil)
	traffic.finish()

	fresh, _ := listeningPIDs(m, next, len(old))
	for id, pid := range fresh {
		if _, wasOld := old[id]; wasOld {
			t.Errorf("worker %d listened twice", id)
		}
		for _, o := range old {
			if pid == o {
				t.Errorf("pid %d survived the restart", pid)
			}
		}
	}
	waitGone(t, values(old)...)
	checkReplaceBeforeStop(t, m, done)
	if n := traffic.failed.Load(); n != 0 {
		t.Errorf("%d of %d requests failed during the rolling restart; first: %v", n, n+traffic.ok.Load(), traffic.firstErr.Load())
	}
	if traffic.ok.Load() == 0 {
		t.Error("no request succeeded during the restart")
	}
	return fresh
}

func values(m map[int]int) []int {
	var out []int
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// checkReplaceBeforeStop reads the master's log up to index `until`: every
// drain outside a stop comes after the "worker listening" of a worker
// forked later than the drained one (its replacement).
func checkReplaceBeforeStop(t *testing.T, m *master, until int) {
	t.Helper()
	listening := map[int]bool{}
	for _, e := range m.events()[:until] {
		switch e.str("message") {
		case "worker listening":
			listening[e.num("worker")] = true
		case "drain":
			if e.str("reason") == "stop" {
				continue
			}
			replaced := false
			for id := range listening {
				if id > e.num("worker") {
					replaced = true
				}
			}
			if !replaced {
				t.Errorf("worker %d drained before any replacement listened", e.num("worker"))
			}
		}
	}
}

// TestWorkerRequestsRestart: a worker's request-restart replaces only it.
func TestWorkerRequestsRestart(t *testing.T) {
	m := startMaster(t, "worker", nil, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	_, next := m.waitFor(0, "cluster ready", nil)
	pids, _ := listeningPIDs(m, 0, 2)
	body, err := get(addr, "/restart")
	if err != nil {
		t.Fatal(err)
	}
	asker, _ := strconv.Atoi(body)
	e, next := m.waitFor(next, "worker requested restart", nil)
	if e.num("pid") != asker {
		t.Fatalf("restart requested by pid %d, the log says %d", asker, e.num("pid"))
	}
	m.waitFor(next, "restart complete", nil)
	checkOnlyAskerReplaced(t, m, asker, pids)
	m.stop()
}

// checkOnlyAskerReplaced: after the rollout a worker asked for, of the two
// workers (pids, by worker id) only the asker is gone, and one
// replacement was forked.
func checkOnlyAskerReplaced(t *testing.T, m *master, asker int, pids map[int]int) {
	t.Helper()
	waitGone(t, asker)
	for _, pid := range pids {
		if pid != asker && !alive(pid) {
			t.Errorf("pid %d, which did not ask, was stopped", pid)
		}
	}
	if forks := len(m.all("fork")); forks != 3 {
		t.Errorf("%d forks, want 2 at start and 1 replacement", forks)
	}
}

// TestCrashedWorkerIsReplaced: a worker that exits on its own is replaced
// and the cluster keeps answering.
func TestCrashedWorkerIsReplaced(t *testing.T) {
	m := startMaster(t, "worker", nil, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	_, next := m.waitFor(0, "cluster ready", nil)
	_, _ = get(addr, "/crash") // the connection dies with the worker
	e, next := m.waitFor(next, "worker exited", map[string]any{"reason": "code 1"})
	_, next = m.waitFor(next, "fork", map[string]any{"slot": e.num("slot")})
	_, _ = m.waitFor(next, "worker listening", nil)
	if _, err := get(addr, "/"); err != nil {
		t.Fatal(err)
	}
	m.signal(syscall.SIGINT)
	if code := m.wait(); code != 0 {
		t.Fatalf("exit status %d", code)
	}
}

// TestMasterKilled: SIGKILL of the master leaves no worker alive (the
// parent-death signal), and the port can be bound again at once.
func TestMasterKilled(t *testing.T) {
	m := startMaster(t, "worker", nil, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
	m.address()
	m.waitFor(0, "cluster ready", nil)
	pids, _ := listeningPIDs(m, 0, 2)
	m.signal(syscall.SIGKILL)
	m.wait()
	waitGone(t, values(pids)...)
}

// TestSlowRequestFinishesDuringStop: a graceful stop lets an in-flight
// request finish.
func TestSlowRequestFinishesDuringStop(t *testing.T) {
	m := startMaster(t, "worker", nil, "--workers", "1", "--log-worker-output", "--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	_, next := m.waitFor(0, "cluster ready", nil)
	res := make(chan error, 1)
	go func() { _, err := get(addr, "/slow?d=1s"); res <- err }()
	_, next = m.waitFor(next, "slow request started", nil)
	m.signal(syscall.SIGTERM)
	m.waitFor(next, "stopping", nil)
	select {
	case err := <-res:
		if err != nil {
			t.Fatalf("in-flight request failed during the stop: %v", err)
		}
	case <-time.After(patience):
		t.Fatal("in-flight request never answered")
	}
	if code := m.wait(); code != 0 {
		t.Fatalf("exit status %d", code)
	}
}

// TestExampleHello runs the example worker of `make demo` under the
// master: it answers, and a rolling restart replaces it.
func TestExampleHello(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "hello")
	build := exec.Command("go", "build", "-o", bin, "../../examples/hello")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build examples/hello: %v\n%s", err, out)
	}
	m := startMasterCommand(t, []string{bin}, "--workers", "2", "--env", "HELLO_BOOT_DELAY=100ms", "--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	_, next := m.waitFor(0, "cluster ready", nil)
	body, err := get(addr, "/")
	if err != nil || !strings.Contains(body, "generation 1") {
		t.Fatalf("GET /: %q, %v", body, err)
	}
	m.signal(syscall.SIGUSR2)
	m.waitFor(next, "restart complete", nil)
	body, err = get(addr, "/")
	if err != nil || !strings.Contains(body, "generation 2") {
		t.Fatalf("GET / after the restart: %q, %v", body, err)
	}
	m.stop()
}
