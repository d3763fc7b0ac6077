//go:build linux

package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Faults of what the master reads besides its workers: the output of the
// --before-fork command, and the --config file it re-reads at every
// rolling restart.

// procHWM is a process's peak resident set size in bytes (VmHWM).
func procHWM(t *testing.T, pid int) int64 { return procStatusBytes(t, pid, "VmHWM") }

// waitEither returns the first event from index `from` on whose message
// is one of msgs, and the index after it: a test that expects one outcome
// fails at once on the other instead of waiting out its patience.
func (m *master) waitEither(from int, msgs ...string) (logEvent, int) {
	m.t.Helper()
	deadline := time.After(patience)
	for {
		grew := m.Grew()
		evs := m.events()
		for i := from; i < len(evs); i++ {
			if slices.Contains(msgs, evs[i].str("message")) {
				return evs[i], i + 1
			}
		}
		select {
		case <-grew:
		case <-m.Done():
			m.t.Fatalf("master exited (%v) before any of %q", m.Err(), msgs)
		case <-deadline:
			m.t.Fatalf("none of %q within %s", msgs, patience)
		}
	}
}

// TestFaultBeforeForkFloodsOutput: a --before-fork command that writes
// 200 MB before it succeeds costs the master a small tail of it, not the
// whole: its peak resident size stays far below the output, and the
// workers start. A failing one that writes as much fails its fork with
// its last line, cut to a readable length.
func TestFaultBeforeForkFloodsOutput(t *testing.T) {
	const flood = `head -c 200000000 /dev/zero | tr '\0' x`
	m := startFaultMaster(t, "worker", nil, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0",
		"--before-fork", flood)
	addr := m.address()
	_, next := m.waitFor(0, "cluster ready", map[string]any{"workers": 2})
	// The race detector's own memory is part of the figure: a master with
	// no hook peaks at some 40 MB here; one that kept the output held
	// 200 MB per fork.
	const bound = 150 << 20
	if hwm := procHWM(t, m.PID()); hwm > bound {
		t.Errorf("master's peak resident size %d MB after two forks with 200 MB of hook output each, want < %d MB",
			hwm>>20, bound>>20)
	} else {
		t.Logf("master's peak resident size: %d MB", hwm>>20)
	}
	if _, err := get(addr, "/"); err != nil {
		t.Fatal(err)
	}
	_ = next
	stopAndCheck(t, m)
}

// TestFaultBeforeForkFloodsThenFails: the fork failure of a hook that
// wrote much names its last line, and only the end of a line too long to
// read.
func TestFaultBeforeForkFloodsThenFails(t *testing.T) {
	m := startFaultMaster(t, "worker", nil, "--workers", "1", "--listen", "http=tcp://127.0.0.1:0",
		"--before-fork", `head -c 20000000 /dev/zero | tr '\0' x; echo; echo 'migrations pending'; head -c 100000 /dev/zero | tr '\0' y; exit 3`)
	e, _ := m.waitFor(0, "fork failed", nil)
	msg := e.str("error")
	if !strings.Contains(msg, "exit status 3") || !strings.HasSuffix(msg, "yyyy") || len(msg) > 2000 {
		t.Errorf("fork failed with %d bytes %.300q..., want exit status 3 and the end of the last line, cut short", len(msg), msg)
	}
	stopAndCheck(t, m)
}

// configRefused is what the master logs when a restart's re-read of the
// configuration fails.
const configRefused = "restart refused: the configuration does not load; the workers are left as they are"

// TestFaultConfigFIFO: --config is a symlink that comes to point at a
// FIFO nobody writes. The restart signal and `ctl restart` are refused,
// naming the file as not a regular one; the workers are left alone, and a
// SIGTERM stops the master as ever.
func TestFaultConfigFIFO(t *testing.T) {
	dir := t.TempDir()
	real, fifo, cfg := filepath.Join(dir, "real.yaml"), filepath.Join(dir, "fifo"), filepath.Join(dir, "dutchmaster.yaml")
	writeFile(t, real, "workers: 1\n", 0o644)
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, cfg); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "ctl.sock")
	m := startFaultMaster(t, "worker", nil, "--config", cfg, "--control", sock, "--listen", "http=tcp://127.0.0.1:0")
	_, next := m.waitFor(0, "cluster ready", map[string]any{"workers": 1})
	old := m.cluster().LivePIDs()

	tmp := cfg + ".tmp"
	if err := os.Symlink(fifo, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, cfg); err != nil {
		t.Fatal(err)
	}
	m.signal(syscall.SIGUSR2)
	e, next := m.waitEither(next, configRefused, "configuration reloaded")
	if e.str("message") != configRefused || !strings.Contains(e.str("error"), "not a regular file") {
		t.Fatalf("restart signal with --config a FIFO: %q (%s), want %q naming the file as not a regular file",
			e.str("message"), e.str("error"), configRefused)
	}
	r := ctl(t, sock, "restart")
	if r.code == 0 || !strings.Contains(r.stderr, "restart refused") || !strings.Contains(r.stderr, "not a regular file") {
		t.Errorf("ctl restart with --config a FIFO: %s; want it refused, naming the file as not a regular file", r)
	}
	_, _ = m.waitFor(next, configRefused, nil)
	if c := m.quiesce(); !slices.Equal(c.LivePIDs(), old) {
		t.Errorf("workers %v after refused restarts, want the old %v", c.LivePIDs(), old)
	}
	stopAndCheck(t, m)
}

// TestFaultConfigEmptiedOrTooBig: a --config file caught empty (truncated
// by an editor or a deploy about to write it) is not a file of defaults:
// the restart is refused and the workers are the same processes. A file
// of more than 1 MiB is refused too, unread.
func TestFaultConfigEmptiedOrTooBig(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "dutchmaster.yaml")
	writeFile(t, cfg, "workers: 1\n", 0o644)
	m := startFaultMaster(t, "worker", nil, "--config", cfg, "--listen", "http=tcp://127.0.0.1:0")
	_, next := m.waitFor(0, "cluster ready", map[string]any{"workers": 1})
	old := m.cluster().LivePIDs()

	for _, c := range []struct{ name, content, want string }{
		{"empty", "", "is empty"},
		{"blank", "\n  \n", "is empty"},
		{"comments only", "# being written\n", "no settings"},
		{"over 1 MiB", "workers: 1\n" + strings.Repeat("# padding\n", 110_000), "larger than 1 MiB"},
	} {
		writeFile(t, cfg, c.content, 0o644)
		m.signal(syscall.SIGUSR2)
		var e logEvent
		e, next = m.waitEither(next, configRefused, "configuration reloaded")
		if e.str("message") != configRefused || !strings.Contains(e.str("error"), c.want) {
			t.Errorf("%s file: %q (%s), want %q saying %q", c.name, e.str("message"), e.str("error"), configRefused, c.want)
		}
		if cl := m.quiesce(); !slices.Equal(cl.LivePIDs(), old) {
			t.Fatalf("%s file: workers %v, want the old %v untouched", c.name, cl.LivePIDs(), old)
		}
	}
	stopAndCheck(t, m)
}
