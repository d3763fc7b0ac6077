package osproc_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster/actors/osproc"
)

// TestBeforeForkHookNone: with neither a Go hook nor a command there is
// no hook at all, so the runtime forks without a detour.
func TestBeforeForkHookNone(t *testing.T) {
	if osproc.BeforeForkHook(nil, "", time.Second) != nil {
		t.Error("BeforeForkHook(nil, \"\") is not nil")
	}
}

// TestBeforeForkHookRunsInDirWithEnv: the command runs in the directory
// and with the environment it is given, and its success lets the fork go.
func TestBeforeForkHookRunsInDirWithEnv(t *testing.T) {
	dir := t.TempDir()
	hook := osproc.BeforeForkHook(nil, `echo "$PWD $HOOK_TEST" > seen`, testTimeout)
	if err := hook(dir, []string{"HOOK_TEST=given", "PWD=" + dir}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "seen"))
	if err != nil {
		t.Fatal(err)
	}
	if want := dir + " given\n"; string(got) != want {
		t.Errorf("the command saw %q, want %q", got, want)
	}
}

// TestBeforeForkHookGoHookFirst: the Go hook runs before the command, and
// its error fails the fork without running the command.
func TestBeforeForkHookGoHookFirst(t *testing.T) {
	dir := t.TempDir()
	hook := osproc.BeforeForkHook(func() error { return errors.New("not yet") }, "touch ran", testTimeout)
	if err := hook(dir, nil); err == nil || err.Error() != "not yet" {
		t.Errorf("hook: %v, want the Go hook's error", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ran")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the command ran after the Go hook failed (%v)", err)
	}
}

// TestBeforeForkHookFailure: a command that fails fails the fork with its
// exit status and the last line it wrote.
func TestBeforeForkHookFailure(t *testing.T) {
	hook := osproc.BeforeForkHook(nil, "echo first; echo 'migrations pending' >&2; exit 3", testTimeout)
	err := hook(t.TempDir(), nil)
	if err == nil || !strings.HasSuffix(err.Error(), ": exit status 3: migrations pending") {
		t.Errorf("hook: %v, want the exit status and the last line", err)
	}
}

// TestBeforeForkHookTimeoutKillsItsGroup: a command still running at the
// timeout fails the fork, and goes with what it started in the background
// (its process group), even a child that keeps its output open.
func TestBeforeForkHookTimeoutKillsItsGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child")
	hook := osproc.BeforeForkHook(nil, "sleep 60 & echo $! > child; wait", 500*time.Millisecond)
	start := time.Now()
	err := hook(dir, nil)
	if err == nil || !strings.Contains(err.Error(), "not done after 500ms") {
		t.Fatalf("hook: %v, want not done after the timeout", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the hook took %v to give up", took)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	if fd, ok := watch(t, pid); ok {
		waitGone(t, fd, "the command's background child")
	}
}

// TestBeforeForkHookDoneKillsItsGroup: a command that succeeds takes what
// it left running in the background with it.
func TestBeforeForkHookDoneKillsItsGroup(t *testing.T) {
	dir := t.TempDir()
	hook := osproc.BeforeForkHook(nil, "sleep 60 >/dev/null 2>&1 & echo $! > child", testTimeout)
	if err := hook(dir, nil); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "child"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	if fd, ok := watch(t, pid); ok {
		waitGone(t, fd, "the command's background child")
	}
}
