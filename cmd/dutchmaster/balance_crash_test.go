package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster/cmd/internal/loadtest"
)

// pidLoad sends requests to addr, one client each, until finish: over a
// keep-alive connection each (a failed one is dropped and the client dials
// again, as any HTTP client does) or on a new connection per request. For
// every failure it keeps the client's port of the connection it was sent
// on, to tell the requests a killed worker held from the others.
type pidLoad struct {
	ok       atomic.Int64
	mu       sync.Mutex
	byPID    map[int]int
	failures []pidFailure
	stop     chan struct{}
	wg       sync.WaitGroup
}

type pidFailure struct {
	port int // the client's port; 0 when the connection was never made
	err  error
}

func startPIDLoad(addr string, clients int, keepAlive bool) *pidLoad {
	l := &pidLoad{stop: make(chan struct{}), byPID: map[int]int{}}
	for range clients {
		l.wg.Go(func() {
			var c net.Conn
			defer func() {
				if c != nil {
					c.Close()
				}
			}()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				if c == nil {
					var err error
					if c, err = net.DialTimeout("tcp", addr, patience); err != nil {
						l.fail(0, err)
						continue
					}
				}
				c.SetDeadline(time.Now().Add(patience))
				pid, err := loadtest.AskPID(c, "/", !keepAlive)
				if err != nil {
					l.fail(c.LocalAddr().(*net.TCPAddr).Port, err)
				} else {
					l.ok.Add(1)
					l.mu.Lock()
					l.byPID[pid]++
					l.mu.Unlock()
				}
				if err != nil || !keepAlive {
					c.Close()
					c = nil
				}
			}
		})
	}
	return l
}

func (l *pidLoad) fail(port int, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures = append(l.failures, pidFailure{port, err})
}

func (l *pidLoad) answeredBy(pid int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byPID[pid]
}

func (l *pidLoad) finish() { close(l.stop); l.wg.Wait() }

// tcpSocket is one line of /proc/net/tcp.
type tcpSocket struct {
	localPort, remotePort int
	listening             bool
	queue                 int // rx_queue: for a listening socket, its accept queue
}

// tcpSockets reads the IPv4 TCP sockets of this network namespace by inode.
func tcpSockets(t *testing.T) map[string]tcpSocket {
	t.Helper()
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]tcpSocket{}
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 10 {
			continue
		}
		port := func(hostPort string) int {
			_, p, _ := strings.Cut(hostPort, ":")
			n, _ := strconv.ParseInt(p, 16, 32)
			return int(n)
		}
		_, rx, _ := strings.Cut(f[4], ":")
		q, _ := strconv.ParseInt(rx, 16, 64)
		out[f[9]] = tcpSocket{localPort: port(f[1]), remotePort: port(f[2]), listening: f[3] == "0A", queue: int(q)}
	}
	return out
}

// socketInodes are the inodes of the sockets pid holds.
func socketInodes(t *testing.T, pid int) []string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	names, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var inodes []string
	for _, n := range names {
		link, err := os.Readlink(filepath.Join(dir, n.Name()))
		if inode, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
			inodes = append(inodes, strings.TrimSuffix(inode, "]"))
		}
	}
	return inodes
}

// heldBy is what a worker holds on the listener's port: the inode of its
// slot's listening socket, and the client ports of the connections it
// accepted.
func heldBy(t *testing.T, pid, port int) (listenInode string, clients map[int]bool) {
	t.Helper()
	socks := tcpSockets(t)
	clients = map[int]bool{}
	for _, inode := range socketInodes(t, pid) {
		s, ok := socks[inode]
		switch {
		case !ok || s.localPort != port:
		case s.listening:
			listenInode = inode
		default:
			clients[s.remotePort] = true
		}
	}
	if listenInode == "" {
		t.Fatalf("pid %d holds no listening socket on port %d", pid, port)
	}
	return listenInode, clients
}

// queueOf is the accept queue of the listening socket with inode.
func queueOf(t *testing.T, inode string) int {
	t.Helper()
	s, ok := tcpSockets(t)[inode]
	if !ok {
		t.Fatalf("no socket with inode %s any more", inode)
	}
	return s.queue
}

