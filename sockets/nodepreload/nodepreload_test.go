package nodepreload

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The tests run the module in a real node, started as the master starts a
// cluster worker (NODE_UNIQUE_ID, an IPC channel at fd 3, NODE_OPTIONS from
// Env), with the test at the other end of the channel instead of a master.
// The apps in testdata listen with exclusive: true, which needs no primary.

// patience bounds every wait: generous, since the machines are shared.
const patience = 30 * time.Second

// message is one line the worker sent on its channel.
type message map[string]any

func (m message) event() string { s, _ := m["event"].(string); return s }

// worker is a node process running a testdata script with the module.
type worker struct {
	cmd      *exec.Cmd
	channel  *os.File
	messages chan message
	exited   chan error
}

// startWorker runs testdata/script; cluster makes it a cluster worker;
// env is added to the test's environment.
func startWorker(t *testing.T, script string, cluster bool, grace time.Duration, env ...string) *worker {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed; .ci/run installs it (apt-get install nodejs)")
	}
	path, err := Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	channel, childEnd := os.NewFile(uintptr(fds[0]), "ipc"), os.NewFile(uintptr(fds[1]), "ipc-worker")
	defer childEnd.Close()
	cmd := exec.Command(node, "testdata/"+script)
	base := append(os.Environ(), env...)
	cmd.Env = append(base, "NODE_CHANNEL_FD=3", "NODE_CHANNEL_SERIALIZATION_MODE=json")
	if cluster {
		cmd.Env = append(cmd.Env, "NODE_UNIQUE_ID=1")
	}
	cmd.Env = append(cmd.Env, Env(base, path, grace)...)
	cmd.ExtraFiles = []*os.File{childEnd}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &worker{cmd: cmd, channel: channel, messages: make(chan message, 1024), exited: make(chan error, 1)}
	read := make(chan struct{})
	go func() {
		defer close(read)
		defer close(w.messages)
		sc := bufio.NewScanner(channel)
		for sc.Scan() {
			var m message
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				w.messages <- m
			}
		}
	}()
	go func() { w.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		channel.Close()
		<-read
		<-w.exited
	})
	return w
}

// next returns the messages up to the next one with the event, that one
// last, skipping Node's internal ones.
func (w *worker) next(t *testing.T, event string) []message {
	t.Helper()
	var seen []message
	timeout := time.After(patience)
	for {
		select {
		case m, ok := <-w.messages:
			if !ok {
				t.Fatalf("the channel ended before %q; got %v", event, seen)
			}
			if cmd, _ := m["cmd"].(string); strings.HasPrefix(cmd, "NODE_") {
				continue
			}
			seen = append(seen, m)
			if m.event() == event {
				return seen
			}
		case <-timeout:
			t.Fatalf("no %q within %s; got %v", event, patience, seen)
		}
	}
}

// nextCluster waits for a cluster message of Node's with the act.
func (w *worker) nextCluster(t *testing.T, act string) {
	t.Helper()
	timeout := time.After(patience)
	for {
		select {
		case m, ok := <-w.messages:
			if !ok {
				t.Fatalf("the channel ended before the cluster's %q", act)
			}
			if m["cmd"] == "NODE_CLUSTER" && m["act"] == act {
				return
			}
		case <-timeout:
			t.Fatalf("no cluster %q within %s", act, patience)
		}
	}
}

// send writes one line on the channel, as the master does.
func (w *worker) send(t *testing.T, line string) {
	t.Helper()
	if _, err := w.channel.Write([]byte(line + "\n")); err != nil {
		t.Fatal(err)
	}
}

// disconnect sends the cluster's disconnect and waits for the channel's
// end: with no server shared through the primary, Node's cluster closes
// the channel at once, after the module has begun the drain.
func (w *worker) disconnect(t *testing.T) {
	t.Helper()
	w.send(t, `{"cmd":"NODE_CLUSTER","act":"disconnect","seq":0}`)
	timeout := time.After(patience)
	for {
		select {
		case _, ok := <-w.messages:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatalf("the channel did not end within %s of the disconnect", patience)
		}
	}
}

