//go:build linux

package main

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster/cmd/internal/loadtest"
)

// The tests of this file upgrade a running master in place (`ctl
// upgrade`, docs/operations.md): the test binary, a master, executes a
// second build of dutchmaster (another version string) and back, under
// load, in the middle of a rollout, with Node.js cluster workers; and
// refused upgrades leave the old master serving.

// upgradeVersion is the version string of the second build.
const upgradeVersion = "v9.9.9-upgrade"

// upgradeBinary builds dutchmaster with version upgradeVersion.
func upgradeBinary(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("no go command to build the second binary with")
	}
	bin := filepath.Join(t.TempDir(), "dutchmaster-next")
	build := exec.Command(goBin, "build", "-ldflags", "-X main.version="+upgradeVersion, "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// self is the test binary, which is also a dutchmaster (version (devel)).
func self(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// upgrade runs `ctl upgrade --binary bin` and checks its report: the
// master's pid kept, the new version.
func upgrade(t *testing.T, m *master, sock, bin, version string) {
	t.Helper()
	from := m.Mark()
	r := ctl(t, sock, "upgrade", "--binary", bin)
	want := fmt.Sprintf("upgraded: pid %d kept, ", m.PID())
	if r.code != 0 || !strings.HasPrefix(r.stdout, want) || !strings.Contains(r.stdout, "→ "+version) {
		t.Fatalf("ctl upgrade --binary %s: want %q... → %s\n%s", bin, want, version, r)
	}
	e, _ := m.waitFor(from, "upgrade: took over", nil)
	if e.num("pid") != m.PID() {
		t.Errorf("took over in pid %d, want the master's %d", e.num("pid"), m.PID())
	}
}

// openFDs lists the descriptors pid holds.
func openFDs(t *testing.T, pid int) []int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	for _, e := range ents {
		n, _ := strconv.Atoi(e.Name())
		fds = append(fds, n)
	}
	slices.Sort(fds)
	return fds
}

// steadyFDs is how many descriptors pid holds once the count stays the
// same over three looks 20 ms apart (a control connection that just
// answered closes meanwhile).
func steadyFDs(t *testing.T, pid int) int {
	t.Helper()
	n, same := len(openFDs(t, pid)), 0
	for deadline := time.Now().Add(patience); same < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d's descriptor count did not settle within %s", pid, patience)
		}
		time.Sleep(20 * time.Millisecond)
		if m := len(openFDs(t, pid)); m == n {
			same++
		} else {
			n, same = m, 0
		}
	}
	return n
}

// statusPIDs are the pids of the workers status lists, by worker id.
func statusPIDs(t *testing.T, sock string) map[int]int {
	t.Helper()
	out := map[int]int{}
	for _, w := range status(t, sock).Workers {
		out[w.ID] = w.PID
	}
	return out
}

// TestUpgradeUnderLoad: 4 workers under a load that never retries, in
// both connection modes; the master upgrades to a second build and back.
// Not one request fails, the master and every worker keep their pids,
// the master holds the same descriptors as before, status reports the new
// version, and a rolling restart afterwards replaces every worker without
// a failed request.
func TestUpgradeUnderLoad(t *testing.T) {
	next := upgradeBinary(t)
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	m := startMaster(t, "worker", nil, "--workers", "4", "--control", sock, "--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	_, from := m.waitFor(0, "cluster ready", nil)
	old, _ := listeningPIDs(m, 0, 4)
	before := steadyFDs(t, m.PID())
	var afterFirst int

	for _, mode := range []string{loadtest.ModeKeepAlive, loadtest.ModeClose} {
		load := loadtest.Start(loadtest.Spec{Addr: addr, Clients: 4, Mode: mode, Timeout: 10 * time.Second,
			MaxRequests: 1 << 30, Deadline: time.Now().Add(2 * time.Minute)})
		if !load.WaitDone(50, patience) {
			load.Finish()
			t.Fatalf("%s: the load did not get going", mode)
		}
		upgrade(t, m, sock, next, upgradeVersion)
		if afterFirst == 0 {
			afterFirst = steadyFDs(t, m.PID())
		}
		if st := status(t, sock); st.Version != upgradeVersion || st.Upgrades.Count == 0 {
			t.Errorf("%s: status after the upgrade: version %q, upgrades %+v", mode, st.Version, st.Upgrades)
		}
		done := load.DoneCount()
		if !load.WaitDone(done+50, patience) {
			t.Errorf("%s: no requests answered after the upgrade", mode)
		}
		upgrade(t, m, sock, self(t), "(devel)")
		done = load.DoneCount()
		load.WaitDone(done+50, patience)
		load.Finish()
		if n := load.FailedCount(); n != 0 {
			t.Errorf("%s: %d of %d requests failed across two upgrades; first: %+v", mode, n, load.DoneCount(), load.Failures[0])
		}
	}
	if got := statusPIDs(t, sock); !maps.Equal(got, old) {
		t.Errorf("workers after the upgrades %v, want the same as before %v", got, old)
	}
	// The numbers change (a takeover duplicates some), their count must
	// not; a control connection of the last ctl may still be closing.
	last := len(openFDs(t, m.PID()))
	for deadline := time.Now().Add(patience); last != afterFirst && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		last = len(openFDs(t, m.PID()))
	}
	if last != afterFirst || afterFirst > before {
		t.Errorf("the master's descriptors: %d before, %d after the first upgrade, %d after the fourth", before, afterFirst, last)
	}
	if len(m.all("fork")) != 4 || len(m.all("drain")) != 0 {
		t.Errorf("an upgrade forked or drained: %d forks, %d drains", len(m.all("fork")), len(m.all("drain")))
	}
	restartUnderLoad(t, m, addr, old, from)
	m.stop()
}

