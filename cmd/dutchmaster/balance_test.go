//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/dutchmaster/dutchmaster/cmd/internal/loadtest"
	"github.com/dutchmaster/dutchmaster/sockets/reuseport"
)

// needKernelBalance skips a test of the kernel mode where this process
// could not load its program (no CAP_BPF): the master could not either.
func needKernelBalance(t *testing.T) {
	t.Helper()
	if err := reuseport.Available(); err != nil {
		t.Skipf("the socket-selection program is not available here: %v", err)
	}
}

// balanceLine is the master's one line saying which balance it took.
func balanceLine(t *testing.T, m *master) logEvent {
	t.Helper()
	for _, e := range m.events() {
		if e.str("balance") != "" {
			return e
		}
	}
	t.Fatal("no balance line in the master's log")
	return nil
}

// keepAlivePIDs opens n connections to addr at once, then sends one
// request on each and returns, per connection, the pid that answered it.
func keepAlivePIDs(t *testing.T, addr string, n int) []int {
	t.Helper()
	pids, err := loadtest.OpenTogether(addr, n, patience)
	if err != nil {
		t.Fatal(err)
	}
	return pids
}

// TestKernelBalanceSpreadsConnections: with --balance kernel, 16
// keep-alive connections opened together over 4 workers land on every
// worker, none on more than 5 (with one shared socket, 0/0/1/15 happens).
func TestKernelBalanceSpreadsConnections(t *testing.T) {
	needKernelBalance(t)
	m := startMaster(t, "worker", nil, "--workers", "4", "--balance", "kernel", "--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	m.waitFor(0, "cluster ready", nil)
	workers, _ := listeningPIDs(m, 0, 4)
	if e := balanceLine(t, m); e.str("balance") != "kernel" || e["migrate"] != reuseport.Migrates() {
		t.Fatalf("balance line %v, want kernel, migrate %v", e, reuseport.Migrates())
	}

	checkSpread(t, addr, workers) // every one of the 4 workers answers
	m.stop()
}

// TestKernelBalanceRollingRestart: in the kernel mode, a rolling restart
// replaces every worker without one failed request, and the replacements
// share the connections too.
func TestKernelBalanceRollingRestart(t *testing.T) {
	needKernelBalance(t)
	m := startMaster(t, "worker", []string{"DM_TEST_BOOT=200ms"}, "--workers", "4", "--balance", "kernel", "--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	_, next := m.waitFor(0, "cluster ready", nil)
	old, _ := listeningPIDs(m, 0, 4)

	fresh := restartUnderLoad(t, m, addr, old, next)

	checkSpread(t, addr, fresh)
	m.stop()
	waitGone(t, values(fresh)...)
}

// TestBalanceShared: --balance shared says so and serves as always; a
// master whose only listener is a unix socket takes shared under auto,
// saying why.
func TestBalanceShared(t *testing.T) {
	m := startMaster(t, "worker", nil, "--workers", "2", "--balance", "shared", "--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	m.waitFor(0, "cluster ready", nil)
	if e := balanceLine(t, m); e.str("balance") != "shared" || e.str("message") != "balance: shared (asked for)" {
		t.Errorf("balance line %v, want shared, asked for", e)
	}
	if body, err := get(addr, "/"); err != nil || body == "" {
		t.Errorf("GET /: %q, %v", body, err)
	}
	m.stop()

	sock := fmt.Sprintf("%s/w.sock", t.TempDir())
	m = startMaster(t, "worker", nil, "--workers", "1", "--listen", "http=unix://"+sock)
	m.waitFor(0, "cluster ready", nil)
	if e := balanceLine(t, m); e.str("balance") != "shared" || e.str("reason") != "no TCP listener" {
		t.Errorf("balance line %v, want shared for want of a TCP listener", e)
	}
	m.stop()
}

// fellBackTo checks that m took mode because the socket-selection
// program could not be loaded, and serves at addr; then it stops m.
func fellBackTo(t *testing.T, m *master, mode, addr string) {
	t.Helper()
	e := balanceLine(t, m)
	if e.str("balance") != mode || !strings.HasPrefix(e.str("reason"), "the socket-selection program could not be loaded: ") {
		t.Errorf("balance line %v, want %s because the program could not be loaded", e, mode)
	}
	if body, err := get(addr, "/"); err != nil || body == "" {
		t.Errorf("GET /: %q, %v", body, err)
	}
	m.stop()
}

// withoutBPF runs the rest of a command line without CAP_BPF and
// CAP_SYS_ADMIN (dropped from the bounding set, so a root master loses
// them too): the socket-selection program cannot be loaded.
func withoutBPF(t *testing.T) []string {
	t.Helper()
	needKernelBalance(t) // otherwise there is nothing to fall back from
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("no setpriv to drop CAP_BPF with")
	}
	return []string{setpriv, "--bounding-set", "-bpf,-sys_admin", "--inh-caps", "-bpf,-sys_admin", "--"}
}

// TestBalanceFallsBackWithoutBPF: a master that cannot load the program
// takes shared under auto, says why in its one balance line, and serves;
// asked for kernel, it refuses to start, naming the option.
func TestBalanceFallsBackWithoutBPF(t *testing.T) {
	via := withoutBPF(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	m := startMasterVia(t, via, []string{self}, "--env", roleEnv+"=worker", "--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	m.waitFor(0, "cluster ready", nil)
	fellBackTo(t, m, "shared", addr)

	m = startMasterVia(t, via, []string{self}, "--control", "none", "--balance", "kernel", "--listen", "http=tcp://127.0.0.1:0")
	if code := m.wait(); code != exitUsage {
		t.Errorf("--balance kernel without CAP_BPF: exit %d, want %d", code, exitUsage)
	}
	if log := m.Log(); !strings.Contains(log, "--balance kernel: the socket-selection program could not be loaded") {
		t.Errorf("the refusal does not say why:\n%s", log)
	}
	if len(m.all("fork")) != 0 {
		t.Error("a worker was started")
	}
}
