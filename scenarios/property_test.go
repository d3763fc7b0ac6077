package scenarios

import (
	"flag"
	"os"

	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"

	"pgregory.net/rapid"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/fsm"
)

// withChecks runs f with rapid's -rapid.checks set to n, unless the
// command line set it. rapid's fail files are not written: they would land
// among the scenario files in testdata.
func withChecks(t *testing.T, n int, f func()) {
	if nf := flag.Lookup("rapid.nofailfile"); nf != nil {
		_ = nf.Value.Set("true")
	}
	fl := flag.Lookup("rapid.checks")
	if fl == nil {
		t.Fatal("rapid.checks flag not registered")
	}
	if fl.Value.String() != fl.DefValue {
		f()
		return
	}
	old := fl.Value.String()
	if err := fl.Value.Set(strconv.Itoa(n)); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = fl.Value.Set(old) }()
	f()
}

// TestGeneratedSequencesCore throws random interleavings at the core and
// the worker machines on a SyncHost: 9,000 sequences.
func TestGeneratedSequencesCore(t *testing.T) {
	withChecks(t, 9000, func() {
		rapid.Check(t, func(rt *rapid.T) {
			d := NewDriver()
			defer d.Close()
			moves := &movesChecked{}
			runSequence(rt, d, moves.host)
			if len(moves.bad) > 0 {
				rt.Fatalf("state changes the lifecycle table does not allow: %v", moves.bad)
			}
		})
	})
}

// movesChecked hosts a cluster on a SyncHost and compares the cluster's
// view after every step with the view after the step before: every
// worker whose state changed must have made moves that package fsm's
// table allows (one step may make several: a fork drained at once). A SyncHost steps on the caller's goroutine, so its view
// can be read from Observe, between two steps.
type movesChecked struct {
	h    *SyncHost
	last map[core.WorkerID]fsm.State
	bad  []string
}

func (m *movesChecked) host(o actors.Options) Host {
	observe := o.Observe
	o.Observe = func(now time.Time, in core.Input, out []core.Decision) {
		if observe != nil {
			observe(now, in, out)
		}
		if m.h != nil {
			m.check(in)
		}
	}
	m.h = nil
	m.h = NewSyncHost(o)
	m.last = nil
	m.check(core.Start{})
	return m.h
}

func (m *movesChecked) check(in core.Input) {
	now := map[core.WorkerID]fsm.State{}
	for _, w := range m.h.View().Workers {
		now[w.ID] = w.State
		before, seen := m.last[w.ID]
		switch {
		case !seen && w.State != fsm.Forking && !fsm.Reachable(fsm.Forking, w.State):
			m.bad = append(m.bad, fmt.Sprintf("%s appeared %s (input %T)", w.ID, w.State, in))
		case seen && before != w.State && !fsm.Reachable(before, w.State):
			m.bad = append(m.bad, fmt.Sprintf("%s went from %s to %s (input %T)", w.ID, before, w.State, in))
		}
	}
	m.last = now
}

// TestGeneratedSequencesActors does the same through the real actors,
// reusing one actor system for all 1,000 sequences.
func TestGeneratedSequencesActors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		system := actors.NewSystem(discard)
		defer shutdownInBubble(system)
		withChecks(t, 1000, func() {
			// rapid asks a *testing.T for its deadline, which a bubble forbids.
			rapid.Check(noDeadline{t}, func(rt *rapid.T) {
				d := NewDriver()
				defer d.Close()
				runSequence(rt, d, func(o actors.Options) Host { return NewActorHost(system, o) })
			})
		})
	})
}

// noDeadline hides testing.T's Deadline method from rapid.
type noDeadline struct{ rapid.TB }

func runSequence(t *rapid.T, d *Driver, newHost func(actors.Options) Host) {
	runSequenceWith(t, d, newHost, sequenceTurns{})
}

// sequenceTurns extend a generated sequence: configure, if set, may
// change the drawn options; between, if set, gets a turn after each step
// (the checks run after it too) and says what it did.
type sequenceTurns struct {
	configure func(*rapid.T, *actors.Options)
	between   func(*rapid.T, *Driver) string
}

