//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster/cmd/internal/loadtest"
	"github.com/dutchmaster/dutchmaster/sockets/reuseport"
)

// What the fault suite (faults_test.go) reads and checks around every
// fault: the cluster replayed from the master's log, the master's
// descriptors by kind, its children and descendants from /proc, and the
// wait for a master to have taken every signal sent to it.

// cluster replays the log up to now.
func (m *master) cluster() *loadtest.Cluster {
	c := loadtest.NewCluster()
	for _, e := range m.Snapshot() {
		c.Apply(e)
	}
	return c
}

// waitSettled waits until the log shows a cluster at rest and returns it.
// Call it after waiting for the event a fault causes: the log cannot show
// what the master has not yet seen.
func (m *master) waitSettled() *loadtest.Cluster {
	m.t.Helper()
	deadline := time.After(patience)
	for {
		grew := m.Grew()
		if c := m.cluster(); c.Settled() {
			return c
		}
		select {
		case <-grew:
		case <-m.Done():
			m.t.Fatalf("master exited (%v) before its cluster settled", m.Err())
		case <-deadline:
			m.t.Fatalf("cluster not settled within %s: %+v", patience, m.cluster())
		}
	}
}

// quietPeriod is how long a cluster must log nothing to count as having
// taken every signal sent to it (quiesce).
const quietPeriod = 300 * time.Millisecond

// quiesce waits until the master has taken every signal sent to it and
// its cluster has settled. No event says that the last signal was taken:
// the kernel's part is visible (no signal pending in /proc/<pid>/status),
// the Go runtime's is not (its signal goroutine hands each signal to Run's
// channel, without a system call). So, once nothing is pending, the
// cluster must stay settled with its log silent for quietPeriod, a fixed
// wait for something that has no event.
func (m *master) quiesce() *loadtest.Cluster {
	m.t.Helper()
	deadline := time.Now().Add(patience)
	for pendingSignals(m.PID()) {
		if time.Now().After(deadline) {
			m.t.Fatalf("signals still pending for the master after %s", patience)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for {
		c := m.waitSettled()
		n := m.Mark()
		time.Sleep(quietPeriod)
		if m.Mark() == n {
			return c
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("master's log not quiet within %s", patience)
		}
	}
}

// pendingSignals reports whether a signal is pending for pid or one of
// its threads (ShdPnd, SigPnd).
func pendingSignals(pid int) bool {
	paths, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, p := range append(paths, fmt.Sprintf("/proc/%d/status", pid)) {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(data), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if ok && (k == "ShdPnd" || k == "SigPnd") && strings.Trim(strings.TrimSpace(v), "0") != "" {
				return true
			}
		}
	}
	return false
}

// fdProfile counts the master's descriptors by kind: socket, pipe,
// anon_inode:[pidfd], a file's path.
func fdProfile(t *testing.T, pid int) map[string]int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		kind, _, _ := strings.Cut(target, ":[")
		if kind == "anon_inode" {
			kind = target
		}
		out[kind]++
	}
	return out
}

// procStat is what /proc/<pid>/stat says of a process.
type procStat struct {
	ppid  int
	state byte
}

