package osproc_test

import (
	"slices"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/actors/osproc"
)

// TestCloseKillsRunningWorkers: Close with workers running kills them
// (and what they started), delivers their Exited before it returns, and
// leaves no goroutine behind.
func TestCloseKillsRunningWorkers(t *testing.T) {
	rt := newRuntime(t, osproc.Config{Command: role(t, "spawner", "stay")})
	recs := map[core.WorkerID]*recorder{}
	var pids []int
	for _, id := range []core.WorkerID{1, 2} {
		rec, pid := spawn(t, rt, actors.WorkerSpec{ID: id})
		recs[id] = rec
		var sp spawned
		decode(t, rec.next(t), &sp)
		pids = append(pids, pid, sp.Child)
	}
	var watched []int
	for _, pid := range pids {
		fd, ok := watch(t, pid)
		if !ok {
			t.Fatalf("process %d gone before Close", pid)
		}
		watched = append(watched, fd)
	}

	closeRuntime(t, rt)
	for id, rec := range recs {
		rest := rec.drained()
		if len(rest) != 1 {
			t.Fatalf("worker %d: after Close, events %+v, want its Exited", id, rest)
		}
		if ex, ok := rest[0].(actors.Exited); !ok || ex.Signal != syscall.SIGKILL {
			t.Errorf("worker %d: %+v, want Exited by SIGKILL", id, rest[0])
		}
	}
	for _, fd := range watched {
		waitGone(t, fd, "a worker or its child after Close")
	}
	goleak.VerifyNone(t)
}

// TestCloseDuringFork: a fork under way when Close runs (its before-fork
// hook still busy) does not leave a worker running that Close would wait
// for forever: the worker is killed as soon as it is started.
func TestCloseDuringFork(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	rt := newRuntime(t, osproc.Config{
		Command: role(t, "sleeper"),
		BeforeFork: func(_ string, env []string) error {
			if slices.Contains(env, "DUTCHMASTER_WORKER_ID=2") {
				close(entered)
				<-release
			}
			return nil
		},
	})
	running, _ := spawn(t, rt, actors.WorkerSpec{ID: 1})
	rec := newRecorder()
	rt.Fork(actors.WorkerSpec{ID: 2}, rec.events)
	<-entered

	// Close marks the runtime closed, then kills the workers it knows of:
	// worker 1's death says Close has gone past that, to wait for the fork.
	closed.Store(rt, true)
	closeDone := make(chan error, 1)
	go func() { closeDone <- rt.Close() }()
	if ex, _ := until[actors.Exited](t, running); ex.Signal != syscall.SIGKILL {
		t.Errorf("running worker: Exited %+v, want killed", ex)
	}
	close(release)

	pid := expect[actors.Spawned](t, rec).PID
	watch(t, pid) // a failing test must not leave it behind, nor Close hanging
	ex := expect[actors.Exited](t, rec)
	if ex.Signal != syscall.SIGKILL {
		t.Errorf("Exited %+v, want killed", ex)
	}
	select {
	case err := <-closeDone:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Close still waiting")
	}
}

// TestForkAfterClose: a fork after Close starts nothing that lives on:
// the worker is killed at once, and its events end with Exited.
func TestForkAfterClose(t *testing.T) {
	rt := newRuntime(t, osproc.Config{Command: role(t, "sleeper")})
	closeRuntime(t, rt)
	rec, pid := spawn(t, rt, actors.WorkerSpec{ID: 1})
	fd, _ := watch(t, pid)
	if ex := expect[actors.Exited](t, rec); ex.Signal != syscall.SIGKILL {
		t.Errorf("Exited %+v, want killed", ex)
	}
	waitGone(t, fd, "a worker forked after Close")
}