// exitCode waits for the worker's exit.
func (w *worker) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case err := <-w.exited:
		w.exited <- err // for the cleanup
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				t.Fatalf("the worker died of %s", ws.Signal())
			}
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(patience):
		t.Fatalf("the worker still runs after %s", patience)
		return -1
	}
}

func events(ms []message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.event())
	}
	return out
}

// TestReady: a server that bypasses the cluster primary makes the module
// report the worker ready, in a CommonJS app and in an ES module app;
// NODE_OPTIONS is given back to the app as it was (its children do not
// load the module).
func TestReady(t *testing.T) {
	for _, script := range []string{"server.js", "server.mjs"} {
		t.Run(script, func(t *testing.T) {
			w := startWorker(t, script, true, time.Second, "NODE_OPTIONS=--max-old-space-size=200")
			got := w.next(t, "test-server")
			if !slices.Equal(events(got), []string{"ready", "test-server"}) {
				t.Errorf("messages %v, want ready then test-server", got)
			}
			if opts := got[len(got)-1]["nodeOptions"]; opts != "--max-old-space-size=200" {
				t.Errorf("the app's NODE_OPTIONS: %q, want its own, --max-old-space-size=200", opts)
			}
		})
	}
}

// TestNotAClusterWorker: in a node process that is not a cluster worker
// (one the app started itself) the module does nothing.
func TestNotAClusterWorker(t *testing.T) {
	w := startWorker(t, "server.js", false, time.Second)
	if got := w.next(t, "test-server"); len(got) != 1 {
		t.Errorf("messages %v, want test-server alone", got)
	}
}

// get sends GET path on conn (a keep-alive connection) and returns the
// response, its body read.
func get(t *testing.T, conn net.Conn, r *bufio.Reader, path string) *http.Response {
	t.Helper()
	conn.SetDeadline(time.Now().Add(patience))
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// dial opens a connection to the worker's server.
func dial(t *testing.T, port float64) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", int(port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, bufio.NewReader(conn)
}

// TestMaxRequests: with DUTCHMASTER_MAX_REQUESTS=3 the worker asks for
// its replacement once it has served 3 requests, and only once; without
// WATCHDOG_USEC it sends no heartbeat.
func TestMaxRequests(t *testing.T) {
	w := startWorker(t, "server.js", true, time.Second, "DUTCHMASTER_MAX_REQUESTS=3")
	port := w.next(t, "test-server")[1]["port"].(float64)
	conn, r := dial(t, port)
	for range 5 {
		get(t, conn, r, "/")
	}
	get(t, conn, r, "/mark")
	got := w.next(t, "mark")
	if !slices.Equal(events(got), []string{"request-restart", "mark"}) {
		t.Fatalf("messages %v, want one request-restart, then the mark", got)
	}
	if got[0]["reason"] != "max-requests" {
		t.Errorf("request-restart %v, want reason max-requests", got[0])
	}
}

// TestHeartbeat: with WATCHDOG_USEC the worker sends heartbeats from its
// event loop, every third of it.
func TestHeartbeat(t *testing.T) {
	w := startWorker(t, "server.js", true, time.Second, "WATCHDOG_USEC=30000")
	for range 3 {
		w.next(t, "heartbeat")
	}
}