func readStat(pid int) (procStat, bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, false
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	if i < 0 || len(f) < 2 {
		return procStat{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	return procStat{ppid: ppid, state: f[0][0]}, true
}

// children returns the pids whose parent is pid, with their state.
func children(pid int) map[int]byte {
	out := map[int]byte{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readStat(p); ok && st.ppid == pid {
			out[p] = st.state
		}
	}
	return out
}

// descendants returns every process below pid.
func descendants(pid int) []int {
	var out []int
	for queue := []int{pid}; len(queue) > 0; queue = queue[1:] {
		for c := range children(queue[0]) {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// checkChildren fails the test unless the master's children are exactly
// the live workers of its log, none of them a zombie.
func checkChildren(t *testing.T, m *master, c *loadtest.Cluster) {
	t.Helper()
	want := c.LivePIDs()
	var got []int
	for pid, state := range children(m.PID()) {
		if state == 'Z' {
			t.Errorf("zombie child %d of the master", pid)
		}
		got = append(got, pid)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("master's children %v, live workers by the log %v", got, want)
	}
}

// baseline is a settled cluster's state, to compare with after a fault.
type baseline struct {
	fds     map[string]int
	workers int
}

func takeBaseline(t *testing.T, m *master) baseline {
	t.Helper()
	c := m.waitSettled()
	checkChildren(t, m, c)
	return baseline{fds: fdProfile(t, m.PID()), workers: len(c.Live)}
}

// checkSettledLike waits for the cluster to settle again and compares it
// with the baseline: the same descriptors, children that are the live
// workers.
func checkSettledLike(t *testing.T, m *master, b baseline) *loadtest.Cluster {
	t.Helper()
	c := m.waitSettled()
	checkChildren(t, m, c)
	if got := fdProfile(t, m.PID()); !mapsEqual(got, b.fds) {
		t.Errorf("master's descriptors %v after the fault, %v before", got, b.fds)
	}
	return c
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// checkFDsFor checks the descriptors a cluster of n workers needs, by
// kind, when there is no earlier baseline (a fault during start-up): a
// socket per listener, one for sd_notify, one IPC channel and two pidfds
// per worker (os.Process's, and the one its exit is awaited on). A master
// that balances its TCP listeners in the kernel holds for each also a
// socket per slot (n of them, the workers it started with) and the
// selection program with its three maps.
func checkFDsFor(t *testing.T, m *master, listeners, n int) {
	t.Helper()
	fds := fdProfile(t, m.PID())
	slots, programs := 0, 0
	if balanceLine(t, m).str("balance") == "kernel" {
		slots, programs = n, listeners
	}
	if got, want := fds["socket"], listeners*(1+slots)+1+n; got != want {
		t.Errorf("%d sockets with %d listeners, %d slots each and %d workers, want %d: %v", got, listeners, slots, n, want, fds)
	}
	if got := fds["anon_inode:[pidfd]"]; got != 2*n {
		t.Errorf("%d pidfds with %d workers, want %d: %v", got, n, 2*n, fds)
	}
	if got, want := fds["anon_inode:bpf-prog"]+fds["anon_inode:bpf-map"], programs*reuseport.Descriptors; got != want {
		t.Errorf("%d descriptors of selection programs and maps with %d balanced listeners, want %d: %v", got, programs, want, fds)
	}
}

// stopAndCheck stops the master gracefully (exit status 0) and checks that
// every process it ever had below it is gone: the workers of its log, the
// descendants seen now, and the extra pids given.
func stopAndCheck(t *testing.T, m *master, extra ...int) {
	t.Helper()
	pids := append(descendants(m.PID()), extra...)
	m.signal(syscall.SIGTERM)
	if code := m.wait(); code != 0 {
		t.Fatalf("exit status %d after SIGTERM, want 0", code)
	}
	checkGone(t, m, pids...)
	checkWorkerFields(t, m)
}

// checkWorkerFields holds the master's log to its rule: every line about
// a worker carries its slot, generation and state, and its pid once the
// process exists, that is from the first line that showed it on (a worker
// can be drained or killed while its fork is still under way, before it
// has a pid). Lines of worker output (--log-worker-output, with a
// "stream") are cut before the pid is known and are not about the
// worker's state.
func checkWorkerFields(t *testing.T, m *master) {
	t.Helper()
	hasPID := map[int]bool{}
	for _, e := range m.events() {
		if _, about := e["worker"]; !about || e["stream"] != nil {
			continue
		}
		id := e.num("worker")
		for _, f := range []string{"slot", "generation", "state"} {
			if _, ok := e[f]; !ok {
				t.Errorf("%q about worker %d has no %s", e.str("message"), id, f)
			}
		}
		if _, ok := e["pid"]; ok {
			hasPID[id] = true
		} else if hasPID[id] {
			t.Errorf("%q about worker %d has no pid, which earlier lines showed", e.str("message"), id)
		}
	}
}

// checkGone waits for the master's workers (by its log) and the pids
// given to be gone.
func checkGone(t *testing.T, m *master, pids ...int) {
	t.Helper()
	for _, pid := range m.cluster().PIDs {
		pids = append(pids, pid)
	}
	waitGone(t, pids...)
}

// kill sends sig to a process the test's master started.
func kill(t *testing.T, pid int, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(pid, sig); err != nil {
		t.Fatalf("kill %d: %v", pid, err)
	}
}

func hasPrefix(e logEvent, field, prefix string) bool {
	return strings.HasPrefix(e.str(field), prefix)
}

// procRSS is a process's resident set size in bytes (VmRSS).
func procRSS(t *testing.T, pid int) int64 { return procStatusBytes(t, pid, "VmRSS") }

// procStatusBytes reads a size line of /proc/PID/status ("VmRSS:  1234 kB")
// in bytes.
func procStatusBytes(t *testing.T, pid int, key string) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, key+":"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("/proc/%d/status: no %s", pid, key)
	return 0
}

func pidList(t *testing.T, s string) []int {
	t.Helper()
	var out []int
	for _, f := range strings.Fields(s) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("pid list %q", s)
		}
		out = append(out, pid)
	}
	return out
}

// environ returns the variable key of pid's initial environment.
func environ(t *testing.T, pid int, key string) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	for kv := range strings.SplitSeq(string(data), "\x00") {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	t.Fatalf("pid %d has no %s", pid, key)
	return ""
}

// stopped waits for a stop already under way: exit 0, nothing left.
func stopped(t *testing.T, m *master) {
	t.Helper()
	pids := descendants(m.PID())
	if code := m.wait(); code != 0 {
		t.Fatalf("exit status %d", code)
	}
	checkGone(t, m, pids...)
}
