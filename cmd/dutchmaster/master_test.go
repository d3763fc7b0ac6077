//go:build linux

package main

import (
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

	"github.com/dutchmaster/dutchmaster/cmd/internal/loadtest"
	"github.com/dutchmaster/dutchmaster/sockets/testproc"
)

// Roles the test binary plays (roles_test.go), chosen by testproc.Env (the helper-process
// pattern: no separate binaries to build or drift).
const roleEnv = testproc.Env

// patience bounds every wait on an event: generous, since these machines
// are shared; a healthy run takes a fraction of it.
const patience = 30 * time.Second

// logEvent is one JSON log line of the master.
type logEvent map[string]any

func (e logEvent) str(k string) string { s, _ := e[k].(string); return s }
func (e logEvent) num(k string) int    { f, _ := e[k].(float64); return int(f) }

// master is a dutchmaster process under test: the test binary in the
// master role, with the test binary in a worker role as its command. Its
// log is followed by loadtest.Master, as the soak's is.
type master struct {
	t *testing.T
	*loadtest.Master
}

// launch starts cmd, a master, and ends it with the test: killed if still
// running, its log shown if the test failed.
func launch(t *testing.T, cmd *exec.Cmd) *master {
	t.Helper()
	lm, err := loadtest.Launch(cmd)
	if err != nil {
		t.Fatal(err)
	}
	m := &master{t: t, Master: lm}
	t.Cleanup(m.cleanup)
	return m
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
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), roleEnv+"=master")
	cmd.Stdout = os.Stdout
	return launch(t, cmd)
}

// cleanup kills a master the test left running, and dumps its log when
// the test failed.
func (m *master) cleanup() {
	select {
	case <-m.Done():
	default:
		_ = m.Cmd.Process.Kill()
		<-m.Done()
	}
	if m.t.Failed() {
		m.t.Logf("master log:\n%s", m.Log())
	}
}

// waitFor returns the first event from index `from` on with the message
// and matching fields, and the index after it.
func (m *master) waitFor(from int, message string, fields map[string]any) (logEvent, int) {
	m.t.Helper()
	e, next, err := m.WaitFor(from, message, fields, patience)
	if err != nil {
		m.t.Fatal(err)
	}
	return logEvent(e.Fields), next
}

// events returns the events logged so far.
func (m *master) events() []logEvent {
	var out []logEvent
	for _, e := range m.Snapshot() {
		out = append(out, logEvent(e.Fields))
	}
	return out
}

// all returns the events logged so far with the message.
func (m *master) all(message string) []logEvent {
	var out []logEvent
	for _, e := range m.events() {
		if e.str("message") == message {
			out = append(out, e)
		}
	}
	return out
}

func (m *master) signal(sig syscall.Signal) {
	m.t.Helper()
	if err := m.Signal(sig); err != nil {
		m.t.Fatal(err)
	}
}

// wait returns the master's exit status, failing the test after patience.
func (m *master) wait() int {
	m.t.Helper()
	select {
	case <-m.Done():
	case <-time.After(patience):
		m.t.Fatalf("master still running after %s", patience)
	}
	err := m.Err()
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	m.t.Fatal(err)
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
