//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
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

// The tests of this file run unmodified Node.js apps (testdata/cluster-*.js,
// examples/express) with the machine's real node: dutchmaster is their
// cluster primary (--worker-protocol auto picks node-cluster for node).
// They fail, never skip, without node: .ci/run installs it.

// nodeBinary is the node the tests run.
func nodeBinary(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed; .ci/run installs it (apt-get install nodejs)")
	}
	return node
}

// clusterApp starts a master with 2 workers of testdata/cluster-http.js
// on a free loopback port that the master binds itself (the app listens on
// HOST=127.0.0.1, so nothing is --listen), and waits until the cluster is
// ready. It returns the master, the address, the workers' pids by id and
// the log index after "cluster ready".
func clusterApp(t *testing.T, workers int, flags ...string) (m *master, addr string, pids map[int]int, next int) {
	t.Helper()
	addr = freeTCP(t)
	_, port, _ := net.SplitHostPort(addr)
	flags = append([]string{"--workers", strconv.Itoa(workers), "--env", "HOST=127.0.0.1", "--env", "PORT=" + port}, flags...)
	m = startMasterCommand(t, []string{nodeBinary(t), "testdata/cluster-http.js"}, flags...)
	_, next = m.waitFor(0, "cluster ready", nil)
	pids, _ = listeningPIDs(m, 0, workers)
	return m, addr, pids, next
}

