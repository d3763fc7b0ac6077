//go:build linux

package main

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
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/sockets/control"
	"github.com/dutchmaster/dutchmaster/sockets/worker"
)

// The faults of the master's own I/O: a log reader that stops reading,
// clients of the metrics endpoint and of the control socket that connect
// and say nothing.

// chattyWorker (DM_FAULT=chatty) is a worker written with the worker API
// that writes a line to stdout every millisecond while it serves: with
// --log-worker-output, a log pipe nobody reads is full within a second.
func chattyWorker() int {
	l, err := worker.Listener("http")
	if err != nil {
		fmt.Fprintf(os.Stderr, "chatty worker: %v\n", err)
		return 3
	}
	go func() {
		pad := strings.Repeat("x", 100)
		for i := 0; ; i++ {
			fmt.Fprintf(os.Stdout, "chatter %d %s\n", i, pad)
			time.Sleep(time.Millisecond)
		}
	}()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d", os.Getpid())
	})}
	if err := worker.ServeHTTP(srv, l); err != nil {
		fmt.Fprintf(os.Stderr, "chatty worker: %v\n", err)
		return 1
	}
	return 0
}

// stalledPipe is a FIFO whose read end is open and unread: a log shipper
// that is alive but stuck.
type stalledPipe struct {
	r, w *os.File
	size int
}

