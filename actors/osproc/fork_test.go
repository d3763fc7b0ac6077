package osproc_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/osproc"
)

// forkFails forks once and expects ForkFailed, then nothing more: Close
// waits for every goroutine of the runtime, so whatever was to come has.
func forkFails(t *testing.T, rt *osproc.Runtime) actors.ForkFailed {
	t.Helper()
	rec := newRecorder()
	rt.Fork(actors.WorkerSpec{ID: 1}, rec.events)
	ff := expect[actors.ForkFailed](t, rec)
	closeRuntime(t, rt)
	if rest := rec.drained(); len(rest) != 0 {
		t.Errorf("events after ForkFailed: %+v", rest)
	}
	return ff
}

// TestBeforeForkError: an error from the before-fork hook fails the fork
// with the hook's message, and no process is started. The hook runs with
// the resolved directory and the worker's environment, without what was
// meant for the master (its own supervisor's NOTIFY_SOCKET, LISTEN_*).
func TestBeforeForkError(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "/run/systemd/notify")
	t.Setenv("LISTEN_FDS", "1")
	dir := t.TempDir()
	ran := filepath.Join(dir, "worker-ran")
	var hookDir string
	var hookEnv []string
	rt := newRuntime(t, osproc.Config{
		// Would leave a trace if it ran at all.
		Command: []string{"sh", "-c", "touch " + ran},
		Dir:     dir,
		BeforeFork: func(dir string, env []string) error {
			hookDir, hookEnv = dir, env
			return errors.New("migrations pending")
		},
	})
	ff := forkFails(t, rt)
	if ff.Err != "before-fork: migrations pending" {
		t.Errorf("ForkFailed %q, want the hook's error", ff.Err)
	}
	if _, err := os.Stat(ran); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the worker ran after all (%v)", err)
	}
	if hookDir != dir {
		t.Errorf("hook ran for dir %q, want %q", hookDir, dir)
	}
	for _, key := range []string{"NOTIFY_SOCKET", "LISTEN_FDS"} {
		if v, n := envValue(hookEnv, key); n > 0 {
			t.Errorf("hook env has the master's %s=%q", key, v)
		}
	}
	if v, _ := envValue(hookEnv, "DUTCHMASTER_WORKER_ID"); v != "1" {
		t.Errorf("hook env has DUTCHMASTER_WORKER_ID=%q, want 1", v)
	}
}

// TestDanglingDirFailsFork: a Dir that resolves to nothing (a `current`
// link to a release that is gone) fails the fork before the hook runs.
func TestDanglingDirFailsFork(t *testing.T) {
	link := filepath.Join(t.TempDir(), "current")
	if err := os.Symlink(filepath.Join(filepath.Dir(link), "release-gone"), link); err != nil {
		t.Fatal(err)
	}
	hookRan := false
	rt := newRuntime(t, osproc.Config{
		Command:    role(t, "exit", "0"),
		Dir:        link,
		BeforeFork: func(string, []string) error { hookRan = true; return nil },
	})
	ff := forkFails(t, rt)
	if !strings.HasPrefix(ff.Err, "--dir "+link+": ") || !strings.Contains(ff.Err, "no such file") {
		t.Errorf("ForkFailed %q, want it to name the --dir and say it does not exist", ff.Err)
	}
	if hookRan {
		t.Error("the before-fork hook ran for a directory that does not exist")
	}
}

// TestMissingTrampolineFailsFork: a trampoline binary that cannot be
// started fails the fork.
func TestMissingTrampolineFailsFork(t *testing.T) {
	rt := newRuntime(t, osproc.Config{
		Command:    role(t, "exit", "0"),
		Executable: filepath.Join(t.TempDir(), "no-dutchmaster"),
	})
	ff := forkFails(t, rt)
	if !strings.HasPrefix(ff.Err, "starting "+testBinary(t)+": ") {
		t.Errorf("ForkFailed %q, want a start error", ff.Err)
	}
}

// TestMissingCommandExits127: a worker command that does not exist is
// not a fork failure. The fork (of the trampoline) succeeds, the
// trampoline cannot exec the command, says why on stderr and exits 127,
// the shell's "command not found": Spawned, then Exited{Code: 127} with
// the reason in Detail (when output is logged).
func TestMissingCommandExits127(t *testing.T) {
	logs := &syncBuffer{}
	rt := newRuntime(t, osproc.Config{
		Command:   []string{"no-such-worker-command", "--port", "3000"},
		LogOutput: true,
		Logger:    zerolog.New(logs),
	})
	rec, _ := spawn(t, rt, actors.WorkerSpec{ID: 1})
	ex := expectExit(t, rec, 127)
	want := `dutchmaster: exec worker: exec: "no-such-worker-command": executable file not found in $PATH`
	if ex.Detail != want {
		t.Errorf("Exited.Detail %q, want %q", ex.Detail, want)
	}
}