// TestDrain: at the cluster's disconnect the server stops accepting; a
// keep-alive connection that sends during the grace is answered with
// "Connection: close" and then closed; once no connection is left the
// grace ends and the worker exits 0 by itself. A connection that stays
// idle for the whole grace is closed with a clean end of stream (FIN),
// not a reset.
func TestDrain(t *testing.T) {
	t.Run("busy", func(t *testing.T) {
		w := startWorker(t, "server.js", true, time.Minute)
		port := w.next(t, "test-server")[1]["port"].(float64)
		conn, r := dial(t, port)
		if resp := get(t, conn, r, "/"); resp.Close {
			t.Fatal("Connection: close before the drain")
		}
		w.disconnect(t)
		if resp := get(t, conn, r, "/"); !resp.Close {
			t.Error("a response during the grace without Connection: close")
		}
		if _, err := r.ReadByte(); err != io.EOF {
			t.Errorf("after the Connection: close response: %v, want EOF", err)
		}
		if code := w.exitCode(t); code != 0 {
			t.Errorf("exit status %d, want 0", code)
		}
		if _, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", int(port))); err == nil {
			t.Error("the server still accepts after the drain")
		}
	})
	t.Run("idle", func(t *testing.T) {
		w := startWorker(t, "server.js", true, 100*time.Millisecond)
		port := w.next(t, "test-server")[1]["port"].(float64)
		conn, r := dial(t, port)
		get(t, conn, r, "/")
		w.disconnect(t)
		if _, err := r.ReadByte(); err != io.EOF {
			t.Errorf("the idle connection at the grace's end: %v, want EOF (a FIN, not a reset)", err)
		}
		conn.Close()
		if code := w.exitCode(t); code != 0 {
			t.Errorf("exit status %d, want 0", code)
		}
	})
}

// TestDrainBySignal: SIGTERM, which would end a worker at once, drains it
// as the disconnect does: the worker disconnects itself from its primary
// (Node's exitedAfterDisconnect, which the test leaves unanswered, so the
// channel stays open), a keep-alive connection that sends during the grace
// is answered with "Connection: close", and only then does the app's own
// SIGTERM handler run; its server.close(cb) on the server the drain closed
// calls back without an error, and it exits 0. An app without a handler
// exits 0 by itself once no request is in flight (the channel, which the
// primary never lets go of here, would otherwise keep it alive).
func TestDrainBySignal(t *testing.T) {
	t.Run("the app's handler", func(t *testing.T) {
		w := startWorker(t, "server.js", true, time.Minute, "SIGTERM_HANDLER=1")
		port := w.next(t, "test-server")[1]["port"].(float64)
		conn, r := dial(t, port)
		get(t, conn, r, "/")
		if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		w.nextCluster(t, "exitedAfterDisconnect")
		if resp := get(t, conn, r, "/"); !resp.Close {
			t.Error("a response during the grace without Connection: close")
		}
		if _, err := r.ReadByte(); err != io.EOF {
			t.Errorf("after the Connection: close response: %v, want EOF", err)
		}
		w.next(t, "app-sigterm")
		if code := w.exitCode(t); code != 0 {
			t.Errorf("exit status %d, want 0: the app's server.close failed", code)
		}
	})
	t.Run("no handler", func(t *testing.T) {
		w := startWorker(t, "server.js", true, time.Minute)
		w.next(t, "test-server")
		if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := w.exitCode(t); code != 0 {
			t.Errorf("exit status %d, want 0", code)
		}
	})
}

// TestEnv: the module's --require goes after the options the environment
// already has (the last NODE_OPTIONS wins, as in os/exec), quoted as Node
// reads NODE_OPTIONS.
func TestEnv(t *testing.T) {
	for _, c := range []struct {
		env  []string
		path string
		want string
	}{
		{nil, "/tmp/d/" + FileName, `NODE_OPTIONS=--require "/tmp/d/` + FileName + `"`},
		{[]string{"NODE_OPTIONS=--a", "X=1", "NODE_OPTIONS=--inspect=0 --b"}, "/tmp/d/" + FileName, `NODE_OPTIONS=--inspect=0 --b --require "/tmp/d/` + FileName + `"`},
		{nil, `/tmp/a "b\c/` + FileName, `NODE_OPTIONS=--require "/tmp/a \"b\\c/` + FileName + `"`},
	} {
		got := Env(c.env, c.path, 1500*time.Millisecond)
		if want := []string{c.want, EnvGrace + "=1500"}; !slices.Equal(got, want) {
			t.Errorf("Env(%q, %q) = %q, want %q", c.env, c.path, got, want)
		}
	}
}

// TestWrite: the module is written readable by everyone, in a directory
// everyone can enter.
func TestWrite(t *testing.T) {
	path, err := Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{path: 0o444, path[:strings.LastIndexByte(path, '/')]: 0o755} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil || string(data) != string(Source()) {
		t.Errorf("the file holds %d bytes (%v), want the module", len(data), err)
	}
}
