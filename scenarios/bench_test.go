package scenarios

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
)

// eagerRuntime is a runtime whose workers do everything at once: a fork
// is spawned and ready immediately, a drain or kill exits immediately. It
// lets a rollout run to its end with no one scripting it.
type eagerRuntime struct {
	mu     sync.Mutex
	events map[core.WorkerID]func(any)
	pid    int
}

func (r *eagerRuntime) Fork(spec actors.WorkerSpec, events func(any)) {
	r.mu.Lock()
	r.pid++
	pid := r.pid
	r.events[spec.ID] = events
	r.mu.Unlock()
	events(actors.Spawned{PID: pid})
	events(actors.IPC{Line: []byte(`{"event":"listening"}`)})
}

func (r *eagerRuntime) Drain(id core.WorkerID, _ actors.DrainMethod) { r.exit(id) }
func (r *eagerRuntime) Kill(id core.WorkerID)                        { r.exit(id) }
func (r *eagerRuntime) Abort(id core.WorkerID)                       { r.exit(id) }

func (r *eagerRuntime) exit(id core.WorkerID) {
	r.mu.Lock()
	events := r.events[id]
	delete(r.events, id)
	r.mu.Unlock()
	if events != nil {
		events(actors.Exited{})
	}
}

// BenchmarkRollingRestart100 measures inputs per second through the
// cluster actor: each iteration is one rolling restart of 100 workers
// (about 500 inputs: fork, spawned, listening, drain, exit per worker).
func BenchmarkRollingRestart100(b *testing.B) {
	const workers = 100
	system := actors.NewSystem(discard)
	defer system.Shutdown()
	var inputs atomic.Int64
	ready := make(chan struct{}, 1)
	complete := make(chan struct{}, 1)
	opts := actors.Options{
		Runtime: &eagerRuntime{events: map[core.WorkerID]func(any){}},
		Logger:  discard,
		Workers: func() int { return workers },
		Observe: func(_ time.Time, _ core.Input, out []core.Decision) {
			inputs.Add(1)
			for _, d := range out {
				switch d := d.(type) {
				case core.Ready:
					ready <- struct{}{}
				case core.RolloutEnded:
					if d.Outcome == core.OutcomeComplete {
						complete <- struct{}{}
					}
				}
			}
		},
	}
	c := actors.Start(system, opts)
	<-ready
	inputs.Store(0)
	b.ResetTimer()
	for range b.N {
		c.Restart("bench")
		<-complete
	}
	b.StopTimer()
	b.ReportMetric(float64(inputs.Load())/b.Elapsed().Seconds(), "inputs/s")
	b.ReportMetric(float64(inputs.Load())/float64(b.N), "inputs/rollout")
	c.Stop("bench")
	<-c.Done()
}

// BenchmarkRollingRestart100Core is the same rollout through the core and
// worker machines alone (SyncHost), to show what the actors cost.
func BenchmarkRollingRestart100Core(b *testing.B) {
	const workers = 100
	d := NewDriver()
	d.Start(actors.Options{Logger: discard, Workers: func() int { return workers }}, func(o actors.Options) Host { return NewSyncHost(o) })
	if err := d.SettleWorkers(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		d.Send(core.RestartRequested{Source: "bench"})
		if err := d.SettleWorkers(); err != nil {
			b.Fatal(err)
		}
	}
}
