package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
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
