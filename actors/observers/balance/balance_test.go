package balance

import (
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/fsm"
)

// recorder is a Target that keeps every set it is given.
type recorder struct{ sets [][]int }

func (r *recorder) SetEligible(slots []int) error {
	r.sets = append(r.sets, slots)
	return nil
}

func (r *recorder) last() string {
	if len(r.sets) == 0 {
		return "none"
	}
	return fmt.Sprint(r.sets[len(r.sets)-1])
}

func step(o *Observer, in core.Input, out ...core.Decision) { o.Observe(time.Time{}, in, out) }

func TestEligibleFollowsTheWorkers(t *testing.T) {
	r := &recorder{}
	o := New(zerolog.Nop(), r)
	step(o, core.Start{Target: 2}, core.Fork{Worker: 1, Slot: 0}, core.Fork{Worker: 2, Slot: 1})
	if len(r.sets) != 0 {
		t.Fatalf("sets %v before any worker listens, want none", r.sets)
	}
	step(o, core.WorkerListening{Worker: 1})
	if r.last() != "[0]" {
		t.Fatalf("after worker 1 listens: %s, want [0]", r.last())
	}
	step(o, core.WorkerListening{Worker: 2})
	if r.last() != "[0 1]" {
		t.Fatalf("after worker 2 listens: %s, want [0 1]", r.last())
	}

	// A rolling restart of slot 0: eligible through the old worker while
	// the replacement boots, and through the replacement once the old one
	// is drained.
	n := len(r.sets)
	step(o, core.RestartRequested{}, core.Fork{Worker: 3, Slot: 0, Replacement: true})
	step(o, core.WorkerListening{Worker: 3}, core.Drain{Worker: 1})
	step(o, core.WorkerExited{Worker: 1, Reason: fsm.ExitReason{}})
	if len(r.sets) != n {
		t.Errorf("the set changed during slot 0's replacement: %v", r.sets[n:])
	}

	// A drain takes the slot out at once, in the step that decides it.
	step(o, core.StopRequested{}, core.Drain{Worker: 2})
	if r.last() != "[0]" {
		t.Errorf("after worker 2's drain: %s, want [0]", r.last())
	}
	// A crash too.
	step(o, core.WorkerExited{Worker: 3})
	if r.last() != "[]" {
		t.Errorf("after worker 3's crash: %s, want []", r.last())
	}
	// A worker that drains of its own accord, and a kill.
	step(o, core.WorkerExited{Worker: 2}, core.Fork{Worker: 4, Slot: 0}, core.Fork{Worker: 5, Slot: 1})
	step(o, core.WorkerListening{Worker: 4})
	step(o, core.WorkerListening{Worker: 5})
	step(o, core.WorkerDraining{Worker: 4})
	if r.last() != "[1]" {
		t.Errorf("after worker 4 drains itself: %s, want [1]", r.last())
	}
	step(o, core.TimerFired{}, core.Kill{Worker: 5})
	if r.last() != "[]" || fmt.Sprint(o.Eligible()) != "[]" {
		t.Errorf("after worker 5's kill: %s (Eligible %v), want []", r.last(), o.Eligible())
	}
	// A hung worker leaves the set when it is found hung; its successor
	// brings the slot back.
	step(o, core.WorkerExited{Worker: 4}, core.Fork{Worker: 6, Slot: 0})
	step(o, core.WorkerListening{Worker: 6})
	if r.last() != "[0]" {
		t.Fatalf("after worker 6 listens: %s, want [0]", r.last())
	}
	step(o, core.TimerFired{}, core.WatchdogMissed{Worker: 6}, core.Fork{Worker: 7, Slot: 0})
	if r.last() != "[]" {
		t.Errorf("after worker 6 hung: %s, want []", r.last())
	}
	step(o, core.WorkerListening{Worker: 7}, core.Abort{Worker: 6})
	if r.last() != "[0]" {
		t.Errorf("after its successor listens: %s, want [0]", r.last())
	}
}

func TestUnknownWorkerIgnored(t *testing.T) {
	r := &recorder{}
	o := New(zerolog.Nop(), r)
	step(o, core.WorkerListening{Worker: 9})
	if len(r.sets) != 0 {
		t.Errorf("a worker never forked made its slot eligible: %v", r.sets)
	}
}

