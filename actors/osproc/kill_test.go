package osproc_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/osproc"
)

// startSpawner forks a worker that starts a sleeper child, and returns the
// worker's events, what it reported and pidfds on both (-1 for a process
// already gone).
func startSpawner(t *testing.T, cfg osproc.Config, mode string) (rt *osproc.Runtime, rec *recorder, worker, child int) {
	t.Helper()
	cfg.Command = role(t, "spawner", mode)
	rt = newRuntime(t, cfg)
	rec, pid := spawn(t, rt, actors.WorkerSpec{ID: 1})
	worker, _ = watch(t, pid)
	var sp spawned
	decode(t, rec.next(t), &sp)
	// Its own group, which the child shares; not the master's.
	if sp.WorkerPGID != pid || sp.ChildPGID != pid {
		t.Errorf("worker %d in group %d, its child in %d; want both in the worker's own group", pid, sp.WorkerPGID, sp.ChildPGID)
	}
	if sp.WorkerPGID == syscall.Getpgrp() {
		t.Errorf("worker shares the master's process group %d", sp.WorkerPGID)
	}
	child, _ = watch(t, sp.Child)
	return rt, rec, worker, child
}

// TestKillTakesTheProcessGroup: Kill ends the worker (SIGKILL) and the
// child it started, which shares its process group.
func TestKillTakesTheProcessGroup(t *testing.T) {
	rt, rec, worker, child := startSpawner(t, osproc.Config{}, "stay")
	if child < 0 || !alive(t, child) {
		t.Fatal("the worker's child died before Kill")
	}
	rt.Kill(1)
	ex := expect[actors.Exited](t, rec)
	if ex.Signal != syscall.SIGKILL || ex.Code != 0 {
		t.Errorf("Exited %+v, want signal SIGKILL", ex)
	}
	waitGone(t, worker, "the worker")
	waitGone(t, child, "the worker's child")
}

// outputWaitDelay is how long the runtime lets a worker's output pipes
// stay open after it exited (cmd.WaitDelay in process.go).
const outputWaitDelay = 2 * time.Second

// TestGroupKilledAfterWorkerExits: a worker that exits on its own while
// its child still runs takes the child with it: the runtime kills the
// worker's group when the worker exits, before Exited. The child holds the
// worker's end of the IPC channel, and with LogOutput its output pipes:
// neither holds up Exited (before the fix, the group was killed only once
// Wait returned, which with a child holding the pipes is after the output
// wait delay).
func TestGroupKilledAfterWorkerExits(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  osproc.Config
	}{
		{"output passed through", osproc.Config{}},
		{"output logged", osproc.Config{LogOutput: true, Logger: zerolog.New(&syncBuffer{})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, rec, _, child := startSpawner(t, tc.cfg, "exit")
			reported := time.Now() // the worker exits right after its report
			ex := expect[actors.Exited](t, rec)
			if ex.Code != 0 || ex.Signal != 0 {
				t.Errorf("Exited %+v, want a clean exit", ex)
			}
			if took := time.Since(reported); took >= outputWaitDelay {
				t.Errorf("Exited came %v after the worker's last word: held up by the child", took)
			}
			waitGone(t, child, "the worker's child")
		})
	}
}
