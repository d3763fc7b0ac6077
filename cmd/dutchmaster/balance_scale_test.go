//go:build linux

package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// persistentLoad sends requests to addr over keep-alive connections, one
// client each, until finish, and counts the failures: a request on a
// connection whose worker left is retried by the client on a new one, as
// any HTTP client does with an idle connection closed under it.
type persistentLoad struct {
	ok, failed atomic.Int64
	firstErr   atomic.Value
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startPersistentLoad(addr string, clients int) *persistentLoad {
	l := &persistentLoad{stop: make(chan struct{})}
	for range clients {
		l.wg.Go(func() {
			tr := &http.Transport{MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			c := &http.Client{Timeout: 10 * time.Second, Transport: tr}
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				if err := getWith(c, addr); err != nil {
					l.failed.Add(1)
					l.firstErr.CompareAndSwap(nil, err.Error())
				} else {
					l.ok.Add(1)
				}
			}
		})
	}
	return l
}

func (l *persistentLoad) finish() { close(l.stop); l.wg.Wait() }

func getWith(c *http.Client, addr string) error {
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// TestKernelBalanceScaleDownStrandsNothing: in the kernel mode, a scale
// down from 4 workers to 2 under keep-alive and new-connection load fails
// not one request, and every request is answered within the clients'
// bound (a connection left in a retired slot's queue would never be): the
// retired slot leaves the kernel's choice, its worker drains once its
// queue is empty, and its socket is closed once the worker is gone.
// Then a scale up binds the slot again and it serves.
func TestKernelBalanceScaleDownStrandsNothing(t *testing.T) {
	needKernelBalance(t)
	m := startMaster(t, "worker", nil, "--workers", "4", "--balance", "kernel", "--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	_, next := m.waitFor(0, "cluster ready", nil)
	listeningPIDs(m, 0, 4)

	deadline := time.Now().Add(3 * patience)
	fresh := startLoad(addr, 4, 1_000_000)
	kept := startPersistentLoad(addr, 4)
	// Both loads under way before the scale down.
	for fresh.ok.Load() < 50 || kept.ok.Load() < 50 {
		if time.Now().After(deadline) {
			t.Fatalf("the loads did not start: %d and %d requests answered", fresh.ok.Load(), kept.ok.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// One signal at a time: two sent together may arrive as one.
	for range 2 {
		m.signal(syscall.SIGTTOU)
		_, next = m.waitFor(next, "scale", nil)
	}
	var exited []int
	for range 2 {
		var e logEvent
		e, next = m.waitFor(next, "worker exited", nil)
		exited = append(exited, e.num("worker"))
	}
	// More load after the workers are gone: nothing goes to their slots.
	for from := fresh.ok.Load() + kept.ok.Load(); fresh.ok.Load()+kept.ok.Load() < from+200; {
		if time.Now().After(deadline) {
			t.Fatal("the loads stopped after the scale down")
		}
		time.Sleep(10 * time.Millisecond)
	}
	fresh.finish()
	kept.finish()
	if n := fresh.failed.Load(); n != 0 {
		t.Errorf("%d of %d new-connection requests failed across the scale down (workers %v left); first: %v", n, n+fresh.ok.Load(), exited, fresh.firstErr.Load())
	}
	if n := kept.failed.Load(); n != 0 {
		t.Errorf("%d of %d keep-alive requests failed across the scale down (workers %v left); first: %v", n, n+kept.ok.Load(), exited, kept.firstErr.Load())
	}

	// The retired slot comes back: its socket is bound again, and the four
	// workers share the connections.
	m.signal(syscall.SIGTTIN)
	m.waitFor(next, "worker listening", nil)
	perPID := map[int]int{}
	for _, pid := range keepAlivePIDs(t, addr, 12) {
		perPID[pid]++
	}
	if len(perPID) != 3 {
		t.Errorf("after scaling back to 3, answers came from %d pids, want 3: %v", len(perPID), perPID)
	}
	m.stop()
}

// TestKernelBalanceScaleDownServesTheQueue: connections queued on the
// slot that a scale down retires are all answered. The retired worker
// (the oldest, worker 1) is stopped so that connections wait in its
// slot's queue; the scale down takes the slot out of the kernel's choice
// and the worker, continued, accepts them before it is told to drain.
func TestKernelBalanceScaleDownServesTheQueue(t *testing.T) {
	needKernelBalance(t)
	m := startMaster(t, "worker", nil, "--workers", "4", "--balance", "kernel", "--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	_, next := m.waitFor(0, "cluster ready", nil)
	pids, _ := listeningPIDs(m, 0, 4)
	oldest := pids[1]
	if err := syscall.Kill(oldest, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Round-robin over 4 slots: 2 of 8 wait in the stopped worker's queue.
	conns := sendRequests(t, addr, 8)
	m.signal(syscall.SIGTTOU)
	e, _ := m.waitFor(next, "drain", nil)
	if e.num("pid") != oldest {
		t.Fatalf("the scale down drained pid %d, want the oldest worker's %d", e.num("pid"), oldest)
	}
	if err := syscall.Kill(oldest, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	answeredBy, errs := readAnswers(conns)()
	fromOldest := 0
	for i, err := range errs {
		if err != nil {
			t.Errorf("connection %d queued before the scale down was not answered: %v", i, err)
		}
		if answeredBy[i] == oldest {
			fromOldest++
		}
	}
	if fromOldest != 2 {
		t.Errorf("the retired worker answered %d of the 8 connections, want the 2 queued on its slot (answers %v)", fromOldest, answeredBy)
	}
	m.waitFor(next, "worker exited", map[string]any{"pid": oldest})
	m.stop()
}

// TestKernelBalanceScaleDownMovesAStuckQueue: connections queued on the
// slot that a scale down retires are all answered even when its worker
// never accepts them. The retired worker (the oldest, worker 1) is stopped
// and stays stopped: the master waits half the kill timeout for its queue
// to empty, drains it, kills it at the kill timeout, and closes the slot's
// socket; the kernel then moves the queue to an eligible slot (the program
// is attached as SELECT_OR_MIGRATE) instead of resetting it.
func TestKernelBalanceScaleDownMovesAStuckQueue(t *testing.T) {
	needKernelBalance(t)
	m := startMaster(t, "worker", []string{"GORACE=atexit_sleep_ms=0"},
		"--workers", "4", "--balance", "kernel", "--kill-timeout", "2s", "--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	_, next := m.waitFor(0, "cluster ready", nil)
	pids, _ := listeningPIDs(m, 0, 4)
	oldest := pids[1]
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	kill(t, oldest, syscall.SIGSTOP)
	waitStopped(t, oldest)
	slot, _ := heldBy(t, oldest, port)

	// Round-robin over 4 slots: 4 of 16 wait in the stopped worker's queue.
	conns := sendRequests(t, addr, 16)
	deadline := time.Now().Add(patience)
	for queueOf(t, slot) != 4 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections wait in the stopped worker's queue, want 4", queueOf(t, slot))
		}
		time.Sleep(5 * time.Millisecond)
	}

	m.signal(syscall.SIGTTOU)
	e, _ := m.waitFor(next, "drain", nil)
	if e.num("pid") != oldest {
		t.Fatalf("the scale down drained pid %d, want the oldest worker's %d", e.num("pid"), oldest)
	}
	answeredBy, errs := readAnswers(conns)()
	for i, err := range errs {
		if err != nil {
			t.Errorf("connection %d, queued before the scale down, was not answered: %v", i, err)
		} else if answeredBy[i] == oldest {
			t.Errorf("connection %d was answered by the stopped worker", i)
		}
	}
	x, _ := m.waitFor(next, "worker exited", map[string]any{"pid": oldest})
	if x.str("reason") != "killed SIGKILL" {
		t.Errorf("the stopped worker exited with %q, want killed at the kill timeout", x.str("reason"))
	}
	m.stop()
}

// sendRequests opens n connections to addr, one after the other, and
// writes one request on each without reading its answer (readAnswers
// does): where each waits is the kernel's choice. They close with the
// test.
func sendRequests(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.DialTimeout("tcp", addr, patience)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(2 * patience))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	return conns
}

// readAnswers starts reading every connection's answer at once; the
// returned wait gives, for each, the pid of the worker that answered (the
// test worker's body) or why none did.
func readAnswers(conns []net.Conn) (wait func() (answeredBy []int, errs []error)) {
	answeredBy, errs := make([]int, len(conns)), make([]error, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				answeredBy[i], err = strconv.Atoi(string(body))
			}
			errs[i] = err
		})
	}
	return func() ([]int, []error) {
		wg.Wait()
		return answeredBy, errs
	}
}