func runSequenceWith(t *rapid.T, d *Driver, newHost func(actors.Options) Host, turns sequenceTurns) {
	workers := rapid.IntRange(1, 5).Draw(t, "workers")
	opts := actors.Options{Logger: propertyLogger(), Workers: func() int { return workers }}
	opts.Core.MaxSurge = rapid.IntRange(1, 3).Draw(t, "max-surge")
	opts.Core.KillTimeout = time.Duration(rapid.IntRange(1, 30).Draw(t, "kill-timeout-s")) * time.Second
	opts.Core.ReadyTimeout = time.Duration(rapid.IntRange(1, 60).Draw(t, "ready-timeout-s")) * time.Second
	opts.Drain = rapid.SampledFrom([]actors.DrainMethod{actors.DrainAuto, actors.DrainIPC, actors.DrainSignal, actors.DrainBoth}).Draw(t, "drain")
	opts.Core.Policy = drawPolicy(t, opts.Core.MaxSurge)
	drawHealth(t, &opts.Core)
	if turns.configure != nil {
		turns.configure(t, &opts)
	}
	d.Start(opts, newHost)
	stopped := false
	check := func(what string) {
		if v := d.Check(); len(v) > 0 {
			t.Fatalf("after %s: %v", what, v)
		}
	}
	check("start")
	steps := rapid.IntRange(1, 50).Draw(t, "steps")
	for range steps {
		what := step(t, d, &stopped)
		check(what)
		if turns.between != nil {
			check(turns.between(t, d))
		}
	}
	if _, ok := opts.Core.Policy.(*chaosPolicy); ok && !stopped {
		// Liveness is promised for the built-ins; the random policy only
		// has to keep the invariant. An operator would change it.
		cfg := d.Opts.Core
		cfg.Policy = core.Rolling{MaxSurge: cfg.MaxSurge}
		d.Opts.Core = cfg
		d.Send(core.Reconfigure{Config: cfg})
	}
	converge(t, d, stopped)
}

// drawHealth turns the watchdog and the recycling limits on, or not.
func drawHealth(t *rapid.T, cfg *core.Config) {
	if rapid.Bool().Draw(t, "watchdog") {
		cfg.Watchdog = time.Duration(rapid.IntRange(5, 30).Draw(t, "watchdog-s")) * time.Second
		cfg.AbortTimeout = time.Duration(rapid.IntRange(1, 10).Draw(t, "abort-timeout-s")) * time.Second
	}
	if rapid.Bool().Draw(t, "recycle") {
		cfg.Recycle = core.Recycle{
			MaxMemory: 100, MemorySamples: rapid.IntRange(1, 3).Draw(t, "memory-samples"),
			MemoryJitter: time.Duration(rapid.IntRange(0, 5000).Draw(t, "memory-jitter-ms")) * time.Millisecond,
			MaxLifetime:  time.Duration(rapid.IntRange(0, 120).Draw(t, "lifetime-s")) * time.Second,
			MaxRequests:  rapid.IntRange(0, 100).Draw(t, "max-requests"),
			Concurrency:  rapid.IntRange(1, 3).Draw(t, "recycle-concurrency"),
		}
		cfg.Seed = rapid.Uint64().Draw(t, "recycle-seed")
	}
}

// drawPolicy picks a built-in policy or a random one.
func drawPolicy(t *rapid.T, maxSurge int) core.Policy {
	switch rapid.IntRange(0, 3).Draw(t, "policy") {
	case 0:
		return core.Rolling{MaxSurge: maxSurge}
	case 1:
		return core.BlueGreen{}
	case 2:
		return core.Canary{Soak: time.Duration(rapid.IntRange(0, 60).Draw(t, "soak-s")) * time.Second, MaxSurge: maxSurge}
	}
	return &chaosPolicy{rng: rand.New(rand.NewPCG(rapid.Uint64().Draw(t, "seed"), 0))}
}

// chaosPolicy proposes anything at all: marks, forks into any slot
// (including ones that do not exist), drains of any worker, aborts and
// waits. The cluster must refuse whatever would break the invariant.
type chaosPolicy struct {
	mu  sync.Mutex
	rng *rand.Rand
}