// waitStopped waits until every thread of pid is stopped (SIGSTOP taken).
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		stopped := len(tasks) > 0
		for _, task := range tasks {
			data, err := os.ReadFile(task)
			// The state follows the command's closing parenthesis.
			_, rest, _ := strings.Cut(string(data), ") ")
			stopped = stopped && err == nil && strings.HasPrefix(rest, "T")
		}
		if stopped {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d not stopped after %s", pid, patience)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestKernelBalanceCrashUnderLoad: in the kernel mode, a worker killed
// under load costs only the requests it held: every request not on a
// connection it had accepted is answered; its slot leaves the kernel's
// choice at once, so no new connection waits in the slot's queue while the
// slot has no worker; and its replacement accepts what the queue held.
// Over new connections and over keep-alive ones, 4 workers.
func TestKernelBalanceCrashUnderLoad(t *testing.T) {
	needKernelBalance(t)
	for _, keepAlive := range []bool{false, true} {
		name := "new-connections"
		if keepAlive {
			name = "keep-alive"
		}
		t.Run(name, func(t *testing.T) { crashUnderLoad(t, keepAlive) })
	}
}

func crashUnderLoad(t *testing.T, keepAlive bool) {
	// Workers 1 to 4 start at once; a replacement (worker 5 on) waits for
	// the gate, so that the test sees the slot without a worker.
	gate := filepath.Join(t.TempDir(), "gate")
	m := startMaster(t, "worker", []string{"GORACE=atexit_sleep_ms=0", "DM_TEST_GATE=" + gate, "DM_TEST_GATE_WORKER=5"},
		"--workers", "4", "--balance", "kernel", "--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	_, next := m.waitFor(0, "cluster ready", nil)
	pids, _ := listeningPIDs(m, 0, 4)
	victim := pids[2]
	victimSlot := -1
	for _, e := range m.events() {
		if e.str("message") == "worker listening" && e.num("pid") == victim {
			victimSlot = e.num("slot")
		}
	}
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)

	load := startPIDLoad(addr, 8, keepAlive)
	defer func() {
		if load != nil {
			load.finish()
		}
	}()
	deadline := time.Now().Add(patience)
	for load.answeredBy(victim) < 20 || load.ok.Load() < 100 {
		if time.Now().After(deadline) {
			t.Fatalf("the load did not reach every worker: %d answered, %d by pid %d", load.ok.Load(), load.answeredBy(victim), victim)
		}
		time.Sleep(5 * time.Millisecond)
	}

	// Stopped, the worker accepts nothing more: what it holds now is what
	// its death costs; what reaches its slot from here on waits in the
	// queue. Probes make sure some do.
	kill(t, victim, syscall.SIGSTOP)
	waitStopped(t, victim)
	slot, held := heldBy(t, victim, port)
	probes := sendRequests(t, addr, 8)
	for queueOf(t, slot) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no connection waits in the stopped worker's queue")
		}
		time.Sleep(5 * time.Millisecond)
	}
	probing := readAnswers(probes)

	kill(t, victim, syscall.SIGKILL)
	_, next = m.waitFor(next, "worker exited", map[string]any{"pid": victim})
	queued := queueOf(t, slot)

	// No worker in the slot: 12 new connections are all answered, by the
	// other three, and the slot's queue holds what it held.
	after := keepAlivePIDs(t, addr, 12)
	for _, pid := range after {
		if pid == victim || (pid != pids[1] && pid != pids[3] && pid != pids[4]) {
			t.Errorf("with worker 2's slot empty a connection was answered by pid %d, want one of the other workers %v", pid, pids)
		}
	}
	if n := queueOf(t, slot); n != queued {
		t.Errorf("the empty slot's queue went from %d to %d connections: new connections still reach it", queued, n)
	}

	// The replacement takes the slot and accepts its queue.
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	e, _ := m.waitFor(next, "worker listening", map[string]any{"slot": victimSlot})
	replacement := e.num("pid")
	for queueOf(t, slot) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the replacement left %d connections in its slot's queue", queueOf(t, slot))
		}
		time.Sleep(5 * time.Millisecond)
	}
	probed, probeErrs := probing()
	load.finish()
	fromReplacement := load.answeredBy(replacement)
	for i, err := range probeErrs {
		if err != nil {
			t.Errorf("probe %d, sent while worker 2 was stopped, not answered: %v", i, err)
		} else if probed[i] == replacement {
			fromReplacement++
		}
	}
	if queued == 0 || fromReplacement < queued {
		t.Errorf("%d connections waited in the empty slot's queue, the replacement answered %d requests: want at least 1 and all of them", queued, fromReplacement)
	}
	excused := 0
	for _, f := range load.failures {
		if f.port != 0 && held[f.port] {
			excused++
			continue
		}
		t.Errorf("a request not sent to the killed worker failed (client port %d): %v", f.port, f.err)
	}
	t.Logf("%d requests answered, %d failed on connections the killed worker held, %d waited for the replacement", load.ok.Load(), excused, queued)
	load = nil
	m.stop()
}
