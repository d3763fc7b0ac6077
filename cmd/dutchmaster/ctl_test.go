//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/dutchmaster/dutchmaster/sockets/control"
)

// ctl runs `dutchmaster ctl --control path args...`.
func ctl(t *testing.T, path string, args ...string) result {
	t.Helper()
	return runDutchmaster(t, 0, append([]string{"ctl", "--control", path}, args...)...)
}

// status is `ctl --json status`, decoded.
func status(t *testing.T, path string) *control.Status {
	t.Helper()
	r := ctl(t, path, "status", "--json")
	var rep control.Reply
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &rep) != nil || rep.Status == nil {
		t.Fatalf("ctl status --json: %s", r)
	}
	return rep.Status
}

// TestCtl: status shows every worker; restart waits for the rollout and
// reports it complete, with every worker replaced; scale adds a worker;
// stop returns once the workers are gone, and the master exits 0 and
// removes its socket.
func TestCtl(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	m := startMaster(t, "worker", []string{"DM_TEST_BOOT=100ms"}, "--name", "web", "--control", sock, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
	m.address()
	_, next := m.waitFor(0, "cluster ready", nil)
	old, _ := listeningPIDs(m, 0, 2)

	r := ctl(t, sock, "status")
	head := regexp.MustCompile(fmt.Sprintf(`^dutchmaster web \(pid %d, up [0-9.]+m?s\): 2/2 workers listening, generation 1, policy rolling\n`, m.PID()))
	if r.code != 0 || !head.MatchString(r.stdout) {
		t.Fatalf("ctl status: want the line %q first\n%s", head, r)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 6 || !strings.HasPrefix(lines[1], "listeners: http=127.0.0.1:") || !strings.HasPrefix(lines[2], "command: ") ||
		strings.Join(strings.Fields(lines[3]), " ") != "WORKER PID PROCS RSS CPU HEARTBEAT SLOT GEN STATE UPTIME RESTARTS LAST EXIT" {
		t.Fatalf("ctl status table:\n%s", r.stdout)
	}
	for _, line := range lines[4:] {
		f := strings.Fields(line)
		id, _ := strconv.Atoi(strings.TrimPrefix(f[0], "w"))
		if pid, _ := strconv.Atoi(f[1]); pid != old[id] || f[7] != "1" || f[8] != "listening" || f[10] != "0" || f[11] != "-" {
			t.Errorf("row %q: want w%d with pid %d, generation 1, listening, 0 restarts, no exit", line, id, old[id])
		}
	}
	s := status(t, sock)
	if s.Uptime <= 0 || s.Started.IsZero() || len(s.Listeners) != 1 || s.Listeners[0].Name != "http" ||
		!strings.HasPrefix(s.Listeners[0].Address, "127.0.0.1:") || s.Listeners[0].Address == "127.0.0.1:0" ||
		len(s.Command) != 1 || s.LastRollout != nil || !slices.Equal(s.Serving, []int{1}) {
		t.Fatalf("status --json before a restart: %+v", s)
	}
	for _, w := range s.Workers {
		if w.Processes < 1 || w.RSS <= 0 || w.CPU < 0 || w.CPUPercent < 0 {
			t.Errorf("worker usage: %+v", w)
		}
	}

	// Piped (not a terminal): one line per step, then the summary that
	// names the old and the new pids.
	r = ctl(t, sock, "restart")
	out := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(out) < 2 || !strings.HasPrefix(out[0], "rollout: replacing 2 workers (pids ") ||
		!regexp.MustCompile(fmt.Sprintf(`^restart complete after [0-9.]+m?s: generation 2, pids (%d %d|%d %d) -> \d+ \d+$`, old[1], old[2], old[2], old[1])).MatchString(out[len(out)-1]) {
		t.Fatalf("ctl restart: %s", r)
	}
	steps := map[string]int{}
	for _, line := range out[1 : len(out)-1] {
		steps[strings.Fields(line)[0]]++
		if strings.Contains(line, "listening") {
			steps["listening"]++
		}
		if strings.Contains(line, "\r") {
			t.Errorf("piped output rewrites a line: %q", line)
		}
	}
	if steps["fork"] != 2 || steps["drain"] != 2 || steps["exit"] != 2 || steps["listening"] != 2 {
		t.Errorf("ctl restart: want 2 forks, 2 listening, 2 drains, 2 exits, got %v:\n%s", steps, r.stdout)
	}
	if !strings.Contains(r.stdout, "replaced 2 of 2") {
		t.Errorf("ctl restart: no line says replaced 2 of 2:\n%s", r.stdout)
	}
	_, next = m.waitFor(next, "restart complete", nil)
	s = status(t, sock)
	if s.Generation != 2 || s.Listening != 2 || len(s.Workers) != 2 || !slices.Equal(s.Serving, []int{2}) {
		t.Fatalf("after restart: %+v", s)
	}
	if l := s.LastRollout; l == nil || l.Outcome != "complete" || l.Generation != 2 || !strings.HasPrefix(l.Source, "ctl#") || l.Ended.IsZero() {
		t.Fatalf("after restart: last rollout %+v", l)
	}
	for _, w := range s.Workers {
		if w.Generation != 2 || w.Restarts != 1 || w.State != "listening" || w.RSS <= 0 {
			t.Errorf("after restart: %+v", w)
		}
	}
	for _, sl := range s.Slots {
		// The old workers were drained: each slot's last exit is theirs.
		if e := sl.LastExit; e == nil || old[e.Worker] == 0 || e.Reason == "" {
			t.Errorf("slot %d after restart: last exit %+v", sl.Index, e)
		}
	}
	waitGone(t, values(old)...)

	r = ctl(t, sock, "scale", "3")
	if r.code != 0 || r.stdout != "scaled: 3 workers\n" {
		t.Fatalf("ctl scale 3: %s", r)
	}
	m.waitFor(next, "worker listening", map[string]any{"slot": 2})
	if s := status(t, sock); s.Target != 3 || len(s.Workers) != 3 {
		t.Fatalf("after scale: %+v", s)
	}

	r = ctl(t, sock, "stop")
	if r.code != 0 || r.stdout != "stopped: every worker is gone\n" {
		t.Fatalf("ctl stop: %s", r)
	}
	if code := m.wait(); code != 0 {
		t.Fatalf("master exit status %d after ctl stop", code)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("control socket left behind: %v", err)
	}
	for _, e := range m.all("control command") {
		if e.num("uid") != 0 || e.num("peer_pid") == 0 {
			t.Errorf("control command logged without its peer: %v", e)
		}
	}
}

// TestCtlRestartAborted: when the replacement fails, ctl restart says the
// rollout aborted, exits 1, and the old workers keep serving.
func TestCtlRestartAborted(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	m := startMaster(t, "worker", []string{"DM_TEST_FAIL=crash", "DM_TEST_FAIL_GEN=2"}, "--control", sock, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	m.waitFor(0, "cluster ready", nil)
	old, _ := listeningPIDs(m, 0, 2)
	r := ctl(t, sock, "restart")
	if r.code != 1 || !regexp.MustCompile(`\nrestart aborted after [0-9.]+m?s: generation 2; serving pids \d+ \d+; reason: exited before ready`).MatchString(r.stdout) ||
		!strings.Contains(r.stderr, "rollout aborted: exited before ready: code 1") {
		t.Fatalf("ctl restart of a failing release: %s", r)
	}
	for _, pid := range old {
		if !alive(pid) {
			t.Errorf("old worker %d stopped by an aborted rollout", pid)
		}
	}
	if _, err := get(addr, "/"); err != nil {
		t.Fatal(err)
	}
	// The status says the workers serve generation 1, not the generation
	// 2 that aborted, and how the rollout ended.
	s := status(t, sock)
	if s.Generation != 2 || !slices.Equal(s.Serving, []int{1}) || s.LastRollout == nil || s.LastRollout.Outcome != "aborted" ||
		s.LastRollout.Generation != 2 || !strings.Contains(s.LastRollout.Reason, "exited before ready") {
		t.Fatalf("status after an aborted restart: generation %d, serving %v, last rollout %+v", s.Generation, s.Serving, s.LastRollout)
	}
	r = ctl(t, sock, "status")
	if !strings.Contains(r.stdout, "listening, serving generation 1 (generation 2 requested), policy") ||
		!strings.Contains(r.stdout, "\nlast rollout: aborted, generation 2 (ctl#") {
		t.Fatalf("ctl status after an aborted restart:\n%s", r)
	}
	failed := 0
	for _, sl := range s.Slots {
		if sl.LastExit != nil && strings.HasPrefix(sl.LastExit.Reason, "code 1") {
			failed++
		}
	}
	if failed != 1 {
		t.Errorf("after an aborted restart: %d slots whose last exit is the failed replacement's, want 1: %+v", failed, s.Slots)
	}
	r = ctl(t, sock, "--json", "restart")
	var rep control.Reply
	if r.code != 1 || json.Unmarshal([]byte(r.stdout), &rep) != nil || rep.Rollout == nil || rep.Rollout.Outcome != "aborted" {
		t.Fatalf("ctl --json restart: %s", r)
	}
	m.stop()
}

// TestControlSocketPermissions: the socket is mode 0600, so another user
// cannot even connect; and if its mode is widened, the master still
// refuses that user by its credentials (SO_PEERCRED), and logs it.
func TestControlSocketPermissions(t *testing.T) {
	dir, bin := sharedDir(t)
	sock := filepath.Join(dir, "ctl.sock")
	m := startMaster(t, "worker", nil, "--control", sock, "--workers", "1", "--listen", "http=tcp://127.0.0.1:0")
	_, next := m.waitFor(0, "cluster ready", nil)
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket mode %s, want a socket with 0600", fi.Mode())
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != uint32(os.Geteuid()) {
		t.Fatalf("control socket owned by uid %d", st.Uid)
	}

	r := runBinary(t, bin, nobody, "ctl", "--control", sock, "status")
	if r.code != 1 || !strings.Contains(r.stderr, "permission denied (the control socket is for the master's user and root)") {
		t.Fatalf("ctl status as nobody, socket 0600: %s", r)
	}

	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	r = runBinary(t, bin, nobody, "ctl", "--control", sock, "stop")
	want := fmt.Sprintf("permission denied: uid %d may not control this master", nobody)
	if r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Fatalf("ctl stop as nobody, socket 0666: want %q\n%s", want, r)
	}
	m.waitFor(next, "control connection refused: peer's uid may not control this master", map[string]any{"uid": nobody})
	if len(m.all("stopping")) != 0 || len(m.all("control command")) != 0 {
		t.Fatal("a refused peer's command was carried out")
	}
	// Root is served whatever the mode.
	if r := runBinary(t, bin, 0, "ctl", "--control", sock, "status"); r.code != 0 {
		t.Fatalf("ctl status as root: %s", r)
	}
	m.stop()
}

// TestControlSocketDefault: without --control the socket is
// dutchmaster-NAME.sock in $XDG_RUNTIME_DIR/dutchmaster, a directory the
// master creates mode 0700, which ctl --name finds from any working
// directory; a second master with the same name runs without one (a
// default never keeps a master from starting), but an explicit --control
// in use is refused.
func TestControlSocketDefault(t *testing.T) {
	runtimeDir := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", runtimeDir)
	t.Setenv(control.EnvControl, "")
	m := startMaster(t, "worker", nil, "--name", "api", "--workers", "1", "--listen", "http=tcp://127.0.0.1:0")
	e, _ := m.waitFor(0, "control socket listening", nil)
	sock := filepath.Join(runtimeDir, "dutchmaster", "dutchmaster-api.sock")
	if e.str("path") != sock || e.str("name") != "api" {
		t.Fatalf("control socket event %v, want path %s and name api", e, sock)
	}
	if fi, err := os.Stat(filepath.Dir(sock)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("control socket directory: %v, %v; want mode 0700", fi, err)
	}
	m.waitFor(0, "cluster ready", nil)
	t.Chdir("/") // the master's working directory is the test's
	if r := runDutchmaster(t, 0, "ctl", "--name", "api", "status"); r.code != 0 || !strings.HasPrefix(r.stdout, "dutchmaster api (pid ") {
		t.Fatalf("ctl --name api status from /: %s", r)
	}

	second := startMaster(t, "worker", nil, "--name", "api", "--workers", "1", "--listen", "http=tcp://127.0.0.1:0")
	second.waitFor(0, "running without a control socket (give this master a --name or a --control path of its own)", nil)
	second.waitFor(0, "cluster ready", nil)
	second.stop()

	third := startMaster(t, "worker", nil, "--control", sock, "--workers", "1", "--listen", "http=tcp://127.0.0.1:0")
	if code := third.wait(); code != exitUsage || !strings.Contains(third.Log(), "another master runs on this control socket") {
		t.Fatalf("explicit --control in use: exit %d\n%s", code, third.Log())
	}
	m.stop()
	if r := runDutchmaster(t, 0, "ctl", "--name", "api", "status"); r.code != 1 || !strings.Contains(r.stderr, "no control socket") {
		t.Fatalf("ctl after the master exited: %s", r)
	}
}

// TestControlSocketEnv: DUTCHMASTER_CONTROL gives the socket to the master
// and to ctl, which then needs neither --name nor --control; ctl ls lists
// it with the masters of the default directory, and a stale socket there
// as stale, without failing.
func TestControlSocketEnv(t *testing.T) {
	runtimeDir := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", runtimeDir)
	envSock := filepath.Join(t.TempDir(), "web.sock")
	t.Setenv(control.EnvControl, envSock)
	m := startMaster(t, "worker", nil, "--name", "web", "--workers", "1", "--listen", "http=tcp://127.0.0.1:0")
	if e, _ := m.waitFor(0, "control socket listening", nil); e.str("path") != envSock {
		t.Fatalf("control socket event %v, want path %s", e, envSock)
	}
	m.waitFor(0, "cluster ready", nil)
	if r := runDutchmaster(t, 0, "ctl", "status"); r.code != 0 || !strings.HasPrefix(r.stdout, "dutchmaster web (pid ") {
		t.Fatalf("ctl status with %s set: %s", control.EnvControl, r)
	}

	// A named master in the default directory, and a stale socket: bound,
	// then closed without its file being removed.
	t.Setenv(control.EnvControl, "")
	other := startMaster(t, "worker", nil, "--name", "api", "--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
	other.waitFor(0, "cluster ready", nil)
	stale := filepath.Join(runtimeDir, "dutchmaster", "dutchmaster-gone.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()

	t.Setenv(control.EnvControl, envSock)
	r := runDutchmaster(t, 0, "ctl", "ls", "--json")
	var ls lsReply
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &ls) != nil {
		t.Fatalf("ctl ls --json: %s", r)
	}
	got := map[string]lsEntry{}
	for _, e := range ls.Masters {
		got[e.Socket] = e
	}
	apiSock := filepath.Join(runtimeDir, "dutchmaster", "dutchmaster-api.sock")
	if e := got[apiSock]; len(got) != 3 || e.State != "running" || e.Name != "api" || e.PID != other.PID() ||
		e.Target != 2 || e.Generation != 1 || e.Uptime <= 0 {
		t.Errorf("ctl ls: api master: %+v (of %d)", e, len(got))
	}
	if e := got[envSock]; e.State != "running" || e.Name != "web" || e.PID != m.PID() {
		t.Errorf("ctl ls: the %s master: %+v", control.EnvControl, e)
	}
	if e := got[stale]; e.State != "stale" || e.Name != "gone" {
		t.Errorf("ctl ls: stale socket: %+v", e)
	}
	r = runDutchmaster(t, 0, "ctl", "ls")
	if r.code != 0 || !strings.Contains(r.stdout, "NAME") || !regexp.MustCompile(`(?m)^gone .*stale`).MatchString(r.stdout) {
		t.Errorf("ctl ls:\n%s", r)
	}
	m.stop()
	other.stop()
}

// TestControlSocketDirRefused: a default directory that other users could
// write in is refused, clearly: the master runs without a control socket
// and says why, ctl refuses to use it.
func TestControlSocketDirRefused(t *testing.T) {
	runtimeDir := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", runtimeDir)
	t.Setenv(control.EnvControl, "")
	dir := filepath.Join(runtimeDir, "dutchmaster")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	m := startMaster(t, "worker", nil, "--name", "api", "--workers", "1", "--listen", "http=tcp://127.0.0.1:0")
	e, _ := m.waitFor(0, "running without a control socket (give this master a --name or a --control path of its own)", nil)
	if !strings.Contains(e.str("error"), "mode 0777 lets other users write in it; refusing to use it") {
		t.Errorf("warning %v: want the reason", e)
	}
	m.waitFor(0, "cluster ready", nil)
	for _, args := range [][]string{{"ctl", "--name", "api", "status"}, {"ctl", "ls"}} {
		if r := runDutchmaster(t, 0, args...); r.code != 1 || !strings.Contains(r.stderr, dir+": mode 0777 lets other users write in it") {
			t.Errorf("%v: %s", args, r)
		}
	}
	m.stop()
}

// TestCtlUsage: bad command lines exit 2 and say why in one line, then
// point at --help.
func TestCtlUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"ctl"}, "no command"},
		{[]string{"ctl", "reboot"}, `unknown command "reboot"`},
		{[]string{"ctl", "scale"}, "scale takes one number"},
		{[]string{"ctl", "scale", "0"}, `scale "0": want a number of workers from 1 to 4096`},
		{[]string{"ctl", "status", "now"}, "status takes no argument"},
		{[]string{"ctl", "--bogus", "status"}, "flag provided but not defined"},
		{[]string{"replay"}, "want one journal FILE"},
	} {
		r := runDutchmaster(t, 0, c.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%v: want exit 2 and %q\n%s", c.args, c.want, r)
		}
		// One line, then the hint: never the whole usage.
		if lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n"); c.args[0] == "ctl" &&
			(len(lines) != 2 || lines[1] != ctlUsageHint) {
			t.Errorf("%v: want one line and %q, got:\n%s", c.args, ctlUsageHint, r.stderr)
		}
	}
}