func (p *chaosPolicy) Name() string { return "chaos" }

func (p *chaosPolicy) Next(v core.View) core.Step {
	p.mu.Lock()
	defer p.mu.Unlock()
	var s core.Step
	for _, w := range v.Workers {
		switch p.rng.IntN(6) {
		case 0:
			s.Drain = append(s.Drain, w.ID)
		case 1:
			s.Replace = append(s.Replace, w.ID)
		case 2:
			s.Fork = append(s.Fork, w.Slot)
		}
	}
	if p.rng.IntN(4) == 0 {
		s.Fork = append(s.Fork, p.rng.IntN(v.Target+2)-1)
	}
	if p.rng.IntN(20) == 0 {
		s.Abort = "chaos"
	}
	if p.rng.IntN(5) == 0 {
		s.Wait = time.Duration(p.rng.IntN(10000)) * time.Millisecond
	}
	return s
}

// step plays one random event and says what it was.
func step(t *rapid.T, d *Driver, stopped *bool) string {
	procs := d.Runtime.Processes()
	pick := func(label string, keep func(Process, core.Worker, bool) bool) (core.WorkerID, bool) {
		view := map[core.WorkerID]core.Worker{}
		for _, w := range d.Host.View().Workers {
			view[w.ID] = w
		}
		var ids []core.WorkerID
		for _, p := range procs {
			w, ok := view[p.Spec.ID]
			if !p.Exited && keep(p, w, ok) {
				ids = append(ids, p.Spec.ID)
			}
		}
		if len(ids) == 0 {
			return 0, false
		}
		return ids[rapid.IntRange(0, len(ids)-1).Draw(t, label)], true
	}
	action := rapid.IntRange(0, 99).Draw(t, "action")
	switch {
	case action < 10:
		d.Send(core.RestartRequested{Source: "SIGUSR2"})
		return "restart"
	case action < 12:
		*stopped = true
		d.Send(core.StopRequested{Source: "SIGTERM"})
		return "stop"
	case action < 40:
		if id, ok := pick("ready", func(p Process, w core.Worker, ok bool) bool { return ok && w.State == fsm.Forking && p.PID != 0 }); ok {
			via := rapid.SampledFrom([]string{actors.ReadyIPC, actors.ReadyNotify}).Draw(t, "via")
			_ = d.Deliver(id, ReadyMessage(via))
			return "ready " + id.String()
		}
	case action < 55:
		if id, ok := pick("crash", func(p Process, _ core.Worker, _ bool) bool { return p.PID != 0 }); ok {
			e := actors.Exited{Code: rapid.IntRange(0, 2).Draw(t, "code")}
			if rapid.Bool().Draw(t, "by-signal") {
				e = actors.Exited{Signal: syscall.SIGSEGV}
			}
			_ = d.Deliver(id, e)
			return "exit " + id.String()
		}
	case action < 60:
		if id, ok := pick("requester", func(p Process, _ core.Worker, _ bool) bool { return p.PID != 0 }); ok {
			_ = d.Deliver(id, actors.IPC{Line: []byte(`{"event":"request-restart"}`)})
			return "request-restart " + id.String()
		}
	case action < 61:
		d.Send(core.ScaleBy{Delta: rapid.SampledFrom([]int{-1, 1}).Draw(t, "delta"), Source: "scale"})
		return "scale"
	case action < 61+1:
		// The health inputs: heartbeats, a trigger, a boot's extension,
		// memory samples (the limit is 100 bytes), a max-requests recycle.
		if id, ok := pick("health", func(p Process, _ core.Worker, _ bool) bool { return p.PID != 0 }); ok {
			msg := rapid.SampledFrom([]any{
				actors.IPC{Line: []byte(`{"event":"heartbeat"}`)}, actors.Notify{Payload: "WATCHDOG=1"},
				actors.Notify{Payload: "WATCHDOG=trigger"}, actors.Notify{Payload: "EXTEND_TIMEOUT_USEC=90000000"},
				actors.IPC{Line: []byte(`{"event":"request-restart","reason":"max-requests"}`)},
			}).Draw(t, "health-message")
			_ = d.Deliver(id, msg)
			return fmt.Sprintf("health %s %v", id, msg)
		}
	case action < 63:
		var in core.UsageSampled
		for _, w := range d.Host.View().Workers {
			in.Samples = append(in.Samples, core.RSSSample{Worker: w.ID, RSS: int64(rapid.IntRange(0, 200).Draw(t, "rss"))})
		}
		d.Send(in)
		return "sample"
	case action < 64:
		if id, ok := pick("talker", func(p Process, _ core.Worker, _ bool) bool { return p.PID != 0 }); ok {
			line := rapid.SampledFrom([]string{`{"event":"nope"}`, `garbage`, `"ready"`, `{"event":"ready"}`, `[1,2]`}).Draw(t, "line")
			_ = d.Deliver(id, actors.IPC{Line: []byte(line)})
			return "message " + id.String()
		}
	case action < 66:
		d.FailForks(1, "exec failed")
		return "fail-forks"
	case action < 80:
		dur := time.Duration(rapid.IntRange(0, 40000).Draw(t, "advance-ms")) * time.Millisecond
		d.Advance(dur)
		return "advance " + dur.String()
	case action < 90:
		if id, ok := pick("drained", func(p Process, w core.Worker, ok bool) bool { return ok && w.State == fsm.Draining && p.PID != 0 }); ok {
			_ = d.Deliver(id, actors.Exited{})
			return "drained exit " + id.String()
		}
	default:
		if next, ok := d.Clock.NextDue(); ok {
			d.Advance(next)
			return "advance to next timer"
		}
	}
	return "nothing"
}

