package osproc_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/actors/osproc"
)

// TestDirFollowsTheLinkAtEachFork: Dir is resolved at every fork, so
// moving a `current` link to a new release sends the next worker there;
// the worker's directory is the release itself, not the link.
func TestDirFollowsTheLinkAtEachFork(t *testing.T) {
	base := t.TempDir()
	release1, release2 := filepath.Join(base, "release1"), filepath.Join(base, "release2")
	for _, d := range []string{release1, release2} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	current := filepath.Join(base, "current")
	point := func(target string) {
		t.Helper()
		// As a deploy does it: a new link renamed over the old one.
		tmp := current + ".new"
		if err := os.Symlink(target, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, current); err != nil {
			t.Fatal(err)
		}
	}
	var hookDirs []string
	rt := newRuntime(t, osproc.Config{
		Command:    role(t, "report"),
		Dir:        current,
		BeforeFork: func(dir string, _ []string) error { hookDirs = append(hookDirs, dir); return nil },
	})
	cwdOf := func(id core.WorkerID) report {
		t.Helper()
		rec, _ := spawn(t, rt, actors.WorkerSpec{ID: id})
		rep := nextReport(t, rec)
		expectExit(t, rec, 0)
		return rep
	}

	point(release1)
	if rep := cwdOf(1); rep.Cwd != release1 || rep.Getwd != release1 {
		t.Errorf("first worker runs in %s (getcwd %s), want %s", rep.Cwd, rep.Getwd, release1)
	}
	point(release2)
	rep := cwdOf(2)
	if rep.Cwd != release2 || rep.Getwd != release2 {
		t.Errorf("after the deploy, the worker runs in %s (getcwd %s), want %s", rep.Cwd, rep.Getwd, release2)
	}
	// Not the master's PWD (this test's directory): programs that trust
	// $PWD over getcwd would look in the wrong place.
	if pwd, n := envValue(rep.Env, "PWD"); pwd != release2 || n != 1 {
		t.Errorf("worker's PWD=%q (set %d times), want %s", pwd, n, release2)
	}

	if len(hookDirs) != 2 || hookDirs[0] != release1 || hookDirs[1] != release2 {
		t.Errorf("before-fork hook ran in %q, want the resolved releases", hookDirs)
	}
}