func TestRetiredOnlyOnAScaleDown(t *testing.T) {
	o := New(zerolog.Nop(), &recorder{})
	step(o, core.Start{Target: 3}, core.Fork{Worker: 1, Slot: 0}, core.Fork{Worker: 2, Slot: 1}, core.Fork{Worker: 3, Slot: 2})
	for w := core.WorkerID(1); w <= 3; w++ {
		step(o, core.WorkerListening{Worker: w})
	}
	if o.Retired(1) {
		t.Error("slot 1 retired while its worker serves")
	}
	// A replacement of slot 1 that drains the old worker before the new
	// one listens: the slot comes back, it is not retired.
	step(o, core.RestartRequested{}, core.Fork{Worker: 4, Slot: 1, Replacement: true}, core.Drain{Worker: 2})
	if o.Retired(1) {
		t.Error("slot 1 retired while its replacement boots")
	}
	step(o, core.WorkerListening{Worker: 4})
	step(o, core.WorkerExited{Worker: 2, Reason: fsm.ExitReason{}})
	// A scale down drains slot 2's worker: retired.
	step(o, core.ScaleTo{Target: 2}, core.Drain{Worker: 3})
	if !o.Retired(2) {
		t.Errorf("slot 2 not retired by a scale down (eligible %v)", o.Eligible())
	}
	// A scale up into slot 2 and down again before the new worker
	// listens, while slot 2's old worker still drains: both are told to
	// go, so the slot is retired (its sockets close once both are gone).
	step(o, core.ScaleTo{Target: 3}, core.Fork{Worker: 5, Slot: 2})
	if o.Retired(2) {
		t.Error("slot 2 retired while its new worker boots")
	}
	step(o, core.ScaleTo{Target: 2}, core.Drain{Worker: 5})
	if !o.Retired(2) {
		t.Errorf("slot 2 not retired with both its workers drained (eligible %v)", o.Eligible())
	}
	// A stop drains everyone: nothing is eligible, nothing retired.
	step(o, core.StopRequested{}, core.Drain{Worker: 1}, core.Drain{Worker: 4})
	if o.Retired(0) || o.Retired(1) {
		t.Errorf("a slot retired by a stop (eligible %v)", o.Eligible())
	}
}

// workerRecorder is a WorkerTarget (as the Node.js round-robin is).
type workerRecorder struct {
	recorder
	workers [][]int
}

func (r *workerRecorder) SetEligibleWorkers(ids []int) { r.workers = append(r.workers, ids) }

func (r *workerRecorder) lastWorkers() string {
	if len(r.workers) == 0 {
		return "none"
	}
	return fmt.Sprint(r.workers[len(r.workers)-1])
}

// TestEligibleWorkers: a worker target is told the workers themselves:
// during a replacement the old worker and its replacement both take
// connections until the old one is drained, which takes it out in the
// step that decides the drain.
func TestEligibleWorkers(t *testing.T) {
	r := &workerRecorder{}
	o := New(zerolog.Nop(), r)
	step(o, core.Start{Target: 2}, core.Fork{Worker: 1, Slot: 0}, core.Fork{Worker: 2, Slot: 1})
	step(o, core.WorkerListening{Worker: 1})
	step(o, core.WorkerListening{Worker: 2})
	if r.lastWorkers() != "[1 2]" {
		t.Fatalf("after both listen: %s, want [1 2]", r.lastWorkers())
	}
	step(o, core.RestartRequested{}, core.Fork{Worker: 3, Slot: 0, Replacement: true})
	step(o, core.WorkerListening{Worker: 3})
	if r.lastWorkers() != "[1 2 3]" {
		t.Fatalf("replacement listening: %s, want [1 2 3]", r.lastWorkers())
	}
	step(o, core.TimerFired{}, core.Drain{Worker: 1})
	if r.lastWorkers() != "[2 3]" || fmt.Sprint(o.EligibleWorkers()) != "[2 3]" {
		t.Fatalf("after worker 1's drain: %s, want [2 3]", r.lastWorkers())
	}
	step(o, core.WorkerDraining{Worker: 2})
	step(o, core.WorkerExited{Worker: 3, Reason: fsm.ExitReason{}})
	if r.lastWorkers() != "[]" {
		t.Fatalf("after 2 drains and 3 exits: %s, want []", r.lastWorkers())
	}
}