func newStalledPipe(t *testing.T) *stalledPipe {
	t.Helper()
	path := filepath.Join(t.TempDir(), "log.fifo")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	size, err := unix.FcntlInt(r.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := &stalledPipe{r: r, w: w, size: size}
	t.Cleanup(func() {
		if t.Failed() {
			// What the pipe holds: the log's last lines once the master is gone.
			r.SetReadDeadline(time.Now().Add(time.Second))
			b, _ := io.ReadAll(r)
			t.Logf("the log pipe's last %d bytes:\n%s", min(len(b), 8192), b[max(len(b)-8192, 0):])
		}
		r.Close()
		w.Close()
	})
	return p
}

// buffered is how many bytes wait in the pipe.
func (p *stalledPipe) buffered(t *testing.T) int {
	t.Helper()
	n, err := unix.IoctlGetInt(int(p.r.Fd()), unix.TIOCINQ)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitFull waits until the pipe has no room for another log line.
func (p *stalledPipe) waitFull(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for p.buffered(t) < p.size-4096 {
		if time.Now().After(deadline) {
			t.Fatalf("the log pipe holds %d of %d bytes after %s: the master does not log", p.buffered(t), p.size, patience)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metricValue reads one sample of the master's /metrics: the first line
// starting with series (a name with its labels, if any).
func metricValue(t *testing.T, addr, series string) (float64, error) {
	t.Helper()
	body, err := get(addr, "/metrics")
	if err != nil {
		return 0, err
	}
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return 0, fmt.Errorf("no %s in /metrics", series)
	}
	return strconv.ParseFloat(m[1], 64)
}

// ctlDo sends one control request, bounded in time.
func ctlDo(path string, req control.Request) (control.Reply, error) {
	c, err := control.Dial(path, 5*time.Second)
	if err != nil {
		return control.Reply{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.Do(req)
}

// waitUntil polls cond until it holds, failing the test after patience
// with the last error.
func waitUntil(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not so after %s: %v", what, patience, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFaultLogReaderStalls: the master's stderr is a pipe whose reader
// never reads, and its workers are chatty (--log-worker-output). Once the
// pipe is full the master goes on: /healthz answers 200, ctl status
// answers, SIGUSR2 rolls the workers, the lines it could not write are
// counted (dutchmaster_log_lines_dropped_total) and reported in the log
// once the reader reads again, and SIGTERM stops it, exit 0, while the
// pipe is full again.
func TestFaultLogReaderStalls(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	pipe := newStalledPipe(t)
	metrics := freeTCP(t)
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	cmd := exec.Command(self, "--log-format", "json", "--workers", "2", "--listen", "http=tcp://127.0.0.1:0",
		"--metrics", metrics, "--control", sock, "--log-worker-output",
		"--env", roleEnv+"=worker", "--env", faultEnv+"=chatty", "--", self)
	cmd.Env = append(os.Environ(), roleEnv+"=master", "GORACE=atexit_sleep_ms=0")
	cmd.Stderr = pipe.w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pipe.w.Close() // the master's is the only write end
	exited := make(chan struct{})
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})

	pipe.waitFull(t)
	if _, err := get(metrics, "/healthz"); err != nil {
		t.Fatalf("/healthz with the log pipe full: %v", err)
	}
	waitUntil(t, "ready", func() error { _, err := get(metrics, "/readyz"); return err })
	rep, err := ctlDo(sock, control.Request{Command: control.CommandStatus})
	if err != nil || !rep.OK || rep.Status.Listening != 2 {
		t.Fatalf("ctl status with the log pipe full: %+v, %v", rep, err)
	}
	old := map[int]bool{}
	for _, w := range rep.Status.Workers {
		old[w.PID] = true
	}

	if err := cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	var workers []int
	waitUntil(t, "the rollout of SIGUSR2 complete", func() error {
		if _, err := get(metrics, "/healthz"); err != nil {
			t.Fatalf("/healthz during the rollout, with the log pipe full: %v", err)
		}
		n, err := metricValue(t, metrics, `dutchmaster_rollouts_total{outcome="complete"}`)
		if err != nil || n != 1 {
			return fmt.Errorf("%v rollouts complete, %v", n, err)
		}
		rep, err := ctlDo(sock, control.Request{Command: control.CommandStatus})
		if err != nil || !rep.OK {
			return fmt.Errorf("ctl status: %+v, %v", rep, err)
		}
		workers = workers[:0]
		for _, w := range rep.Status.Workers {
			if old[w.PID] || w.State != "listening" {
				return fmt.Errorf("worker %d (pid %d) %s, generation %d", w.ID, w.PID, w.State, w.Generation)
			}
			workers = append(workers, w.PID)
		}
		return nil
	})
	var dropped float64
	waitUntil(t, "lines dropped", func() error {
		var err error
		dropped, err = metricValue(t, metrics, "dutchmaster_log_lines_dropped_total")
		if err == nil && dropped == 0 {
			err = errors.New("dutchmaster_log_lines_dropped_total 0")
		}
		return err
	})
	t.Logf("%v log lines dropped with the pipe full", dropped)

	// The reader reads again: the master reports what it dropped. Then it
	// stops reading, and the pipe fills again.
	reader := bufio.NewReaderSize(pipe.r, 1<<20)
	var plain []string
	waitUntil(t, "a report of the dropped lines", func() error {
		pipe.r.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		for {
			line, err := reader.ReadBytes('\n')
			if err != nil {
				if len(line) > 0 {
					return fmt.Errorf("partial line read: %q", line)
				}
				return err
			}
			var e logEvent
			if json.Unmarshal(line, &e) != nil {
				plain = append(plain, string(line))
				continue
			}
			if e.str("message") == "log lines dropped" && e.num("dropped") > 0 {
				return nil
			}
		}
	})
	if len(plain) > 0 {
		t.Errorf("lines of the log that are not JSON: %q", plain)
	}
	pipe.waitFull(t)

	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if exitErr != nil {
			t.Fatalf("the master exited with %v after SIGTERM, want status 0", exitErr)
		}
	case <-time.After(patience):
		t.Fatalf("the master still runs %s after SIGTERM with its log pipe full", patience)
	}
	t.Logf("stopped in %s with the log pipe full", time.Since(start).Round(time.Millisecond))
	waitGone(t, workers...)
}

// idleHTTP opens a connection to addr, makes one keep-alive request and
// leaves the connection open. It returns nil when the master refused the
// connection (closed it without an answer).
func idleHTTP(addr string) (net.Conn, *bufio.Reader, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		c.Close()
		return nil, nil, nil
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		c.Close()
		return nil, nil, fmt.Errorf("/healthz: status %d, close %v", resp.StatusCode, resp.Close)
	}
	c.SetDeadline(time.Time{})
	return c, r, nil
}

// checkJSONLog checks that every line of the master's log is JSON.
func checkJSONLog(t *testing.T, m *master) {
	t.Helper()
	for _, line := range strings.Split(m.Log(), "\n") {
		var e map[string]any
		if line != "" && json.Unmarshal([]byte(line), &e) != nil {
			t.Errorf("a log line that is not JSON: %q", line)
		}
	}
}

// underLimit is /bin/sh setting the descriptor limit (soft and hard) to n
// before it execs the master.
func underLimit(n int) []string {
	return []string{"/bin/sh", "-c", fmt.Sprintf(`ulimit -n %d && exec "$@"`, n), "sh"}
}

// TestFaultMetricsIdleClients: under a descriptor limit of 64, 100
// clients make a keep-alive request to --metrics and stay connected. The
// master serves what it can spare and refuses the rest, so a rolling
// restart still forks its workers and completes; the idle connections are
// closed after the idle timeout; the log stays JSON.
func TestFaultMetricsIdleClients(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	metrics := freeTCP(t)
	m := startMasterVia(t, underLimit(64), []string{self}, "--env", roleEnv+"=worker", "--workers", "2",
		"--listen", "http=tcp://127.0.0.1:0", "--metrics", metrics)
	_, next := m.waitFor(0, "cluster ready", nil)

	const clients = 100
	type idle struct {
		c net.Conn
		r *bufio.Reader
	}
	var (
		mu    sync.Mutex
		held  []idle
		wg    sync.WaitGroup
		fails []error
	)
	for range clients {
		wg.Go(func() {
			c, r, err := idleHTTP(metrics)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				fails = append(fails, err)
			case c != nil:
				held = append(held, idle{c, r})
			}
		})
	}
	wg.Wait()
	defer func() {
		for _, h := range held {
			h.c.Close()
		}
	}()
	if len(fails) > 0 {
		t.Fatalf("%d clients failed: %v", len(fails), fails[0])
	}
	t.Logf("%d of %d idle clients served, the rest refused", len(held), clients)
	if len(held) == 0 || len(held) == clients {
		t.Errorf("%d of %d clients served: want some served, some refused", len(held), clients)
	}

	m.signal(syscall.SIGUSR2)
	m.waitFor(next, "restart complete", nil)
	if e := m.all("fork failed"); len(e) > 0 {
		t.Errorf("forks failed with idle metrics clients: %v", e)
	}

	// The idle connections are closed by the master.
	start := time.Now()
	for _, h := range held {
		h.c.SetReadDeadline(time.Now().Add(patience))
		if _, err := h.r.ReadByte(); !errors.Is(err, io.EOF) {
			t.Fatalf("an idle metrics connection: %v, want it closed by the master", err)
		}
	}
	t.Logf("idle connections closed after %s", time.Since(start).Round(time.Millisecond))
	if _, err := get(metrics, "/healthz"); err != nil {
		t.Fatal(err)
	}
	m.stop()
	checkJSONLog(t, m)
}

// TestFaultControlIdleClients: under a descriptor limit of 96 (about 30
// in use by a kernel-balanced master with 2 workers, and as many kept for
// forking them), 80 clients connect to the control socket and say nothing. The master keeps
// what it can spare and refuses the rest with a reason; the idle ones are
// closed after the idle timeout; then ctl works, and a rolling restart
// forks without a failure.
func TestFaultControlIdleClients(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	m := startMasterVia(t, underLimit(96), []string{self}, "--env", roleEnv+"=worker", "--workers", "2",
		"--listen", "http=tcp://127.0.0.1:0", "--control", sock)
	m.waitFor(0, "cluster ready", nil)

	const clients = 80
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range clients {
		c, err := net.DialTimeout("unix", sock, 5*time.Second)
		if err != nil {
			t.Fatalf("connect %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	// Each connection is refused (a reply, then closed), or held idle,
	// until the idle timeout closes it.
	var wg sync.WaitGroup
	var refused, closed sync.Map
	for i, c := range conns {
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(patience))
			b, err := io.ReadAll(c)
			switch {
			case err != nil:
				closed.Store(i, err)
			case len(b) > 0:
				refused.Store(i, string(b))
			}
		})
	}
	wg.Wait()
	var nRefused, nIdle int
	var failed []string
	refused.Range(func(_, v any) bool {
		nRefused++
		if !strings.Contains(v.(string), "refused") {
			failed = append(failed, v.(string))
		}
		return true
	})
	nIdle = clients - nRefused
	closed.Range(func(k, v any) bool { failed = append(failed, fmt.Sprintf("client %v: %v", k, v)); return true })
	if len(failed) > 0 {
		t.Fatalf("%d of %d control clients neither refused nor closed when idle, e.g. %q", len(failed), clients, failed[0])
	}
	t.Logf("%d idle control clients held, then closed; %d refused", nIdle, nRefused)
	if nRefused == 0 || nIdle == 0 {
		t.Errorf("%d refused, %d held: want some of each", nRefused, nIdle)
	}

	rep, err := ctlDo(sock, control.Request{Command: control.CommandStatus})
	if err != nil || !rep.OK {
		t.Fatalf("ctl status after the idle clients: %+v, %v", rep, err)
	}
	rep, err = ctlDo(sock, control.Request{Command: control.CommandRestart})
	if err != nil || !rep.OK {
		t.Fatalf("ctl restart after the idle clients: %+v, %v", rep, err)
	}
	if e := m.all("fork failed"); len(e) > 0 {
		t.Errorf("forks failed: %v", e)
	}
	if e := m.all("control socket: accept failed; no more control commands"); len(e) > 0 {
		t.Errorf("the control socket gave up: %v", e)
	}
	m.stop()
	checkJSONLog(t, m)
}
