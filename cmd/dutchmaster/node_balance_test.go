package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster/cmd/internal/loadtest"
	"github.com/dutchmaster/dutchmaster/sockets/reuseport"
)

// The tests of this file run Node.js cluster workers (testdata/
// cluster-balance.js, a plain http.createServer app) in the kernel and
// round-robin balance modes, with the real node, and count where the
// connections land.

// nodeBalanceApp starts a master with 4 workers of cluster-balance.js in
// balance mode `mode` on a free loopback port, waits until the cluster is
// ready and checks the balance line. It returns the master, the address,
// the workers' pids by id and the log index after "cluster ready".
func nodeBalanceApp(t *testing.T, mode string) (m *master, addr string, pids map[int]int, next int) {
	t.Helper()
	addr = freeTCP(t)
	_, port, _ := net.SplitHostPort(addr)
	m = startMasterCommand(t, []string{nodeBinary(t), "testdata/cluster-balance.js"}, "--workers", "4", "--balance", mode,
		"--log-worker-output", "--env", "HOST=127.0.0.1", "--env", "PORT="+port)
	_, next = m.waitFor(0, "cluster ready", nil)
	pids, _ = listeningPIDs(m, 0, 4)
	if e := balanceLine(t, m); e.str("balance") != mode {
		t.Fatalf("balance line %v, want %s", e, mode)
	}
	return m, addr, pids, next
}

// checkSpread opens 16 keep-alive connections together and checks that
// every worker got some and none more than 5 (a fair share is 4; round-
// robin allows 1.25 × that), and that no other pid answered.
func checkSpread(t *testing.T, addr string, workers map[int]int) {
	t.Helper()
	perPID := map[int]int{}
	for _, pid := range keepAlivePIDs(t, addr, 16) {
		perPID[pid]++
	}
	for id, pid := range workers {
		if n := perPID[pid]; n == 0 || n > 5 {
			t.Errorf("worker %d (pid %d) got %d of 16 connections, want 1 to 5 (per pid %v)", id, pid, n, perPID)
		}
	}
	if len(perPID) != len(workers) {
		t.Errorf("answers came from %d pids, want the %d workers: %v", len(perPID), len(workers), perPID)
	}
}

// restartsUnderKeepAlive runs `restarts` rolling restarts, one after the
// other, under keep-alive clients that never retry (loadtest's), and
// expects not one failed request. It returns the last workers and the log
// index after the last "restart complete".
func restartsUnderKeepAlive(t *testing.T, m *master, addr string, restarts int, old map[int]int, next int) (map[int]int, int) {
	t.Helper()
	load := loadtest.Start(loadtest.Spec{Addr: addr, Clients: 4, Mode: loadtest.ModeKeepAlive, Timeout: 10 * time.Second,
		MaxRequests: 1 << 30, Deadline: time.Now().Add(2 * time.Minute)})
	if !load.WaitDone(50, patience) {
		load.Finish()
		t.Fatalf("the load did not get going: %d requests, %d failed", load.DoneCount(), load.FailedCount())
	}
	for range restarts {
		m.signal(syscall.SIGUSR2)
		_, done := m.waitFor(next, "restart complete", nil)
		fresh, _ := listeningPIDs(m, next, len(old))
		waitGone(t, values(old)...)
		old, next = fresh, done
	}
	load.Finish()
	if len(load.Failures) != 0 {
		t.Errorf("%d of %d keep-alive requests failed across %d rolling restarts; first: %+v", len(load.Failures), load.DoneCount(), restarts, load.Failures[0])
	}
	if len(load.Samples) < 100 {
		t.Errorf("only %d requests succeeded: no load to speak of", len(load.Samples))
	}
	return old, next
}

// noNewconnWhileDraining: no worker printed that it was handed a
// connection after its server was closed.
func noNewconnWhileDraining(t *testing.T, m *master) {
	t.Helper()
	if n := len(m.all("newconn while not listening")); n != 0 {
		t.Errorf("%d connections were handed to a worker whose server was closed", n)
	}
}

