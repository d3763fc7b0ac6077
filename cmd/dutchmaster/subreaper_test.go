//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ppid reads a process's parent pid and state from /proc; ok is false
// once the process is gone entirely (reaped).
func ppid(pid int) (parent int, state string, ok bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, "", false
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	parent, _ = strconv.Atoi(f[1])
	return parent, f[0], true
}

// TestSubreaper: with --subreaper, a process a worker leaves behind (a
// `sleep 2` whose parent shell exited) becomes the master's child, and
// once it exits the master reaps it: it does not stay a zombie.
func TestSubreaper(t *testing.T) {
	file := filepath.Join(t.TempDir(), "orphan")
	m := startMaster(t, "worker", []string{"DM_TEST_ORPHAN=" + file}, "--subreaper", "--workers", "1", "--listen", "http=tcp://127.0.0.1:0")
	m.waitFor(0, "cluster ready", nil)
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := strconv.Atoi(string(data))
	if err != nil {
		t.Fatalf("orphan pid %q", data)
	}
	parent, state, ok := ppid(orphan)
	if !ok || parent != m.PID() {
		t.Fatalf("orphan %d: parent %d (state %s, alive %t), want the master %d", orphan, parent, state, ok, m.PID())
	}
	// It exits after 2 s; the master reaps it within about a second more.
	deadline := time.Now().Add(patience)
	for {
		if _, _, ok := ppid(orphan); !ok {
			break
		}
		if time.Now().After(deadline) {
			_, state, _ := ppid(orphan)
			t.Fatalf("orphan %d still in the process table after %s (state %s)", orphan, patience, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
	m.stop()
}
