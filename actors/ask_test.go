package actors

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/actors/core"
)

// promptRuntime's workers do everything at once: a fork is spawned and
// listening immediately, a drain or kill exits immediately.
type promptRuntime struct {
	mu     sync.Mutex
	events map[core.WorkerID]func(any)
}

func (r *promptRuntime) Fork(spec WorkerSpec, events func(any)) {
	r.mu.Lock()
	r.events[spec.ID] = events
	r.mu.Unlock()
	events(Spawned{PID: 1000 + int(spec.ID)})
	events(IPC{Line: []byte(`{"event":"listening"}`)})
}

func (r *promptRuntime) Drain(id core.WorkerID, _ DrainMethod) { r.exit(id) }
func (r *promptRuntime) Kill(id core.WorkerID)                 { r.exit(id) }
func (r *promptRuntime) Abort(id core.WorkerID)                { r.exit(id) }

func (r *promptRuntime) exit(id core.WorkerID) {
	r.mu.Lock()
	events := r.events[id]
	delete(r.events, id)
	r.mu.Unlock()
	if events != nil {
		events(Exited{})
	}
}

// TestAsk: Ask answers with the decisions of its own step, after the
// observers saw that step; a restart asked for gets the target count
// filled in as a sent one does; a refusal is a Refused fact.
func TestAsk(t *testing.T) {
	system := NewSystem(zerolog.Nop())
	defer system.Shutdown()
	type step struct {
		in  core.Input
		out []core.Decision
	}
	var mu sync.Mutex
	var steps []step
	ready := make(chan struct{})
	c := Start(system, Options{
		Runtime: &promptRuntime{events: map[core.WorkerID]func(any){}}, Logger: zerolog.Nop(),
		Workers: func() int { return 2 },
		Observe: func(_ time.Time, in core.Input, out []core.Decision) {
			mu.Lock()
			defer mu.Unlock()
			steps = append(steps, step{in, out})
			for _, d := range out {
				if _, ok := d.(core.Ready); ok {
					close(ready)
				}
			}
		},
	})
	defer c.Shutdown()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("the cluster did not get ready")
	}
	// observed finds the step whose input is in, as the observers saw it.
	observed := func(in core.Input) []core.Decision {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range steps {
			if s.in == in {
				return s.out
			}
		}
		t.Fatalf("no step of %+v observed", in)
		return nil
	}
	ctx := context.Background()

	out, err := c.Ask(ctx, core.RestartRequested{Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, observed(core.RestartRequested{Source: "test", Target: 2})) {
		t.Fatalf("Ask answered %v, not the observed step", out)
	}
	if !hasDecision(out, core.RolloutStarted{Generation: 2, Baseline: 2, Source: "test"}) {
		t.Fatalf("restart: %v, want RolloutStarted of generation 2", out)
	}

	c.Stop("test")
	<-c.Done()
	out, err = c.Ask(ctx, core.ScaleTo{Target: 3, Source: "late"})
	if err != nil {
		t.Fatal(err)
	}
	if !hasDecision(out, core.Refused{Input: core.ScaleTo{Target: 3, Source: "late"}, Reason: "stopping"}) {
		t.Fatalf("scale after the stop: %v, want it refused", out)
	}
}

func hasDecision(out []core.Decision, want core.Decision) bool {
	for _, d := range out {
		if reflect.DeepEqual(d, want) {
			return true
		}
	}
	return false
}
