//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestPIDFile: the master writes its pid to --pidfile; a second master
// with the same pidfile is refused (exit 2, naming the first one's pid)
// before it binds anything; the file goes at exit. A file left by a
// killed master is taken over.
func TestPIDFile(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "master.pid")
	m := startMaster(t, "worker", nil, "--pidfile", pidfile, "--workers", "1", "--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	m.waitFor(0, "cluster ready", nil)
	if data, err := os.ReadFile(pidfile); err != nil || strings.TrimSpace(string(data)) != strconv.Itoa(m.PID()) {
		t.Fatalf("pidfile holds %q (%v), want %d", data, err, m.PID())
	}

	// Same pidfile and same address: the pidfile is what refuses it.
	second := startMaster(t, "worker", nil, "--pidfile", pidfile, "--workers", "1", "--listen", "http=tcp://"+addr)
	want := "dutchmaster: --pidfile " + pidfile + ": held by a running master (pid " + strconv.Itoa(m.PID()) + ")"
	if code := second.wait(); code != exitUsage || !strings.Contains(second.Log(), want) {
		t.Fatalf("second master: exit %d, want 2 and %q\n%s", code, want, second.Log())
	}
	m.stop()
	if _, err := os.Stat(pidfile); !os.IsNotExist(err) {
		t.Fatalf("pidfile left behind: %v", err)
	}

	killed := startMaster(t, "worker", nil, "--pidfile", pidfile, "--workers", "1", "--listen", "http=tcp://127.0.0.1:0")
	killed.waitFor(0, "cluster ready", nil)
	killed.signal(syscall.SIGKILL)
	killed.wait()
	third := startMaster(t, "worker", nil, "--pidfile", pidfile, "--workers", "1", "--listen", "http=tcp://127.0.0.1:0")
	third.waitFor(0, "cluster ready", nil)
	if data, _ := os.ReadFile(pidfile); strings.TrimSpace(string(data)) != strconv.Itoa(third.PID()) {
		t.Fatalf("pidfile of a killed master not taken over: %q", data)
	}
	third.stop()
}