// TestNodeBalanceRoundRobin: with --balance round-robin the master hands
// the connections over: 16 keep-alive connections opened together land on
// every one of 4 workers, none on more than 5; two rolling restarts under
// keep-alive clients that never retry fail no request; a worker that
// drains (held by a request in flight) gets no new connection.
func TestNodeBalanceRoundRobin(t *testing.T) {
	m, addr, pids, next := nodeBalanceApp(t, "round-robin")
	checkSpread(t, addr, pids)
	pids, next = restartsUnderKeepAlive(t, m, addr, 2, pids, next)
	checkSpread(t, addr, pids)

	// One worker asks for its replacement and holds a request, on one
	// keep-alive connection: it drains but cannot leave until the request
	// ends. New connections meanwhile go to the others only.
	c, err := net.DialTimeout("tcp", addr, patience)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	busy, err := loadtest.AskPID(c, "/restart", false)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "release")
	held := make(chan error, 1)
	go func() {
		_, err := loadtest.AskPID(c, "/hold?file="+file, false)
		held <- err
	}()
	e, next := m.waitFor(next, "hold request started", nil)
	if pids[e.num("worker")] != busy {
		t.Fatalf("the held request went to worker %d, not to pid %d (workers %v)", e.num("worker"), busy, pids)
	}
	_, next = m.waitFor(next, "drain", map[string]any{"worker": e.num("worker")})
	perPID := map[int]int{}
	for _, pid := range keepAlivePIDs(t, addr, 16) {
		perPID[pid]++
	}
	if perPID[busy] != 0 || len(perPID) != 4 {
		t.Errorf("with pid %d draining, 16 new connections went to %v: want none on it, some on each of the 4 others", busy, perPID)
	}
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := <-held; err != nil {
		t.Errorf("the held request: %v", err)
	}
	m.waitFor(next, "restart complete", nil)
	waitGone(t, busy)
	noNewconnWhileDraining(t, m)
	m.stop()
}

// TestNodeBalanceKernel: with --balance kernel each Node.js worker gets
// its slot's socket: 16 keep-alive connections opened together land on
// every one of 4 workers, none on more than 5, and two rolling restarts
// (a replacement takes over its slot's socket) under keep-alive clients
// that never retry fail no request.
func TestNodeBalanceKernel(t *testing.T) {
	if err := reuseport.Available(); err != nil {
		t.Fatalf("the socket-selection program cannot be loaded here (it needs CAP_BPF): %v", err)
	}
	m, addr, pids, next := nodeBalanceApp(t, "kernel")
	checkSpread(t, addr, pids)
	pids, _ = restartsUnderKeepAlive(t, m, addr, 2, pids, next)
	checkSpread(t, addr, pids)
	m.stop()
	waitGone(t, values(pids)...)
}

// TestNodeBalanceChoice: Node.js cluster workers under auto take
// round-robin where the program cannot be loaded, saying why; round-robin
// for fds workers refuses the start with one line.
func TestNodeBalanceChoice(t *testing.T) {
	via := withoutBPF(t)
	addr := freeTCP(t)
	_, port, _ := net.SplitHostPort(addr)
	m := startMasterVia(t, via, []string{nodeBinary(t), "testdata/cluster-balance.js"}, "--workers", "2",
		"--env", "HOST=127.0.0.1", "--env", "PORT="+port)
	m.waitFor(0, "cluster ready", nil)
	fellBackTo(t, m, "round-robin", addr)

	m = startMaster(t, "worker", nil, "--control", "none", "--balance", "round-robin", "--listen", "http=tcp://127.0.0.1:0")
	if code := m.wait(); code != exitUsage {
		t.Errorf("--balance round-robin for fds workers: exit %d, want %d", code, exitUsage)
	}
	if log := strings.TrimSpace(m.Log()); !strings.Contains(log, "--balance round-robin: only for Node.js cluster workers") || strings.Count(log, "\n") > 1 {
		t.Errorf("the refusal is not one line naming the option:\n%s", log)
	}
}
