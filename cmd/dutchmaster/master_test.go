package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Roles the test binary plays, chosen by DM_TEST_ROLE (the helper-process
// pattern: no separate binaries to build or drift).
const roleEnv = "DM_TEST_ROLE"

// patience bounds every wait on an event: generous, since these machines
// are shared; a healthy run takes a fraction of it.
const patience = 30 * time.Second

// logEvent is one JSON log line of the master.
type logEvent map[string]any

func (e logEvent) str(k string) string { s, _ := e[k].(string); return s }
func (e logEvent) num(k string) int    { f, _ := e[k].(float64); return int(f) }

// master is a dutchmaster process under test: the test binary in the
// master role, with the test binary in a worker role as its command.
type master struct {
	t      *testing.T
	cmd    *exec.Cmd
	mu     sync.Mutex
	events []logEvent
	grew   chan struct{} // closed and replaced whenever events grows
	raw    strings.Builder
	done   chan struct{} // closed when the process has exited
	err    error
}

// startMaster runs `dutchmaster flags -- <test binary>` with the worker
// role and environment given.
func startMaster(t *testing.T, workerRole string, workerEnv []string, flags ...string) *master {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	flags = append([]string{"--env", roleEnv + "=" + workerRole}, flags...)
	for _, kv := range workerEnv {
		flags = append(flags, "--env", kv)
	}
	return startMasterCommand(t, []string{self}, flags...)
}

// startMasterCommand runs `dutchmaster flags -- command`.
func startMasterCommand(t *testing.T, command []string, flags ...string) *master {
	t.Helper()
	return startMasterVia(t, nil, command, flags...)
}

// startMasterVia runs `via... dutchmaster flags -- command`: via is a
// program that sets something up and execs the rest (nil: none).
func startMasterVia(t *testing.T, via, command []string, flags ...string) *master {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := append(append(append(slices.Clone(via), self, "--log-format", "json"), flags...), "--")
	args = append(args, command...)
	m := &master{t: t, grew: make(chan struct{}), done: make(chan struct{})}
	m.cmd = exec.Command(args[0], args[1:]...)
	m.cmd.Env = append(os.Environ(), roleEnv+"=master")
	stderr, err := m.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	m.cmd.Stdout = os.Stdout
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go m.read(stderr)
	t.Cleanup(m.cleanup)
	return m
}

func (m *master) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var e logEvent
		if json.Unmarshal([]byte(line), &e) != nil {
			e = logEvent{"message": "(not json) " + line}
		}
		m.mu.Lock()
		m.events = append(m.events, e)
		m.raw.WriteString(line + "\n")
		close(m.grew)
		m.grew = make(chan struct{})
		m.mu.Unlock()
	}
	m.err = m.cmd.Wait()
	close(m.done)
}

// cleanup kills a master the test left running, and dumps its log when
// the test failed.
func (m *master) cleanup() {
	select {
	case <-m.done:
	default:
		_ = m.cmd.Process.Kill()
		<-m.done
	}
	if m.t.Failed() {
		m.mu.Lock()
		m.t.Logf("master log:\n%s", m.raw.String())
		m.mu.Unlock()
	}
}

// waitFor returns the first event from index `from` on with the message
// and matching fields, and the index after it.
func (m *master) waitFor(from int, message string, fields map[string]any) (logEvent, int) {
	m.t.Helper()
	deadline := time.After(patience)
	for {
		m.mu.Lock()
		for i := from; i < len(m.events); i++ {
			if e := m.events[i]; e.str("message") == message && matches(e, fields) {
				m.mu.Unlock()
				return e, i + 1
			}
		}
		from = max(from, len(m.events))
		grew := m.grew
		m.mu.Unlock()
		select {
		case <-grew:
		case <-m.done:
			m.mu.Lock()
			n := len(m.events)
			m.mu.Unlock()
			if from >= n {
				m.t.Fatalf("master exited (%v) before logging %q %v", m.err, message, fields)
			}
		case <-deadline:
			m.t.Fatalf("no %q %v within %s", message, fields, patience)
		}
	}
}

func matches(e logEvent, fields map[string]any) bool {
	for k, want := range fields {
		got := e[k]
		if f, ok := got.(float64); ok {
			got = int(f)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return false
		}
	}
	return true
}

// all returns the events logged so far with the message.
func (m *master) all(message string) []logEvent {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []logEvent
	for _, e := range m.events {
		if e.str("message") == message {
			out = append(out, e)
		}
	}
	return out
}

func (m *master) signal(sig syscall.Signal) {
	m.t.Helper()
	if err := m.cmd.Process.Signal(sig); err != nil {
		m.t.Fatal(err)
	}
}

// wait returns the master's exit status, failing the test after patience.
func (m *master) wait() int {
	m.t.Helper()
	select {
	case <-m.done:
	case <-time.After(patience):
		m.t.Fatalf("master still running after %s", patience)
	}
	if m.err == nil {
		return 0
	}
	if ee, ok := m.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	m.t.Fatal(m.err)
	return -1
}

// address waits for the master to report the listener's bound address.
func (m *master) address() string {
	e, _ := m.waitFor(0, "listening", nil)
	return e.str("address")
}

// alive reports whether pid is still a process (not yet reaped by anyone
// counts as alive only if not a zombie).
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses: "pid (comm) S ...".
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// waitGone waits until none of the pids is alive.
func waitGone(t *testing.T, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("pid %d still alive after %s", pid, patience)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// get fetches a URL path from the cluster with a fresh connection.
func get(addr, path string) (string, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: status %d: %s", path, resp.StatusCode, body)
	}
	return string(body), err
}

// freeTCP returns a loopback address nobody listens on right now.
func freeTCP(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// listenOn holds addr so that nobody else can bind it.
func listenOn(t *testing.T, addr string) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// stop stops the master gracefully and expects exit status 0.
func (m *master) stop() {
	m.t.Helper()
	m.signal(syscall.SIGTERM)
	if code := m.wait(); code != 0 {
		m.t.Fatalf("exit status %d after SIGTERM, want 0", code)
	}
}