// pidsAnswering sends up to `most` requests (fresh connections, 4 at a
// time) until `want` different pids have answered, and returns them.
func pidsAnswering(t *testing.T, addr string, want, most int) map[int]bool {
	t.Helper()
	var mu sync.Mutex
	seen := map[int]bool{}
	var sent atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for sent.Add(1) <= int64(most) {
				mu.Lock()
				done := len(seen) >= want
				mu.Unlock()
				if done {
					return
				}
				body, err := get(addr, "/")
				if err != nil {
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				pid, _ := strconv.Atoi(strings.Fields(body + " x")[0])
				mu.Lock()
				seen[pid] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := firstErr.Load(); err != nil {
		t.Errorf("a request failed: %v", err)
	}
	return seen
}

// TestNodeClusterSharedSocket: an unmodified listen(PORT) app gets 2
// workers on one socket, the --listen listener with that port (the app's
// null address becomes the operator's loopback address): both workers
// answer, the master binds nothing of its own, and it logs the node
// version it checked.
func TestNodeClusterSharedSocket(t *testing.T) {
	addr := freeTCP(t)
	_, port, _ := net.SplitHostPort(addr)
	m := startMasterCommand(t, []string{nodeBinary(t), "testdata/cluster-http.js"},
		"--workers", "2", "--listen", "http=tcp://"+addr, "--env", "PORT="+port)
	if got := m.address(); got != addr {
		t.Fatalf("--listen bound %s, want %s", got, addr)
	}
	m.waitFor(0, "cluster ready", nil)
	pids, _ := listeningPIDs(m, 0, 2)

	seen := pidsAnswering(t, addr, 2, 2000)
	for id, pid := range pids {
		if !seen[pid] {
			t.Errorf("worker %d (pid %d) never answered; pids seen: %v", id, pid, seen)
		}
	}
	if n := len(m.all("node server bound")); n != 0 {
		t.Errorf("the master bound %d sockets of its own, want none: the app's listen(%s) is the --listen listener", n, port)
	}
	v, _ := m.waitFor(0, "node version", nil)
	if v["tested"] != true || !strings.HasPrefix(v.str("version"), "v20.") {
		t.Errorf("node version event %v, want a tested v20", v)
	}
	m.stop()
	waitGone(t, values(pids)...)
}

// TestNodeClusterRollingRestart: SIGUSR2 replaces both pids with no failed
// request under load; the new generation gets the socket the master bound
// for the first one; SIGTERM then drains every worker and the master
// exits 0.
func TestNodeClusterRollingRestart(t *testing.T) {
	m, addr, old, next := clusterApp(t, 2)
	bound := m.all("node server bound")
	if len(bound) != 1 || bound[0].str("address") != "tcp://"+addr {
		t.Fatalf("node server bound events %v, want one for tcp://%s", bound, addr)
	}

	fresh := restartUnderLoad(t, m, addr, old, next)
	if n := len(m.all("node server bound")); n != 1 {
		t.Errorf("%d binds, want 1: every generation shares the first one's socket", n)
	}
	for id, pid := range fresh {
		if body, err := get(addr, "/"); err != nil || body == "" {
			t.Fatalf("GET / after the restart: %q, %v (worker %d, pid %d)", body, err, id, pid)
		}
	}

	m.stop()
	waitGone(t, values(fresh)...)
	for _, e := range m.all("worker exited") {
		if e.str("reason") != "clean" {
			t.Errorf("worker %d exited with %q, want a clean exit after the cluster disconnect", e.num("worker"), e.str("reason"))
		}
	}
}

// TestNodeClusterRequestRestart: a worker's process.send({event:
// 'request-restart'}) replaces only that worker.
func TestNodeClusterRequestRestart(t *testing.T) {
	m, addr, pids, next := clusterApp(t, 2)
	body, err := get(addr, "/restart")
	if err != nil {
		t.Fatal(err)
	}
	asker, _ := strconv.Atoi(body)
	_, next = m.waitFor(next, "worker requested restart", map[string]any{"pid": asker})
	m.waitFor(next, "restart complete", nil)
	checkOnlyAskerReplaced(t, m, asker, pids)
	m.stop()
}

// holdRequest starts a GET /hold that the app answers only once the
// returned release func has run, and waits until the app has it.
func holdRequest(t *testing.T, m *master, addr string, from int) (result chan string, release func(), next int) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "release")
	result = make(chan string, 1)
	go func() {
		body, err := get(addr, "/hold?file="+file)
		if err != nil {
			body = "error: " + err.Error()
		}
		result <- body
	}()
	_, next = m.waitFor(from, "hold request started", nil)
	release = func() {
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return result, release, next
}

// TestNodeClusterInFlightRequestDuringRestart: a worker drained by a
// rolling restart in the middle of a request finishes it, and only then
// exits (cleanly).
func TestNodeClusterInFlightRequestDuringRestart(t *testing.T) {
	m, addr, pids, next := clusterApp(t, 1, "--log-worker-output")
	old := pids[1]
	result, release, next := holdRequest(t, m, addr, next)
	m.signal(syscall.SIGUSR2)
	_, next = m.waitFor(next, "drain", map[string]any{"pid": old})
	select {
	case body := <-result:
		t.Fatalf("the held request ended (%q) before it was released", body)
	default:
	}
	if !alive(old) {
		t.Fatal("the draining worker exited with a request in flight")
	}
	if len(m.all("restart complete")) != 0 {
		t.Fatal("the restart completed with the old worker's request in flight")
	}
	release()
	select {
	case body := <-result:
		if body != strconv.Itoa(old) {
			t.Fatalf("in-flight request answered %q, want the old worker's pid %d", body, old)
		}
	case <-time.After(patience):
		t.Fatal("in-flight request never answered")
	}
	e, _ := m.waitFor(next, "worker exited", map[string]any{"pid": old})
	if e.str("reason") != "clean" {
		t.Errorf("the old worker exited with %q, want clean", e.str("reason"))
	}
	m.waitFor(next, "restart complete", nil)
	m.stop()
}

// TestNodeClusterStopDrains: SIGTERM drains (the cluster disconnect): a
// request in flight is answered, then the master exits 0.
func TestNodeClusterStopDrains(t *testing.T) {
	m, addr, pids, next := clusterApp(t, 2, "--log-worker-output")
	result, release, next := holdRequest(t, m, addr, next)
	m.signal(syscall.SIGTERM)
	m.waitFor(next, "stopping", nil)
	select {
	case <-m.Done():
		t.Fatal("the master exited with a request in flight")
	default:
	}
	release()
	if body := <-result; strings.HasPrefix(body, "error") {
		t.Fatalf("in-flight request during the stop: %s", body)
	}
	if code := m.wait(); code != 0 {
		t.Fatalf("exit status %d, want 0", code)
	}
	waitGone(t, values(pids)...)
	for _, e := range m.all("worker exited") {
		if e.str("reason") != "clean" {
			t.Errorf("worker %d exited with %q, want clean", e.num("worker"), e.str("reason"))
		}
	}
}

// keepAliveLoad sends requests from `clients` goroutines, each over its
// own keep-alive connection (Go's Transport, which retries an idempotent
// request that meets a connection the server closed while idle, as
// browsers do), until stopped or `most` requests were sent.
type keepAliveLoad struct {
	ok, failed, reused atomic.Int64
	firstErr           atomic.Value
	stop               chan struct{}
	wg                 sync.WaitGroup
	transports         []*http.Transport
}

func startKeepAliveLoad(addr string, clients int, most int64) *keepAliveLoad {
	l := &keepAliveLoad{stop: make(chan struct{})}
	var sent atomic.Int64
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		if info.Reused {
			l.reused.Add(1)
		}
	}}
	for range clients {
		tr := &http.Transport{MaxIdleConnsPerHost: 1}
		l.transports = append(l.transports, tr)
		client := &http.Client{Timeout: 10 * time.Second, Transport: tr}
		l.wg.Go(func() {
			for sent.Add(1) <= most {
				select {
				case <-l.stop:
					return
				default:
				}
				req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", "http://"+addr+"/", nil)
				resp, err := client.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
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

// finish stops the clients and closes their idle connections, as a client
// going away does.
func (l *keepAliveLoad) finish() {
	close(l.stop)
	l.wg.Wait()
	for _, tr := range l.transports {
		tr.CloseIdleConnections()
	}
}

// waitReused waits until n requests went over reused connections.
func (l *keepAliveLoad) waitReused(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for l.reused.Load() < n {
		if time.Now().After(deadline) || l.failed.Load() > 0 {
			t.Fatalf("%d requests over reused connections, want %d; %d failed (%v)", l.reused.Load(), n, l.failed.Load(), l.firstErr.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestNodeClusterKeepAlive: keep-alive clients, busy on the old workers'
// connections, see no failed request through a rolling restart. Node's
// server.close() (the cluster disconnect) ends idle connections at once
// and lets busy ones finish their request; a client that retries a
// request on a reused connection the server closed, as HTTP allows for
// idempotent requests (Go's Transport, browsers), never notices. A
// connection that was busy at the disconnect stays with the old worker
// for as long as the client keeps using it (Node adds no Connection:
// close), so the clients stop once both old workers are draining, and
// the old workers exit as their last connections go. This is Node's own
// drain, without dutchmaster's preload module (--node-preload=false; with
// it, see TestNodePreloadKeepAlive).
func TestNodeClusterKeepAlive(t *testing.T) {
	m, addr, old, next := clusterApp(t, 2, "--node-preload=false")
	traffic := startKeepAliveLoad(addr, 4, 200000)
	traffic.waitReused(t, 20)
	m.signal(syscall.SIGUSR2)
	after := next
	for range 2 {
		_, after = m.waitFor(after, "drain", nil)
	}
	traffic.finish()
	_, done := m.waitFor(next, "restart complete", nil)
	waitGone(t, values(old)...)
	fresh, _ := listeningPIDs(m, next, 2)
	checkReplaceBeforeStop(t, m, done)
	if n := traffic.failed.Load(); n != 0 {
		t.Errorf("%d of %d keep-alive requests failed during the rolling restart; first: %v", n, n+traffic.ok.Load(), traffic.firstErr.Load())
	}
	if traffic.reused.Load() < 20 {
		t.Errorf("only %d requests reused a connection: not a keep-alive load", traffic.reused.Load())
	}

	// The clients come back, on the new workers only.
	again := startKeepAliveLoad(addr, 2, 50)
	again.wg.Wait()
	again.finish()
	if again.failed.Load() != 0 || again.ok.Load() != 50 {
		t.Errorf("after the restart: %d ok, %d failed (%v)", again.ok.Load(), again.failed.Load(), again.firstErr.Load())
	}
	m.stop()
	waitGone(t, values(fresh)...)
}

// TestNodeClusterListenInUse: listen() on a port another process holds
// fails in the app with EADDRINUSE, as under Node's own cluster: the master
// answers the query with the negative errno (-98) and logs why.
func TestNodeClusterListenInUse(t *testing.T) {
	held := listenOn(t, freeTCP(t))
	defer held.Close()
	_, port, _ := net.SplitHostPort(held.Addr().String())
	m := startMasterCommand(t, []string{nodeBinary(t), "testdata/cluster-http.js"},
		"--workers", "1", "--log-worker-output", "--env", "HOST=127.0.0.1", "--env", "PORT="+port)
	m.waitFor(0, "listen failed: EADDRINUSE", nil)
	e, _ := m.waitFor(0, "node server not shared: the worker's listen fails", map[string]any{"errno": "EADDRINUSE"})
	if !strings.Contains(e.str("cause"), "address already in use") || e.str("server") != "tcp://127.0.0.1:"+port {
		t.Errorf("log event %v, want the cause and the server", e)
	}
	if len(m.all("worker listening")) != 0 {
		t.Error("a worker became ready without its socket")
	}
	m.stop()
}

// TestNodeClusterIsPrimaryScript: the usual `if (cluster.isPrimary) fork()
// else listen()` script runs its worker branch only: cluster.worker.id is
// the master's worker id, and no worker forks workers of its own.
func TestNodeClusterIsPrimaryScript(t *testing.T) {
	addr := freeTCP(t)
	_, port, _ := net.SplitHostPort(addr)
	m := startMasterCommand(t, []string{nodeBinary(t), "testdata/cluster-primary.js"},
		"--workers", "2", "--log-worker-output", "--listen", "tcp://"+addr, "--env", "PORT="+port)
	m.waitFor(0, "cluster ready", nil)
	pids, _ := listeningPIDs(m, 0, 2)
	idOf := map[int]int{}
	for id, pid := range pids {
		idOf[pid] = id
	}
	seen := map[int]bool{}
	for i := 0; i < 2000 && len(seen) < 2; i++ {
		body, err := get(addr, "/")
		if err != nil {
			t.Fatal(err)
		}
		var pid, id int
		if _, err := fmt.Sscanf(body, "%d %d", &pid, &id); err != nil {
			t.Fatalf("body %q: %v", body, err)
		}
		if want, ok := idOf[pid]; !ok || id != want {
			t.Fatalf("pid %d says cluster.worker.id %d; the master's workers are %v", pid, id, pids)
		}
		seen[pid] = true
	}
	if len(seen) != 2 {
		t.Errorf("pids answering: %v, want both workers", seen)
	}
	for _, e := range m.events() {
		if strings.HasPrefix(e.str("message"), "primary ") {
			t.Errorf("the primary branch ran: %q", e.str("message"))
		}
	}
	if forks := len(m.all("fork")); forks != 2 {
		t.Errorf("%d forks, want 2", forks)
	}
	m.stop()
	waitGone(t, values(pids)...)
}

// TestNodeClusterUDPAndUnix: a dgram socket (dgram.Native) and a unix
// socket path go through the master as TCP does, and survive a rolling
// restart; the socket file goes with the master.
func TestNodeClusterUDPAndUnix(t *testing.T) {
	t.Run("udp", func(t *testing.T) {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := pc.LocalAddr().String()
		pc.Close()
		_, port, _ := net.SplitHostPort(addr)
		m := startMasterCommand(t, []string{nodeBinary(t), "testdata/cluster-dgram.js"},
			"--workers", "2", "--env", "HOST=127.0.0.1", "--env", "PORT="+port)
		_, next := m.waitFor(0, "cluster ready", nil)
		old, _ := listeningPIDs(m, 0, 2)
		if pid := udpPID(t, addr); pid != old[1] && pid != old[2] {
			t.Fatalf("answered by pid %d, want one of %v", pid, old)
		}
		m.signal(syscall.SIGUSR2)
		m.waitFor(next, "restart complete", nil)
		fresh, _ := listeningPIDs(m, next, 2)
		if pid := udpPID(t, addr); pid != fresh[3] && pid != fresh[4] {
			t.Fatalf("after the restart, answered by pid %d, want one of %v", pid, fresh)
		}
		m.stop()
	})
	t.Run("unix", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "app.sock")
		m := startMasterCommand(t, []string{nodeBinary(t), "testdata/cluster-http.js"},
			"--workers", "2", "--env", "SOCKET="+sock)
		_, next := m.waitFor(0, "cluster ready", nil)
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", sock)
			},
		}}
		ask := func() string {
			resp, err := client.Get("http://app/")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return string(b)
		}
		if ask() == "" {
			t.Fatal("empty answer")
		}
		m.signal(syscall.SIGUSR2)
		m.waitFor(next, "restart complete", nil)
		if ask() == "" {
			t.Fatal("empty answer after the restart")
		}
		m.stop()
		if _, err := os.Lstat(sock); !os.IsNotExist(err) {
			t.Errorf("the socket file outlived the master: %v", err)
		}
	})
}

// udpPID sends datagrams to addr until one is answered (loopback loses
// none, but the answer is bounded all the same) and returns the pid.
func udpPID(t *testing.T, addr string) int {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	for range 10 {
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, err := c.Read(buf)
		if err == nil {
			pid, _ := strconv.Atoi(string(buf[:n]))
			return pid
		}
	}
	t.Fatalf("no answer from %s", addr)
	return 0
}

// expressDir is examples/express, with its node_modules installed.
func expressDir(t *testing.T) string { return npmDir(t, "../../examples/express", "express") }

// npmDir is the directory rel (from this package), with its node_modules
// installed (npm ci, bounded in time) if pkg is missing from them.
func npmDir(t *testing.T, rel, pkg string) string {
	t.Helper()
	dir, err := filepath.Abs(rel)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err == nil {
		return dir
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	npm := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
	npm.Dir = dir
	if out, err := npm.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
	}
	return dir
}

// TestNodeClusterExpressExample runs examples/express as its README says:
// an uncaught error in a request asks for that worker's replacement, and a
// rolling restart under load fails no request.
func TestNodeClusterExpressExample(t *testing.T) {
	dir := expressDir(t)
	addr := freeTCP(t)
	_, port, _ := net.SplitHostPort(addr)
	m := startMasterCommand(t, []string{nodeBinary(t), "app.js"},
		"--dir", dir, "--workers", "2", "--listen", "http=tcp://"+addr, "--env", "PORT="+port)
	_, next := m.waitFor(0, "cluster ready", nil)
	pids, _ := listeningPIDs(m, 0, 2)
	if body, err := get(addr, "/"); err != nil || !strings.HasPrefix(body, "hello from worker ") {
		t.Fatalf("GET /: %q, %v", body, err)
	}

	resp, err := http.Get("http://" + addr + "/boom")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("GET /boom: status %d, want 500", resp.StatusCode)
	}
	e, next := m.waitFor(next, "worker requested restart", nil)
	asker := e.num("pid")
	if asker != pids[1] && asker != pids[2] {
		t.Fatalf("restart requested by pid %d, not a worker of %v", asker, pids)
	}
	_, next = m.waitFor(next, "restart complete", nil)
	waitGone(t, asker)

	traffic := startLoad(addr, 4, 100000)
	m.signal(syscall.SIGUSR2)
	m.waitFor(next, "restart complete", nil)
	traffic.finish()
	if n := traffic.failed.Load(); n != 0 {
		t.Errorf("%d requests failed during the rolling restart; first: %v", n, traffic.firstErr.Load())
	}
	m.stop()
}
