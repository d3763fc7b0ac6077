package actors

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/fsm"
)

// reattachingRuntime is a promptRuntime that takes over handed-over
// workers.
type reattachingRuntime struct {
	*promptRuntime
	mu         sync.Mutex
	reattached []core.WorkerID
}

func (r *reattachingRuntime) Reattach(id core.WorkerID, events func(any)) {
	r.promptRuntime.mu.Lock()
	r.events[id] = events
	r.promptRuntime.mu.Unlock()
	r.mu.Lock()
	r.reattached = append(r.reattached, id)
	r.mu.Unlock()
}

func (r *reattachingRuntime) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reattached)
}

// startReady starts a cluster of two workers on a promptRuntime and
// waits until it is ready.
func startReady(t *testing.T, opts Options) *Cluster {
	t.Helper()
	ready := make(chan struct{})
	var once sync.Once
	opts.Observe = func(_ time.Time, _ core.Input, out []core.Decision) {
		for _, d := range out {
			if _, ok := d.(core.Ready); ok {
				once.Do(func() { close(ready) })
			}
		}
	}
	system := NewSystem(zerolog.Nop())
	t.Cleanup(system.Shutdown)
	c := Start(system, opts)
	t.Cleanup(c.Shutdown)
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("the cluster did not get ready")
	}
	return c
}

func waitDone(t *testing.T, c *Cluster, what string) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not stop", what)
	}
}

// TestResumeRefused: a resume is refused before anything starts when the
// runtime cannot reattach, when the core's state and the workers' disagree,
// when a worker's state is not one a running worker is in, and when the
// configuration is not the one handed over; a snapshot of a newer core
// format or with an unknown field is not read. A good one resumes, on a
// new actor system, a cluster that stops its reattached workers; the old
// cluster, thawed, stops its own.
func TestResumeRefused(t *testing.T) {
	opts := Options{Logger: zerolog.Nop(), Workers: func() int { return 2 }}
	old := opts
	old.Runtime = &promptRuntime{events: map[core.WorkerID]func(any){}}
	c := startReady(t, old)
	snap, err := c.Freeze(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	read := func() Snapshot {
		s, err := DecodeSnapshot(data)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if s := read(); len(s.Workers) != 2 || len(s.Core.Workers) != 2 || s.Workers[0].PID != 1001 || s.Workers[1].State != fsm.Listening {
		t.Fatalf("snapshot %+v", s)
	}
	newRuntime := func() *reattachingRuntime {
		return &reattachingRuntime{promptRuntime: &promptRuntime{events: map[core.WorkerID]func(any){}}}
	}
	system := NewSystem(zerolog.Nop())
	defer system.Shutdown()
	for _, tc := range []struct {
		name   string
		change func(*Options, *Snapshot)
		want   string
	}{
		{"no reattacher", func(o *Options, _ *Snapshot) { o.Runtime = &promptRuntime{} }, "cannot reattach"},
		{"worker missing", func(_ *Options, s *Snapshot) { s.Workers = s.Workers[:1] }, "w2 is in the core's state but has no worker state"},
		{"worker unknown", func(_ *Options, s *Snapshot) {
			s.Workers = append(s.Workers, WorkerState{Spec: WorkerSpec{ID: 9}, State: fsm.Listening})
		}, "w9 has a worker state but is not in the core's state"},
		{"worker twice", func(_ *Options, s *Snapshot) { s.Workers = append(s.Workers, s.Workers[0]) }, "w1 has two worker states"},
		{"other slot", func(_ *Options, s *Snapshot) { s.Workers[1].Spec.Slot = 0 }, "w2: the core has it in slot 1"},
		{"killed", func(_ *Options, s *Snapshot) { s.Workers[0].State = fsm.Killed }, "cannot restore a worker in state \"killed\""},
		{"ready mode", func(_ *Options, s *Snapshot) { s.Workers[0].Ready = "sometimes" }, "ready mode"},
		{"no pid", func(_ *Options, s *Snapshot) { s.Workers[1].PID = 0 }, "w2: pid 0"},
		{"other config", func(o *Options, _ *Snapshot) { o.Core.KillTimeout = time.Second }, "configuration differs"},
	} {
		o, s := opts, read()
		o.Runtime = newRuntime()
		tc.change(&o, &s)
		o.Resume = &s
		if _, err := StartResumed(system, o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	for name, bad := range map[string]string{
		"newer format":  strings.Replace(string(data), `"format":1`, `"format":2`, 1),
		"unknown field": strings.Replace(string(data), `"spoke_ipc"`, `"spoken"`, 1),
		"no core":       `{"workers":[]}`,
	} {
		var s Snapshot
		if err := json.Unmarshal([]byte(bad), &s); err == nil {
			t.Errorf("%s: read", name)
		}
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Start with Options.Resume did not panic")
			}
		}()
		s := read()
		o := opts
		o.Runtime, o.Resume = newRuntime(), &s
		Start(system, o)
	}()

	s := read()
	rt := newRuntime()
	o := opts
	o.Runtime, o.Resume = rt, &s
	resumed, err := StartResumed(system, o)
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Shutdown()
	for deadline := time.Now().Add(10 * time.Second); rt.count() < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("reattached %d workers, want 2", rt.count())
		}
	}
	v, err := resumed.View(context.Background())
	if err != nil || v.Listening() != 2 || !v.Ready {
		t.Fatalf("resumed view %+v, %v", v, err)
	}
	resumed.Stop("test")
	waitDone(t, resumed, "the resumed cluster")

	c.Thaw()
	c.Stop("test")
	waitDone(t, c, "the thawed cluster")
}

// stuckRuntime's drains block until released, as a worker actor stuck
// in a runtime call would.
type stuckRuntime struct {
	*promptRuntime
	entered, release chan struct{}
}

func (r *stuckRuntime) Drain(id core.WorkerID, how DrainMethod) {
	r.entered <- struct{}{}
	<-r.release
	r.promptRuntime.Drain(id, how)
}

// TestFreezeUndone: a Freeze that cannot reach its cut by its deadline
// (a worker actor is stuck in a runtime call and answers nothing) fails
// and is undone: once the worker goes on, the next Freeze is not refused
// and the cluster runs as before. One whose context is done does not
// start.
func TestFreezeUndone(t *testing.T) {
	rt := &stuckRuntime{promptRuntime: &promptRuntime{events: map[core.WorkerID]func(any){}},
		entered: make(chan struct{}), release: make(chan struct{})}
	c := startReady(t, Options{Logger: zerolog.Nop(), Workers: func() int { return 1 }, Runtime: rt})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Freeze(ctx); err == nil {
		t.Error("a Freeze with its context done: no error")
	}
	c.Restart("test") // w2 listens at once, w1 is drained: stuck
	select {
	case <-rt.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("w1 was not drained")
	}
	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.Freeze(ctx); err == nil {
		t.Fatal("a Freeze with a worker stuck: no error")
	}
	close(rt.release)
	snap, err := c.Freeze(context.Background())
	if err != nil {
		t.Fatalf("a Freeze after one undone: %v", err)
	}
	if len(snap.Workers) != 1 || snap.Workers[0].Spec.ID != 2 {
		t.Errorf("snapshot workers %+v, want w2 alone (w1 exited once drained)", snap.Workers)
	}
	c.Thaw()
	c.Stop("test")
	select {
	case <-rt.entered: // w2's drain
	case <-time.After(10 * time.Second):
		t.Fatal("w2 was not drained")
	}
	waitDone(t, c, "the cluster")
}
