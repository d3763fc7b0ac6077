//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDirAndBeforeFork: --dir is resolved through its symlink at every
// fork, so re-pointing `current` deploys the new release on the next
// rolling restart; --before-fork runs before each fork in that directory,
// and its failure fails the fork (aborting the rollout, old workers kept).
func TestDirAndBeforeFork(t *testing.T) {
	root := t.TempDir()
	for _, r := range []string{"release1", "release2"} {
		if err := os.Mkdir(filepath.Join(root, r), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	current := filepath.Join(root, "current")
	if err := os.Symlink("release1", current); err != nil {
		t.Fatal(err)
	}
	// The hook records where it ran, and fails where a file says so.
	hook := `pwd >> ` + filepath.Join(root, "hook.log") + ` && test ! -e BROKEN`
	m := startMaster(t, "worker", nil, "--workers", "1", "--dir", current, "--before-fork", hook,
		"--listen", "http=tcp://127.0.0.1:0")
	m.address()
	_, next := m.waitFor(0, "cluster ready", nil)

	// Deploy release2, broken: the fork fails, the rollout aborts.
	writeFile(t, filepath.Join(root, "release2", "BROKEN"), "", 0o644)
	repoint(t, current, "release2")
	m.signal(syscall.SIGUSR2)
	_, next = m.waitFor(next, "worker exited", map[string]any{"reason": "fork-failed: before-fork: \"" + hook + "\": exit status 1"})
	_, next = m.waitFor(next, "rollout aborted", nil)

	// Fixed: the next restart lands on release2.
	if err := os.Remove(filepath.Join(root, "release2", "BROKEN")); err != nil {
		t.Fatal(err)
	}
	m.signal(syscall.SIGUSR2)
	m.waitFor(next, "restart complete", nil)
	log, err := os.ReadFile(filepath.Join(root, "hook.log"))
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(root, "release1") + "\n" + filepath.Join(root, "release2") + "\n" + filepath.Join(root, "release2") + "\n"
	if string(log) != want {
		t.Errorf("the hook ran in:\n%s\nwant:\n%s", log, want)
	}
	m.stop()
}

// repoint moves a symlink atomically, as deploy tools do.
func repoint(t *testing.T, link, target string) {
	t.Helper()
	tmp := link + ".new"
	if err := os.Symlink(target, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
}

// TestBeforeForkHangs: a --before-fork command that never ends is killed,
// with what it started, at --ready-timeout; the fork fails, the rollout
// aborts, the old worker serves on, and a stop is not held up by it.
func TestBeforeForkHangs(t *testing.T) {
	root := t.TempDir()
	hang := filepath.Join(root, "HANG")
	// The hook's shell starts a sleep of its own, which must go too.
	hook := `test ! -e ` + hang + ` || { sleep 600 & sleep 600; }`
	m := startMaster(t, "worker", nil, "--workers", "1", "--before-fork", hook, "--ready-timeout", "2s",
		"--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	_, next := m.waitFor(0, "cluster ready", nil)

	writeFile(t, hang, "", 0o644)
	m.signal(syscall.SIGUSR2)
	_, next = m.waitFor(next, "fork", nil)
	var sleeps []int
	for deadline := time.Now().Add(patience); len(sleeps) < 2 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		sleeps = slices.DeleteFunc(descendants(m.PID()), func(pid int) bool {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			return strings.TrimSpace(string(comm)) != "sleep"
		})
	}
	if len(sleeps) < 2 {
		t.Fatalf("the hook's two sleeps are not running: %v", sleeps)
	}
	// The ready timeout and the hook's end at the same bound: the rollout
	// aborts and the worker exits, in either order.
	e, _ := m.waitFor(next, "worker exited", nil)
	if r := e.str("reason"); !strings.Contains(r, "before-fork") || !strings.Contains(r, "not done after 2s") {
		t.Errorf("reason %q, want the hook's timeout", r)
	}
	m.waitFor(next, "rollout aborted", nil)
	waitGone(t, sleeps...)
	if _, err := get(addr, "/"); err != nil {
		t.Errorf("old worker: %v", err)
	}
	m.stop()
}
