//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster/sockets/wire"
)

// The fault suite: real masters, real workers (the fault roles of
// faultroles_test.go and the roles of roles_test.go), one fault each.
// After every fault the master must not have crashed (exit 0 after a
// graceful stop), must hold exactly the descriptors it held before the
// fault once the cluster has settled, must have no zombie or unknown
// child, and must leave no process behind once it exits.
// docs/reliability.md has the fault matrix these tests fill.

// startFaultMaster starts a master at debug level: its "worker started"
// lines give the pid of every worker, ready or not. Its workers skip the
// race detector's second of sleep at exit (GORACE atexit_sleep_ms), which
// would otherwise delay every exit, replacement and stop.
func startFaultMaster(t *testing.T, role string, env []string, flags ...string) *master {
	t.Helper()
	t.Parallel()
	env = append([]string{"GORACE=atexit_sleep_ms=0"}, env...)
	// The balance is the default's (kernel where the program loads): the
	// descriptor checks count the slot sockets and the program's.
	m := startMaster(t, role, env, append([]string{"--log-level", "debug"}, flags...)...)
	m.address()
	return m
}

// --- a worker SIGKILLed in each state of its lifecycle ---

// TestFaultKillForkingReplacement: a replacement SIGKILLed while it boots
// (forking) aborts the rollout; the old workers keep serving.
func TestFaultKillForkingReplacement(t *testing.T) {
	m := startFaultMaster(t, "worker", []string{"DM_FAULT=raw", "DM_FAULT_BOOT=1h", "DM_FAULT_BOOT_GEN=2"},
		"--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	b := takeBaseline(t, m)
	old := m.cluster().LivePIDs()
	_, next := m.waitFor(0, "cluster ready", nil)
	m.signal(syscall.SIGUSR2)
	e, next := m.waitFor(next, "worker started", map[string]any{"generation": 2})
	kill(t, e.num("pid"), syscall.SIGKILL)
	x, _ := m.waitFor(next, "worker exited", map[string]any{"worker": e.num("worker")})
	if !hasPrefix(x, "reason", "signal SIGKILL") || x.str("was") != "forking" {
		t.Errorf("replacement exited with %q, was %q: want signal SIGKILL, forking", x.str("reason"), x.str("was"))
	}
	m.waitFor(next, "rollout aborted", nil)
	c := checkSettledLike(t, m, b)
	if !slices.Equal(c.LivePIDs(), old) {
		t.Errorf("workers %v after the abort, want the old %v", c.LivePIDs(), old)
	}
	if _, err := get(addr, "/"); err != nil {
		t.Fatal(err)
	}
	stopAndCheck(t, m)
}

// TestFaultKillForkingAtStart: a first-generation worker SIGKILLed while
// it boots is forked again; the cluster becomes ready.
func TestFaultKillForkingAtStart(t *testing.T) {
	m := startFaultMaster(t, "worker", []string{"DM_FAULT=raw", "DM_FAULT_BOOT=1h", "DM_FAULT_BOOT_WORKER=1"},
		"--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
	e, next := m.waitFor(0, "worker started", map[string]any{"worker": 1})
	kill(t, e.num("pid"), syscall.SIGKILL)
	x, next := m.waitFor(next, "worker exited", map[string]any{"worker": 1})
	if x.str("was") != "forking" {
		t.Errorf("worker 1 was %q, want forking", x.str("was"))
	}
	m.waitFor(next, "fork", map[string]any{"slot": x.num("slot")})
	m.waitFor(next, "cluster ready", nil)
	c := m.waitSettled()
	checkChildren(t, m, c)
	checkFDsFor(t, m, 1, 2)
	stopAndCheck(t, m)
}

// TestFaultKillListening: a listening worker SIGKILLed is replaced.
func TestFaultKillListening(t *testing.T) {
	m := startFaultMaster(t, "worker", nil, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	b := takeBaseline(t, m)
	_, next := m.waitFor(0, "cluster ready", nil)
	victim := m.cluster().PIDs[1]
	kill(t, victim, syscall.SIGKILL)
	x, next := m.waitFor(next, "worker exited", map[string]any{"worker": 1})
	if !hasPrefix(x, "reason", "signal SIGKILL") || x.str("was") != "listening" {
		t.Errorf("worker 1 exited with %q, was %q", x.str("reason"), x.str("was"))
	}
	m.waitFor(next, "worker listening", map[string]any{"slot": x.num("slot")})
	checkSettledLike(t, m, b)
	if _, err := get(addr, "/"); err != nil {
		t.Fatal(err)
	}
	stopAndCheck(t, m, victim)
}

// TestFaultKillDrainingDeaf: an old worker that ignores its drain is
// SIGKILLed (by the test) while draining; the rollout completes.
func TestFaultKillDrainingDeaf(t *testing.T) {
	m := startFaultMaster(t, "worker", []string{"DM_FAULT=raw", "DM_FAULT_DEAF_GEN=1"},
		"--workers", "2", "--kill-timeout", "1h", "--listen", "http=tcp://127.0.0.1:0")
	b := takeBaseline(t, m)
	_, next := m.waitFor(0, "cluster ready", nil)
	m.signal(syscall.SIGUSR2)
	d, next := m.waitFor(next, "drain", nil)
	kill(t, d.num("pid"), syscall.SIGKILL)
	x, next := m.waitFor(next, "worker exited", map[string]any{"worker": d.num("worker")})
	if !hasPrefix(x, "reason", "signal SIGKILL") || x.str("was") != "draining" {
		t.Errorf("worker %d exited with %q, was %q", d.num("worker"), x.str("reason"), x.str("was"))
	}
	// The other old worker is deaf too: it goes the same way.
	d2, next := m.waitFor(next, "drain", nil)
	kill(t, d2.num("pid"), syscall.SIGKILL)
	m.waitFor(next, "restart complete", nil)
	checkSettledLike(t, m, b)
	stopAndCheck(t, m)
}

// TestFaultKillDrainingSlowRequest: a worker SIGKILLed while it drains
// with a request in flight: that request fails (it was the worker's own),
// the rollout completes, and nothing else is lost.
func TestFaultKillDrainingSlowRequest(t *testing.T) {
	m := startFaultMaster(t, "worker", nil, "--workers", "1", "--log-worker-output", "--kill-timeout", "1h",
		"--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	b := takeBaseline(t, m)
	_, next := m.waitFor(0, "cluster ready", nil)
	res := make(chan error, 1)
	go func() { _, err := get(addr, "/slow?d=1h"); res <- err }()
	s, next := m.waitFor(next, "slow request started", nil)
	m.signal(syscall.SIGUSR2)
	d, next := m.waitFor(next, "drain", map[string]any{"worker": s.num("worker")})
	kill(t, d.num("pid"), syscall.SIGKILL)
	x, next := m.waitFor(next, "worker exited", map[string]any{"worker": d.num("worker")})
	if x.str("was") != "draining" {
		t.Errorf("worker exited while %q, want draining", x.str("was"))
	}
	m.waitFor(next, "restart complete", nil)
	if err := <-res; err == nil {
		t.Error("the killed worker's in-flight request succeeded")
	}
	checkSettledLike(t, m, b)
	if _, err := get(addr, "/"); err != nil {
		t.Fatal(err)
	}
	stopAndCheck(t, m)
}

// --- workers that end or misbehave on their own ---

// TestFaultWorkerExitsZero: a worker that exits 0 unasked counts as a
// failure of its slot and is replaced.
func TestFaultWorkerExitsZero(t *testing.T) {
	m := startFaultMaster(t, "worker", []string{"DM_FAULT=raw"}, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	b := takeBaseline(t, m)
	_, next := m.waitFor(0, "cluster ready", nil)
	body, err := get(addr, "/exit?code=0")
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(body)
	x, next := m.waitFor(next, "worker exited", map[string]any{"pid": pid})
	if x.str("reason") != "clean" || x.str("was") != "listening" || x.str("level") != "warn" {
		t.Errorf("exit logged as %q, was %q, level %q: want clean, listening, warn", x.str("reason"), x.str("was"), x.str("level"))
	}
	m.waitFor(next, "worker listening", map[string]any{"slot": x.num("slot")})
	checkSettledLike(t, m, b)
	stopAndCheck(t, m, pid)
}

// TestFaultWorkerClosesIPC: a worker that closes its IPC channel (Node's
// process.disconnect()) is drained with the stop signal when its drain
// over IPC fails, and exits cleanly: no kill timeout.
func TestFaultWorkerClosesIPC(t *testing.T) {
	m := startFaultMaster(t, "worker", []string{"DM_FAULT=raw"}, "--workers", "1", "--kill-timeout", "1h",
		"--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	b := takeBaseline(t, m)
	_, next := m.waitFor(0, "cluster ready", nil)
	if _, err := get(addr, "/ipc?what=close"); err != nil {
		t.Fatal(err)
	}
	m.signal(syscall.SIGUSR2)
	d, next := m.waitFor(next, "drain", nil)
	m.waitFor(next, "IPC channel gone: draining with the stop signal instead", map[string]any{"worker": d.num("worker")})
	x, next := m.waitFor(next, "worker exited", map[string]any{"worker": d.num("worker")})
	if x.str("reason") != "clean" {
		t.Errorf("worker exited with %q, want clean (drained by SIGTERM)", x.str("reason"))
	}
	m.waitFor(next, "restart complete", nil)
	checkSettledLike(t, m, b)
	stopAndCheck(t, m)
}

// TestFaultIPCAbuse: garbage, a 17 MiB line (over the 16 MiB bound), invalid UTF-8 and 20000
// messages in one burst on a worker's IPC channel: each bad line is
// skipped, the first ones logged one by one and the flood counted (a line
// at each power of two, the total when the worker exits), the channel
// keeps working (a request-restart after it is honoured), and the
// master's memory stays bounded.
func TestFaultIPCAbuse(t *testing.T) {
	m := startFaultMaster(t, "worker", []string{"DM_FAULT=raw"}, "--workers", "1", "--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	b := takeBaseline(t, m)
	_, next := m.waitFor(0, "cluster ready", nil)
	rss0 := procRSS(t, m.PID())
	for _, q := range []string{"garbage", "bigline&mb=17", "badutf8", "flood&n=20000"} {
		if _, err := get(addr, "/ipc?what="+q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if _, err := get(addr, "/ipc?what=restart"); err != nil {
		t.Fatal(err)
	}
	r, _ := m.waitFor(next, "worker requested restart", nil)
	m.waitFor(next, "restart complete", nil)
	rss1 := procRSS(t, m.PID())
	if n := len(m.all("unreadable IPC message ignored")); n != 1 {
		t.Errorf("%d unreadable lines logged, want 1 (the 17 MiB line)", n)
	}
	// Not JSON: 4 lines of garbage (text, a cut object, an empty line,
	// control bytes) and the bare invalid bytes of badutf8. The rest is
	// JSON that is no message. The 13 lines before the flood are logged
	// one by one; none ends the channel.
	if n := len(m.all("malformed IPC message ignored")); n < 5 {
		t.Errorf("%d malformed lines logged, want at least 5", n)
	}
	// The flood: logged one by one up to the 16th ignored line, then at
	// 32, 64, ... 16384, and the worker's total (20013) when it exits.
	ignoredLines := len(m.all("malformed IPC message ignored")) + len(m.all("unknown IPC message ignored")) +
		len(m.all("unreadable IPC message ignored"))
	if ignoredLines > 30 {
		t.Errorf("%d ignored IPC lines logged one by one, want at most 16 + 10 powers of two", ignoredLines)
	}
	total := m.all("IPC messages ignored in all")
	if len(total) != 1 || total[0].num("ignored") != 20013 {
		t.Errorf("totals logged at exit: %v, want one with ignored=20013", total)
	}
	t.Logf("master RSS %d KiB before the abuse, %d KiB after; requester was worker %d", rss0>>10, rss1>>10, r.num("worker"))
	// The 17 MiB line is read up to the line bound before it is dropped,
	// in a buffer that grows by doubling (about twice the bound
	// allocated), and this master is a race build, whose shadow memory
	// multiplies its heap several times over: 12 × the bound, on top of
	// the flood's 64 MiB (a reader that kept the whole line would pass it
	// by far with a longer line).
	if bound := 64<<20 + 12*int64(wire.MaxLineBytes); rss1-rss0 > bound {
		t.Errorf("master RSS grew by %d MiB over the abuse, more than %d MiB", (rss1-rss0)>>20, bound>>20)
	}
	for _, e := range m.all("worker exited") {
		if e.str("reason") != "clean" {
			t.Errorf("worker %d exited with %q", e.num("worker"), e.str("reason"))
		}
	}
	checkSettledLike(t, m, b)
	stopAndCheck(t, m)
}

// TestFaultWorkerSpawnsChildrenAndExits: the children a worker leaves in
// its process group die with it; none is left. Without --subreaper they
// are never the master's; with it they become the master's children when
// the worker exits, and the master reaps them: no zombie stays.
func TestFaultWorkerSpawnsChildrenAndExits(t *testing.T) {
	for _, subreaper := range []bool{false, true} {
		t.Run(fmt.Sprintf("subreaper=%t", subreaper), func(t *testing.T) {
			flags := []string{"--workers", "2", "--listen", "http=tcp://127.0.0.1:0"}
			if subreaper {
				flags = append(flags, "--subreaper")
			}
			m := startFaultMaster(t, "worker", []string{"DM_FAULT=raw"}, flags...)
			addr := m.address()
			b := takeBaseline(t, m)
			_, next := m.waitFor(0, "cluster ready", nil)
			// One worker keeps its children until the master stops it;
			// another exits and leaves its own.
			kept, err := get(addr, "/spawn?n=2")
			if err != nil {
				t.Fatal(err)
			}
			left, err := get(addr, "/spawn?n=3&exit=0")
			if err != nil {
				t.Fatal(err)
			}
			orphans := pidList(t, left)
			x, next := m.waitFor(next, "worker exited", nil)
			m.waitFor(next, "worker listening", map[string]any{"slot": x.num("slot")})
			waitGone(t, orphans...)
			if subreaper {
				// They died the master's children: wait for it to reap
				// them (its reaper takes a zombie seen in two scans, a
				// second apart).
				for _, pid := range orphans {
					m.waitFor(0, "reaped an adopted orphan", map[string]any{"pid": pid})
				}
			}
			checkSettledLike(t, m, b)
			stopAndCheck(t, m, append(pidList(t, kept), orphans...)...)
		})
	}
}

// TestFaultNeverReadyAtStart: first-generation workers that never become
// ready are killed at the ready timeout and forked again with backoff;
// the master stays up, never says ready, and stops cleanly.
func TestFaultNeverReadyAtStart(t *testing.T) {
	m := startFaultMaster(t, "worker", []string{"DM_TEST_FAIL_GEN=1", "DM_TEST_FAIL=never-ready"},
		"--workers", "1", "--ready-timeout", "300ms", "--backoff", "100ms", "--listen", "http=tcp://127.0.0.1:0")
	_, next := m.waitFor(0, "ready timeout", map[string]any{"worker": 1})
	_, next = m.waitFor(next, "worker exited", map[string]any{"worker": 1, "reason": "killed SIGKILL"})
	_, next = m.waitFor(next, "ready timeout", map[string]any{"worker": 2})
	m.waitFor(next, "worker exited", map[string]any{"worker": 2})
	if len(m.all("cluster ready")) != 0 {
		t.Error("cluster ready with workers that never were")
	}
	stopAndCheck(t, m)
}

// TestFaultDeafWorkerAtStop: at a graceful stop, workers that ignore the
// drain are SIGKILLed at the kill timeout and the master exits 0.
func TestFaultDeafWorkerAtStop(t *testing.T) {
	m := startFaultMaster(t, "worker", []string{"DM_FAULT=raw", "DM_FAULT_DEAF_GEN=1"},
		"--workers", "2", "--kill-timeout", "500ms", "--listen", "http=tcp://127.0.0.1:0")
	_, next := m.waitFor(0, "cluster ready", nil)
	m.waitSettled()
	pids := descendants(m.PID())
	m.signal(syscall.SIGTERM)
	_, next = m.waitFor(next, "kill timeout", nil)
	m.waitFor(next, "cluster stopped", nil)
	if code := m.wait(); code != 0 {
		t.Fatalf("exit status %d", code)
	}
	for _, e := range m.all("worker exited") {
		if e.str("reason") != "killed SIGKILL" {
			t.Errorf("worker %d exited with %q, want killed SIGKILL", e.num("worker"), e.str("reason"))
		}
	}
	checkGone(t, m, pids...)
}

// --- the master ---

// TestFaultMasterKilledThenRebound: SIGKILL of the master takes every
// worker with it (parent-death signal), and a new master binds the same
// port at once.
func TestFaultMasterKilledThenRebound(t *testing.T) {
	t.Parallel()
	addr := freeTCP(t)
	m := startMaster(t, "worker", nil, "--workers", "2", "--listen", "http=tcp://"+addr)
	m.waitFor(0, "cluster ready", nil)
	c := m.waitSettled()
	pids := descendants(m.PID())
	notify := environ(t, c.LivePIDs()[0], "NOTIFY_SOCKET")
	m.signal(syscall.SIGKILL)
	m.wait()
	// A killed master cleans nothing up, so its notify socket must need
	// no cleaning: it is abstract (no file), and its name is free once the
	// master is reaped, as nothing receives on it any more.
	if len(notify) == 0 || notify[0] != '@' {
		t.Errorf("NOTIFY_SOCKET %q, want an abstract address (@name)", notify)
	}
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = syscall.Connect(fd, &syscall.SockaddrUnix{Name: notify})
	syscall.Close(fd)
	if err != syscall.ECONNREFUSED {
		t.Errorf("notify socket %s of the killed master: connect: %v, want connection refused", notify, err)
	}
	m2 := startMaster(t, "worker", nil, "--workers", "2", "--listen", "http=tcp://"+addr)
	if got := m2.address(); got != addr {
		t.Fatalf("second master listens on %s, want %s", got, addr)
	}
	m2.waitFor(0, "cluster ready", nil)
	waitGone(t, append(pids, c.LivePIDs()...)...)
	if _, err := get(addr, "/"); err != nil {
		t.Fatal(err)
	}
	stopAndCheck(t, m2)
}

// TestFaultStopDuringRollout: SIGTERM while replacements boot cancels the
// rollout and stops everything, booting replacements included.
func TestFaultStopDuringRollout(t *testing.T) {
	m := startFaultMaster(t, "worker", []string{"DM_FAULT=raw", "DM_FAULT_BOOT=1h", "DM_FAULT_BOOT_GEN=2"},
		"--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
	_, next := m.waitFor(0, "cluster ready", nil)
	m.waitSettled()
	m.signal(syscall.SIGUSR2)
	_, next = m.waitFor(next, "worker started", map[string]any{"generation": 2})
	m.signal(syscall.SIGTERM)
	m.waitFor(next, "rollout cancelled by stop", nil)
	stopped(t, m)
}

// TestFaultStopDuringStartup: SIGTERM while the first workers boot.
func TestFaultStopDuringStartup(t *testing.T) {
	m := startFaultMaster(t, "worker", []string{"DM_FAULT=raw", "DM_FAULT_BOOT=1h"},
		"--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
	_, next := m.waitFor(0, "worker started", nil)
	m.waitFor(next, "worker started", nil)
	m.signal(syscall.SIGTERM)
	stopped(t, m)
	if n := len(m.all("cluster ready")); n != 0 {
		t.Errorf("cluster ready logged %d times", n)
	}
}

// TestFaultStopAtExec: SIGTERM sent the moment the master starts. Before
// Run installs its signal handler the default action ends the master
// (nothing is running yet); after, the stop is graceful. Either way no
// process is left.
func TestFaultStopAtExec(t *testing.T) {
	t.Parallel()
	m := startMaster(t, "worker", nil, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
	m.signal(syscall.SIGTERM)
	select {
	case <-m.Done():
	case <-time.After(patience):
		t.Fatal("master still running")
	}
	if m.Err() != nil && len(m.all("fork")) > 0 {
		t.Errorf("master forked workers, then ended with %v", m.Err())
	}
	t.Logf("master ended with %v after %d forks", m.Err(), len(m.all("fork")))
	checkGone(t, m)
}

// TestFaultStopDuringStop: a second SIGTERM during a graceful stop that
// waits on a slow request kills the workers at once; exit 0.
func TestFaultStopDuringStop(t *testing.T) {
	m := startFaultMaster(t, "worker", nil, "--workers", "2", "--log-worker-output", "--kill-timeout", "1h",
		"--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	_, next := m.waitFor(0, "cluster ready", nil)
	m.waitSettled()
	res := make(chan error, 1)
	go func() { _, err := get(addr, "/slow?d=1h"); res <- err }()
	_, next = m.waitFor(next, "slow request started", nil)
	m.signal(syscall.SIGTERM)
	_, next = m.waitFor(next, "stopping", nil)
	m.signal(syscall.SIGTERM)
	m.waitFor(next, "second stop: killing workers", nil)
	stopped(t, m)
	if err := <-res; err == nil {
		t.Error("the slow request succeeded though its worker was killed")
	}
}

// --- signal storms ---

// TestFaultSignalStormRestartScale: 300 restart and scale signals in
// random order, as fast as kill(2) goes. The master takes what it can
// (signals of one kind that are pending together merge), the cluster
// settles, and back at 2 workers the master holds what it held before.
func TestFaultSignalStormRestartScale(t *testing.T) {
	m := startFaultMaster(t, "worker", []string{"DM_TEST_BOOT=20ms"}, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	b := takeBaseline(t, m)
	traffic := startLoad(addr, 2, 100000)
	sigs := []syscall.Signal{syscall.SIGUSR2, syscall.SIGTTIN, syscall.SIGTTOU}
	for range 300 {
		m.signal(sigs[rand.IntN(len(sigs))])
	}
	c := m.quiesce()
	traffic.finish()
	t.Logf("after the storm: %d signals taken, %d workers, %d rollouts, %d coalesced; %d ok, %d failed requests",
		len(m.all("signal received")), c.Target, len(m.all("restart requested")),
		len(m.all("restart requested during rollout: coalesced")), traffic.ok.Load(), traffic.failed.Load())
	if n := traffic.failed.Load(); n != 0 {
		t.Errorf("%d requests failed during the storm: %v", n, traffic.firstErr.Load())
	}
	next := m.Mark()
	for c.Target != b.workers {
		sig := syscall.SIGTTOU
		if c.Target < b.workers {
			sig = syscall.SIGTTIN
		}
		m.signal(sig)
		_, next = m.waitFor(next, "scale", nil)
		c = m.waitSettled()
	}
	checkSettledLike(t, m, b)
	stopAndCheck(t, m)
}

// TestFaultSignalStormStop: the first stop signal, then a storm of
// SIGTERM, SIGINT and the restart and scale signals until the master has
// exited: the stop turns into a kill at the second stop signal, nothing is
// forked once the stop began, exit status 0 and nothing left.
func TestFaultSignalStormStop(t *testing.T) {
	for _, first := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(first.String(), func(t *testing.T) {
			m := startFaultMaster(t, "worker", nil, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
			m.waitFor(0, "cluster ready", nil)
			m.waitSettled()
			pids := descendants(m.PID())
			sigs := []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR2, syscall.SIGTTIN, syscall.SIGTTOU}
			m.signal(first)
			_, stopping := m.waitFor(0, "stopping", nil)
			sent := 0
			// Until the process is gone (Signal then fails: os.Process
			// signals through a pidfd, never a reused pid), bounded.
			for ; sent < 100000; sent++ {
				if m.Signal(sigs[rand.IntN(len(sigs))]) != nil {
					break
				}
			}
			select {
			case <-m.Done():
			case <-time.After(patience):
				t.Fatalf("master still running after %d signals", sent)
			}
			t.Logf("%d signals sent during the stop, %d taken", sent, len(m.all("signal received"))-1)
			m.waitFor(stopping, "cluster stopped", nil)
			if m.Err() != nil {
				t.Errorf("master ended with %v, want exit status 0", m.Err())
			}
			for _, e := range m.events()[stopping:] {
				if e.str("message") == "fork" {
					t.Errorf("worker %d forked during the stop", e.num("worker"))
				}
			}
			checkGone(t, m, pids...)
		})
	}
}

// TestFaultUnhandledSignals: SIGHUP and SIGUSR1, when neither is the
// restart signal, leave the master and its workers running, and the
// master logs that it ignored them. (Go ignores a SIGUSR1 that nothing
// asked for; SIGHUP's default is to exit.)
func TestFaultUnhandledSignals(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1} {
		t.Run(sig.String(), func(t *testing.T) {
			m := startFaultMaster(t, "worker", nil, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
			addr := m.address()
			b := takeBaseline(t, m)
			_, next := m.waitFor(0, "cluster ready", nil)
			for range 50 {
				m.signal(sig)
			}
			// Linux delivers pending signals lowest number first, and
			// SIGHUP (1) and SIGUSR1 (10) come before SIGUSR2 (12): a
			// rollout that completes after them shows the master took
			// them and lived. The 50 may merge while pending, so there
			// is at least one log line, and at most 50.
			m.signal(syscall.SIGUSR2)
			m.waitFor(next, "restart complete", nil)
			name := map[syscall.Signal]string{syscall.SIGHUP: "SIGHUP", syscall.SIGUSR1: "SIGUSR1"}[sig]
			if n := len(m.all("signal ignored")); n < 1 || n > 50 {
				t.Errorf("%d signal ignored lines, want 1 to 50", n)
			}
			for _, e := range m.all("signal ignored") {
				if e.str("signal") != name {
					t.Errorf("signal ignored names %q, want %s", e.str("signal"), name)
				}
			}
			if _, err := get(addr, "/"); err != nil {
				t.Fatal(err)
			}
			checkSettledLike(t, m, b)
			stopAndCheck(t, m)
		})
	}
}

// TestFaultLogPipeClosed: the reader of the master's log goes away (a log
// shipper dies, a `| tee` ends). The master's writes fail from then on,
// but it lives: a rolling restart still replaces every worker, the
// workers answer, and SIGTERM still ends it with status 0.
func TestFaultLogPipeClosed(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "--log-format", "json", "--control", "none", "--workers", "2",
		"--env", roleEnv+"=worker", "--listen", "http=tcp://127.0.0.1:0", "--", self)
	cmd.Env = append(os.Environ(), roleEnv+"=master")
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	addr := ""
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var e logEvent
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		if e.str("message") == "listening" {
			addr = e.str("address")
		}
		if e.str("message") == "cluster ready" {
			break
		}
	}
	if addr == "" {
		t.Fatal("no listening address before cluster ready")
	}
	old := children(cmd.Process.Pid)
	r.Close() // the log's reader is gone
	if err := cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	// The rollout's end has no log to show it: the master's children are
	// two workers again, none of them an old one.
	deadline := time.Now().Add(patience)
	for {
		now := children(cmd.Process.Pid)
		replaced := len(now) == 2
		for pid := range now {
			if _, isOld := old[pid]; isOld {
				replaced = false
			}
		}
		if replaced {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("master ended with %v once its log pipe closed", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("workers %v not replaced (were %v)", now, old)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := get(addr, "/"); err != nil {
		t.Errorf("workers after the restart: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("master ended with %v, want exit status 0", err)
		}
	case <-time.After(patience):
		t.Fatal("master still running after SIGTERM")
	}
}

// TestFaultDescriptorLimit: a master whose descriptor limit cannot hold
// its workers says so at start, then runs what it can: forks past the
// limit fail and back off, the master lives, and SIGTERM ends it with 0.
func TestFaultDescriptorLimit(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// 20 workers want 3 × 41 descriptors in a rollout; 64 is the limit
	// (the shell's ulimit sets the soft and the hard limit).
	limit := []string{"/bin/sh", "-c", `ulimit -n 64 && exec "$@"`, "sh"}
	m := startMasterVia(t, limit, []string{self}, "--env", roleEnv+"=worker", "--workers", "20",
		"--listen", "http=tcp://127.0.0.1:0")
	e, _ := m.waitFor(0, "descriptor limit too low for the workers during a rollout: raise it (ulimit -n, LimitNOFILE=) or forks will fail", nil)
	if e.num("limit") != 64 || e.num("needed") < 123 {
		t.Errorf("limit %d, needed %d: want 64 and at least 123", e.num("limit"), e.num("needed"))
	}
	m.waitFor(0, "fork failed", nil)
	m.stop()
}