// TestUpgradeMidRollout: an upgrade while a rolling restart waits for a
// booting replacement; the rollout completes under the new binary, with
// no worker drained before its replacement listened, and the journal
// recorded across the upgrade replays.
func TestUpgradeMidRollout(t *testing.T) {
	next := upgradeBinary(t)
	dir := t.TempDir()
	sock, journal := filepath.Join(dir, "ctl.sock"), filepath.Join(dir, "journal")
	m := startMaster(t, "worker", []string{"DM_TEST_BOOT=1500ms"}, "--workers", "2", "--control", sock, "--record", journal,
		"--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	_, from := m.waitFor(0, "cluster ready", nil)
	old, _ := listeningPIDs(m, 0, 2)
	load := loadtest.Start(loadtest.Spec{Addr: addr, Clients: 2, Mode: loadtest.ModeKeepAlive, Timeout: 10 * time.Second,
		MaxRequests: 1 << 30, Deadline: time.Now().Add(2 * time.Minute)})
	defer load.Finish()

	m.signal(syscall.SIGUSR2)
	fork, at := m.waitFor(from, "fork", map[string]any{"replacement": true})
	upgrade(t, m, sock, next, upgradeVersion)
	_, took := m.waitFor(at, "upgrade: took over", nil)
	m.waitFor(took, "worker listening", map[string]any{"worker": float64(fork.num("worker"))})
	_, done := m.waitFor(took, "restart complete", nil)
	waitGone(t, values(old)...)
	checkReplaceBeforeStop(t, m, done)
	load.Finish()
	if n := load.FailedCount(); n != 0 {
		t.Errorf("%d requests failed across the upgrade in the rollout", n)
	}
	m.stop()
	r := runDutchmaster(t, 0, "replay", journal)
	if r.code != 0 {
		t.Errorf("replay of the journal recorded across the upgrade:\n%s", r)
	}
}

// TestUpgradeRefused: a binary that does not exist, one that is not
// executable, and one that cannot take over (its upgrade-check fails)
// are refused with the reason; the master goes on serving, unchanged.
func TestUpgradeRefused(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "ctl.sock")
	m := startMaster(t, "worker", nil, "--workers", "2", "--control", sock, "--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	m.waitFor(0, "cluster ready", nil)
	pids, _ := listeningPIDs(m, 0, 2)

	plain := filepath.Join(dir, "plain")
	older := filepath.Join(dir, "older")
	for path, text := range map[string]string{
		plain: "not a program\n",
		older: "#!/bin/sh\necho 'the handed-over state format 1 is not one this binary reads' >&2\nexit 1\n",
	} {
		mode := os.FileMode(0o755)
		if path == plain {
			mode = 0o644
		}
		if err := os.WriteFile(path, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ bin, why string }{
		{filepath.Join(dir, "missing"), "no such file or directory"},
		{plain, "permission denied"},
		{older, "cannot take over: the handed-over state format 1 is not one this binary reads"},
	} {
		r := ctl(t, sock, "upgrade", "--binary", c.bin)
		if r.code != 1 || !strings.Contains(r.stderr, c.why) {
			t.Errorf("ctl upgrade --binary %s: want exit 1 saying %q\n%s", c.bin, c.why, r)
		}
		if body, err := get(addr, "/"); err != nil || body == "" {
			t.Errorf("after the refused upgrade to %s: GET /: %q, %v", c.bin, body, err)
		}
	}
	st := status(t, sock)
	if st.PID != m.PID() || st.Upgrades.Count != 0 || !strings.Contains(st.Upgrades.LastError, "cannot take over") {
		t.Errorf("status after refused upgrades: pid %d (want %d), upgrades %+v", st.PID, m.PID(), st.Upgrades)
	}
	if got := statusPIDs(t, sock); !maps.Equal(got, pids) {
		t.Errorf("workers after refused upgrades %v, want %v", got, pids)
	}
	m.stop()
}

// TestUpgradeKeepsTheSafetyNets: after an upgrade, a worker forked by the
// new image holds no descriptor the old one did not give it (the same
// descriptors as a worker forked before), and SIGKILL of the master ends
// every worker, those forked before the upgrade and after it.
func TestUpgradeKeepsTheSafetyNets(t *testing.T) {
	next := upgradeBinary(t)
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	m := startMaster(t, "worker", nil, "--workers", "2", "--control", sock, "--listen", "http=tcp://127.0.0.1:0")
	m.address()
	_, from := m.waitFor(0, "cluster ready", nil)
	before, _ := listeningPIDs(m, 0, 2)
	upgrade(t, m, sock, next, upgradeVersion)
	if r := ctl(t, sock, "scale", "3"); r.code != 0 {
		t.Fatalf("ctl scale 3: %s", r)
	}
	e, _ := m.waitFor(from, "worker listening", map[string]any{"worker": float64(3)})
	after := e.num("pid")
	if a, b := openFDs(t, after), openFDs(t, before[1]); !slices.Equal(a, b) {
		t.Errorf("a worker forked after the upgrade holds %v, one forked before %v", a, b)
	}
	// A worker of the old image that crashes now is seen, reaped (not
	// left a zombie) and replaced by the new one.
	crashed := before[1]
	mark := m.Mark()
	if err := syscall.Kill(crashed, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	m.waitFor(mark, "worker exited", map[string]any{"pid": float64(crashed)})
	e, _ = m.waitFor(mark, "worker listening", nil)
	replacement := e.num("pid")
	waitReaped(t, crashed)

	if err := m.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-m.Done()
	waitGone(t, before[2], after, replacement)
}

// waitReaped waits until pid is no process at all: not even a zombie
// waiting for its parent.
func waitReaped(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d not reaped after %s", pid, patience)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestUpgradeNodeCluster: Node.js cluster workers keep their channel
// across an upgrade: afterwards a rolling restart drains them through it
// (the cluster's disconnect) and each exits cleanly, without one failed
// request.
func TestUpgradeNodeCluster(t *testing.T) {
	next := upgradeBinary(t)
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	m, addr, old, _ := clusterApp(t, 2, "--kill-timeout", "30s", "--control", sock)
	upgrade(t, m, sock, next, upgradeVersion)
	if got := statusPIDs(t, sock); !maps.Equal(got, old) {
		t.Errorf("workers after the upgrade %v, want %v", got, old)
	}
	restartsCleanUnderKeepAlive(t, m, addr, old, m.Mark(), 1)
	m.stop()
}

// TestUpgradeExecFails: a binary that passes its check and is gone when
// the master executes it (it removes itself during upgrade-check): the
// exec fails, and the master takes everything back and goes on as it was,
// under load without a failed request; the journal records the failure
// and still replays; a real upgrade afterwards works.
func TestUpgradeExecFails(t *testing.T) {
	next := upgradeBinary(t)
	dir := t.TempDir()
	sock, journal := filepath.Join(dir, "ctl.sock"), filepath.Join(dir, "journal")
	m := startMaster(t, "worker", nil, "--workers", "2", "--control", sock, "--record", journal, "--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	m.waitFor(0, "cluster ready", nil)
	pids, _ := listeningPIDs(m, 0, 2)
	load := loadtest.Start(loadtest.Spec{Addr: addr, Clients: 2, Mode: loadtest.ModeKeepAlive, Timeout: 10 * time.Second,
		MaxRequests: 1 << 30, Deadline: time.Now().Add(2 * time.Minute)})
	defer load.Finish()

	vanishing := filepath.Join(dir, "vanishing")
	if err := os.WriteFile(vanishing, []byte("#!/bin/sh\nrm -f \"$0\"\necho v0-gone\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := ctl(t, sock, "upgrade", "--binary", vanishing)
	if r.code != 1 || !strings.Contains(r.stderr, "upgrade failed: executing "+vanishing) {
		t.Fatalf("ctl upgrade to a binary gone at the exec: want exit 1, upgrade failed\n%s", r)
	}
	st := status(t, sock)
	if st.PID != m.PID() || st.Upgrades.Count != 0 || st.Upgrades.Failed != 1 {
		t.Errorf("status after the failed exec: pid %d (want %d), upgrades %+v", st.PID, m.PID(), st.Upgrades)
	}
	if got := statusPIDs(t, sock); !maps.Equal(got, pids) {
		t.Errorf("workers after the failed exec %v, want %v", got, pids)
	}
	// Everything the handover paused goes on: requests, the workers'
	// reports (a scale), the control socket, and a real upgrade.
	done := load.DoneCount()
	if !load.WaitDone(done+50, patience) {
		t.Fatal("no requests answered after the failed exec")
	}
	mark := m.Mark()
	if r := ctl(t, sock, "scale", "3"); r.code != 0 {
		t.Fatalf("ctl scale 3 after the failed exec: %s", r)
	}
	m.waitFor(mark, "worker listening", nil)
	upgrade(t, m, sock, next, upgradeVersion)
	load.Finish()
	if n := load.FailedCount(); n != 0 {
		t.Errorf("%d requests failed across the failed and the real upgrade", n)
	}
	m.stop()
	if r := runDutchmaster(t, 0, "replay", journal); r.code != 0 {
		t.Errorf("replay of the journal with a failed and a real upgrade:\n%s", r)
	}
}
