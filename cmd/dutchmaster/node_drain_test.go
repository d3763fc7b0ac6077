package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/dutchmaster/dutchmaster/cmd/internal/loadtest"
)

// The tests of this file run unmodified Node.js apps with dutchmaster's
// preload module (the default for node-cluster workers): a drain moves
// keep-alive clients to the new workers without one failed request, the
// old workers exit by themselves while the clients go on, WebSocket apps
// get their own SIGTERM handler run, and servers that bypass the cluster
// primary (exclusive: true) are seen.

// nodeAppsDir is examples/nodeapps, with its node_modules installed.
func nodeAppsDir(t *testing.T) string { return npmDir(t, "../../examples/nodeapps", "fastify") }

// TestNodePreloadKeepAlive: clients that keep their connections alive and
// never retry (cmd/internal/loadtest: a failed request is a failure) go on
// through two rolling restarts of an unmodified app without one failed
// request, and each old worker exits by itself, cleanly, while the
// clients go on: the preload answers them with "Connection: close" during
// the grace, so they move to the new workers, and closes what stays idle
// without a reset. (Without it, Node closes idle connections at once at
// the disconnect, and a busy connection stays with its old worker for as
// long as its client keeps it busy: the old workers would not exit before
// the clients stop, and the kill timeout would end them.)
func TestNodePreloadKeepAlive(t *testing.T) {
	node := nodeBinary(t)
	cases := []struct {
		name string
		// start runs the master and returns it, the address to load and
		// the ready workers' pids by id, and the log index after them.
		start func(t *testing.T) (*master, string, map[int]int, int)
	}{
		{"http.createServer", func(t *testing.T) (*master, string, map[int]int, int) {
			m, addr, pids, next := clusterApp(t, 2, "--kill-timeout", "30s")
			return m, addr, pids, next
		}},
		{"http.createServer, drain by signal", func(t *testing.T) (*master, string, map[int]int, int) {
			m, addr, pids, next := clusterApp(t, 2, "--kill-timeout", "30s", "--drain", "signal")
			return m, addr, pids, next
		}},
		{"express", func(t *testing.T) (*master, string, map[int]int, int) {
			return listenApp(t, expressDir(t), []string{node, "app.js"})
		}},
		{"fastify", func(t *testing.T) (*master, string, map[int]int, int) {
			return listenApp(t, nodeAppsDir(t), []string{node, "fastify.js"})
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, addr, old, next := c.start(t)
			restartsCleanUnderKeepAlive(t, m, addr, old, next, 2)
			m.stop()
		})
	}
}

// listenApp runs `command` in dir with 2 workers on a --listen listener,
// the port in PORT, and waits until the cluster is ready.
func listenApp(t *testing.T, dir string, command []string, flags ...string) (*master, string, map[int]int, int) {
	t.Helper()
	addr := freeTCP(t)
	_, port, _ := net.SplitHostPort(addr)
	flags = append([]string{"--dir", dir, "--workers", "2", "--kill-timeout", "30s", "--listen", "http=tcp://" + addr, "--env", "PORT=" + port}, flags...)
	m := startMasterCommand(t, command, flags...)
	_, next := m.waitFor(0, "cluster ready", nil)
	pids, _ := listeningPIDs(m, 0, 2)
	return m, addr, pids, next
}