// converge checks liveness: once the inputs stop and the workers behave,
// the cluster reaches the target count of listening workers of the newest
// generation (an operator resends the restart after an aborted rollout),
// or, after a stop, stops with no process left.
func converge(t *rapid.T, d *Driver, stopped bool) {
	d.Runtime.mu.Lock()
	d.Runtime.failForks = nil
	d.Runtime.mu.Unlock()
	for range 2000 {
		if err := d.SettleWorkers(); err != nil {
			t.Fatal(err)
		}
		if v := d.Check(); len(v) > 0 {
			t.Fatalf("while converging: %v", v)
		}
		v := d.Host.View()
		if stopped {
			if v.Stopped {
				for _, p := range d.Runtime.Processes() {
					if !p.Exited {
						t.Fatalf("stopped with %s still running", p.Spec.ID)
					}
				}
				return
			}
		} else if done, why := converged(v); done {
			return
		} else if v.Rollout == nil && why == "old generation" {
			d.Send(core.RestartRequested{Source: "retry"})
			continue
		}
		next, ok := d.Clock.NextDue()
		if !ok {
			t.Fatalf("stuck with no timer pending: %s", status(d.Host.View()))
		}
		// Well-behaved workers keep their watchdog fed: a heartbeat every
		// third of the period.
		for _, w := range v.Workers {
			if w.State == fsm.Listening && !w.Hung {
				_ = d.Deliver(w.ID, actors.IPC{Line: []byte(`{"event":"heartbeat"}`)})
			}
		}
		if wd := d.Opts.Core.Watchdog; wd > 0 {
			next = min(next, wd/3)
		}
		d.Advance(next)
	}
	t.Fatalf("did not converge: %s", status(d.Host.View()))
}

func converged(v core.View) (bool, string) {
	if v.Rollout != nil {
		return false, "rollout running"
	}
	if len(v.Workers) != v.Target {
		return false, fmt.Sprintf("%d workers", len(v.Workers))
	}
	for _, w := range v.Workers {
		if !w.Serves() {
			return false, "not all serving"
		}
	}
	for _, w := range v.Workers {
		if w.Generation != v.Generation {
			return false, "old generation"
		}
	}
	return true, ""
}

// propertyLogger is silent unless DM_PROPERTY_LOG is set, to read what a
// failing sequence did (with -rapid.seed).
func propertyLogger() zerolog.Logger {
	if os.Getenv("DM_PROPERTY_LOG") == "" {
		return discard
	}
	return zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, NoColor: true, PartsExclude: []string{zerolog.TimestampFieldName}}).Level(zerolog.DebugLevel)
}