// restartsCleanUnderKeepAlive runs `rounds` rolling restarts while 2 keep-alive
// clients that never retry load addr, and checks that no request failed
// and that every old worker exited cleanly while the clients were still
// at work.
func restartsCleanUnderKeepAlive(t *testing.T, m *master, addr string, old map[int]int, next, rounds int) {
	t.Helper()
	load := loadtest.Start(loadtest.Spec{
		Addr: addr, Clients: 2, Mode: loadtest.ModeKeepAlive, Timeout: 10 * time.Second,
		MaxRequests: 1 << 30, Deadline: time.Now().Add(3 * time.Minute),
	})
	defer load.Finish()
	if !load.WaitDone(200, patience) {
		t.Fatalf("the load never got going: %d requests done", load.DoneCount())
	}
	var slowest time.Duration
	for round := range rounds {
		m.signal(syscall.SIGUSR2)
		_, done := m.waitFor(next, "restart complete", nil)
		fresh, _ := listeningPIDs(m, next, len(old))
		for _, pid := range old {
			exited, _ := m.waitFor(next, "worker exited", map[string]any{"pid": pid})
			if r := exited.str("reason"); r != "clean" {
				t.Errorf("restart %d: old worker pid %d exited %q, want clean", round+1, pid, r)
			}
			drain, _ := m.waitFor(next, "drain", map[string]any{"pid": pid})
			if took := logTime(t, exited).Sub(logTime(t, drain)); took > slowest {
				slowest = took
			}
		}
		checkReplaceBeforeStop(t, m, done)
		before := load.DoneCount()
		if !load.WaitDone(before+50, patience) {
			t.Fatalf("restart %d: the clients stopped: %d requests done", round+1, load.DoneCount())
		}
		old, next = fresh, done
	}
	load.Finish()
	if n := len(load.Failures); n != 0 {
		t.Errorf("%d of %d keep-alive requests failed; first: %+v", n, load.DoneCount(), load.Failures[0])
	}
	// A figure, not a check: how long the slowest old worker took from its
	// drain to its exit (the grace, 5 s, bounds it for busy clients).
	t.Logf("%d requests; slowest drain to exit: %s", load.DoneCount(), slowest)
}

// TestNodePreloadWebSocket: an app whose own SIGTERM handler closes its
// WebSocket clients with 1001 (examples/nodeapps/websocket.js) gets that
// handler run at a rolling restart, which drains it with the cluster's
// disconnect alone (--drain auto): every client of the old worker is told
// 1001 (going away), and the old worker exits cleanly. With --drain both
// (disconnect, then SIGTERM) the handler's server.close(cb) on the server
// the disconnect already closed calls back without an error (Node's own
// would be ERR_SERVER_NOT_RUNNING, and the app exits 1 on an error).
func TestNodePreloadWebSocket(t *testing.T) {
	node := nodeBinary(t)
	dir := nodeAppsDir(t)
	for _, drain := range []string{"auto", "both"} {
		t.Run(drain, func(t *testing.T) {
			m, addr, old, next := listenApp(t, dir, []string{node, "websocket.js"}, "--drain", drain, "--log-worker-output")
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			type client struct {
				conn *websocket.Conn
				pid  int
			}
			var clients []client
			for range 4 {
				c, pid := dialHello(ctx, t, addr)
				clients = append(clients, client{c, pid})
			}

			m.signal(syscall.SIGUSR2)
			for _, c := range clients {
				_, msg, err := c.conn.Read(ctx)
				if status := websocket.CloseStatus(err); status != websocket.StatusGoingAway {
					t.Errorf("client of pid %d: read %q, %v (status %d), want close 1001 (going away)", c.pid, msg, err, status)
				}
			}
			_, done := m.waitFor(next, "restart complete", nil)
			checkReplaceBeforeStop(t, m, done)
			for _, pid := range old {
				exited, _ := m.waitFor(next, "worker exited", map[string]any{"pid": pid})
				if r := exited.str("reason"); r != "clean" {
					t.Errorf("old worker pid %d exited %q, want clean", pid, r)
				}
			}
			for _, e := range m.events() {
				if strings.Contains(e.str("message"), "close failed") {
					t.Errorf("the app's server.close failed: %v", e)
				}
			}

			// The clients come back, to the new workers.
			fresh, _ := listeningPIDs(m, next, 2)
			c, pid := dialHello(ctx, t, addr)
			if pid != fresh[3] && pid != fresh[4] {
				t.Errorf("after the restart a client was greeted by pid %d, want one of %v", pid, fresh)
			}
			c.Close(websocket.StatusNormalClosure, "")
			m.stop()
		})
	}
}

// TestNodePreloadExclusiveListen: listen({exclusive: true}) bypasses the
// cluster primary, so the master never hears of the server. The preload
// reports the worker ready ({"event":"ready"}) and closes that server at
// the drain: the worker serves, and a stop ends it cleanly. The same holds
// when the worker runs as another user (--user), who must be able to read
// the module even when the master's TMPDIR is private to it. An exclusive
// listen on the port of a --listen listener fails with EADDRINUSE: the
// master's socket is bound without SO_REUSEPORT, and so is Node's (Node 20
// has no reusePort).
func TestNodePreloadExclusiveListen(t *testing.T) {
	node := nodeBinary(t)
	app, err := filepath.Abs("testdata/cluster-exclusive.js")
	if err != nil {
		t.Fatal(err)
	}
	servesAndStops := func(t *testing.T, m *master, addr string) {
		t.Helper()
		ready, _ := m.waitFor(0, "worker listening", nil)
		body, err := get(addr, "/")
		if err != nil || body != strconv.Itoa(ready.num("pid")) {
			t.Fatalf("GET /: %q, %v; want the pid %d", body, err, ready.num("pid"))
		}
		if n := len(m.all("node server bound")) + len(m.all("node server shared")); n != 0 {
			t.Errorf("the master shared %d servers: the exclusive listen went through the primary", n)
		}
		m.stop()
		exited, _ := m.waitFor(0, "worker exited", nil)
		if r := exited.str("reason"); r != "clean" {
			t.Errorf("worker exited %q, want clean", r)
		}
	}
	t.Run("own port", func(t *testing.T) {
		addr := freeTCP(t)
		_, port, _ := net.SplitHostPort(addr)
		m := startMasterCommand(t, []string{node, app}, "--workers", "1", "--log-worker-output",
			"--env", "HOST=127.0.0.1", "--env", "PORT="+port)
		servesAndStops(t, m, addr)
	})
	t.Run("own port, as nobody", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Fatal("this test needs root, as CI runs it: the master changes the workers' user")
		}
		private := t.TempDir() // 0700, the master's alone
		if err := os.Chmod(private, 0o700); err != nil {
			t.Fatal(err)
		}
		_, bin := sharedDir(t)
		addr := freeTCP(t)
		_, port, _ := net.SplitHostPort(addr)
		m := launchMasterBinary(t, bin, []string{roleEnv + "=master", "TMPDIR=" + private}, nil,
			"--log-format", "json", "--user", "nobody", "--workers", "1", "--log-worker-output",
			"--env", "HOST=127.0.0.1", "--env", "PORT="+port, "--", node, app)
		servesAndStops(t, m, addr)
	})
	t.Run("the master's port", func(t *testing.T) {
		addr := freeTCP(t)
		_, port, _ := net.SplitHostPort(addr)
		m := startMasterCommand(t, []string{node, app}, "--workers", "1", "--log-worker-output",
			"--listen", "tcp://"+addr, "--env", "HOST=127.0.0.1", "--env", "PORT="+port)
		m.waitFor(0, "listen failed: EADDRINUSE", nil)
		if len(m.all("worker listening")) != 0 {
			t.Error("a worker became ready without its server")
		}
		m.stop()
	})
}

// TestNodePreloadMaxRequests: with --max-requests N (DUTCHMASTER_MAX_REQUESTS
// in its environment), an unmodified app's worker asks for its recycle once
// the preload module has counted N requests (over all its HTTP servers),
// once.
func TestNodePreloadMaxRequests(t *testing.T) {
	m, addr, pids, next := clusterApp(t, 1, "--max-requests", "5", "--max-requests-jitter", "0")
	for i := range 5 {
		if _, err := get(addr, "/"); err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
	}
	_, next = m.waitFor(next, "worker due for recycling", map[string]any{"pid": pids[1], "cause": "max-requests"})
	m.waitFor(next, "restart complete", nil)
	waitGone(t, pids[1])
	if n := len(m.all("worker due for recycling")); n != 1 {
		t.Errorf("%d recycles asked for, want 1", n)
	}
	m.stop()
}

// dialHello opens a WebSocket to the app and reads its greeting, "hello
// PID": the connection (closed with the test) and the pid.
func dialHello(ctx context.Context, t *testing.T, addr string) (*websocket.Conn, int) {
	t.Helper()
	c, _, err := websocket.Dial(ctx, "ws://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	_, hello, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimPrefix(string(hello), "hello "))
	return c, pid
}
