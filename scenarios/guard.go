package scenarios

import (
	"fmt"
	"time"

	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/fsm"
)

// Guard checks the replace-before-stop invariant (docs/architecture.md)
// against the scripted processes, not against the cluster's own view: at
// the moment a serving process is asked to drain or is killed outside a
// stop, the processes still serving must number at least the target (or,
// during a rollout, at least as many as served when it began, if fewer).
// After each step it also checks that the cluster's view agrees with the
// processes and that no more than max-surge replacements are starting.
type Guard struct {
	rt         *ScriptedRuntime
	target     int
	stopping   bool
	rollout    bool
	baseline   int // the most processes serving at once since the rollout began
	violations []string
	// required holds, for each drain or kill the cluster decided, how many
	// had to keep serving when it decided: a step's later decisions (the
	// rollout's end) must not change the rule for its earlier ones.
	required map[core.WorkerID]int
}

// NewGuard attaches a guard to the runtime's drain and kill calls.
func NewGuard(rt *ScriptedRuntime) *Guard {
	g := &Guard{rt: rt, required: map[core.WorkerID]int{}}
	rt.mu.Lock()
	rt.check = g.onStopping
	rt.onServing = g.onServing
	rt.mu.Unlock()
	return g
}

// Follow takes over what old learned of the cluster (its target, a stop,
// the rollout in progress and its baseline, the drains decided), for a
// cluster handed over from the one old watched.
func (g *Guard) Follow(old *Guard) {
	old.rt.mu.Lock()
	target, stopping, rollout, baseline := old.target, old.stopping, old.rollout, old.baseline
	required := map[core.WorkerID]int{}
	for id, n := range old.required {
		required[id] = n
	}
	old.rt.mu.Unlock()
	g.rt.mu.Lock()
	defer g.rt.mu.Unlock()
	g.target, g.stopping, g.rollout, g.baseline, g.required = target, stopping, rollout, baseline, required
}

// SetTarget sets the worker count the cluster aims at.
func (g *Guard) SetTarget(n int) {
	g.rt.mu.Lock()
	defer g.rt.mu.Unlock()
	g.target = n
}

// Observe follows the cluster's inputs and decisions (actors.Options.Observe):
// it learns of a stop from the input, and of the rollouts the cluster
// begins and ends from its decisions, taking the baseline from the
// processes themselves.
func (g *Guard) Observe(_ time.Time, in core.Input, out []core.Decision) {
	g.rt.mu.Lock()
	defer g.rt.mu.Unlock()
	if _, ok := in.(core.StopRequested); ok {
		g.stopping = true
	}
	for _, d := range out {
		switch d := d.(type) {
		case core.TargetChanged:
			g.target = d.Target
		case core.RolloutStarted:
			g.rollout = true
			g.baseline = g.rt.servingLocked()
		case core.RolloutEnded:
			g.rollout = false
		case core.Drain:
			g.required[d.Worker] = g.requiredNow()
		case core.Kill:
			g.required[d.Worker] = g.requiredNow()
		case core.Abort:
			g.required[d.Worker] = g.requiredNow()
		case core.WatchdogMissed:
			// A hung process answers nothing: it stops counting at once.
			if p := g.rt.procs[d.Worker]; p != nil {
				p.Hung = true
			}
		}
	}
}

// onServing runs under the runtime's lock whenever a process starts serving.
func (g *Guard) onServing() {
	if g.rollout {
		g.baseline = max(g.baseline, g.rt.servingLocked())
	}
}

func (g *Guard) requiredNow() int {
	if g.rollout {
		return min(g.target, g.baseline)
	}
	return g.target
}

// onStopping runs under the runtime's lock, before p is marked stopping.
func (g *Guard) onStopping(p *Process, what string) {
	if g.stopping || !p.Serving() {
		return
	}
	required, decided := g.required[p.Spec.ID]
	if !decided {
		required = g.requiredNow()
	}
	delete(g.required, p.Spec.ID)
	if left := g.rt.servingLocked() - 1; left < required {
		g.violations = append(g.violations, fmt.Sprintf("%s of serving %s left %d serving, %d required", what, p.Spec.ID, left, required))
	}
}

// Check returns the violations since the last call, given the cluster's
// view once every actor is idle.
func (g *Guard) Check(v core.View, maxSurge int) []string {
	g.rt.mu.Lock()
	defer g.rt.mu.Unlock()
	out := g.violations
	g.violations = nil
	if g.rollout != (v.Rollout != nil) && !g.stopping {
		out = append(out, fmt.Sprintf("the cluster's rollout (%v) disagrees with its decisions (%v)", v.Rollout != nil, g.rollout))
	}
	if v.Target != g.target && g.target != 0 {
		out = append(out, fmt.Sprintf("the cluster's target (%d) disagrees with its decisions (%d)", v.Target, g.target))
	}
	starting := 0
	inView := map[core.WorkerID]bool{}
	for _, w := range v.Workers {
		inView[w.ID] = true
		p := g.rt.procs[w.ID]
		switch {
		case p == nil:
			out = append(out, fmt.Sprintf("%s is in the cluster's view but was never forked", w.ID))
		case p.Exited:
			out = append(out, fmt.Sprintf("%s exited but the cluster still counts it as %s", w.ID, w.State))
		case w.State == fsm.Listening && !p.Serving() && !(w.Hung && p.Hung):
			out = append(out, fmt.Sprintf("%s is listening in the cluster's view but not serving", w.ID))
		case w.State == fsm.Draining && !p.Stopping:
			out = append(out, fmt.Sprintf("%s is draining in the cluster's view but was never asked to stop", w.ID))
		}
		if w.State == fsm.Forking && w.Replacement {
			starting++
		}
	}
	if starting > maxSurge {
		out = append(out, fmt.Sprintf("%d replacements starting at once, max-surge is %d", starting, maxSurge))
	}
	for id, p := range g.rt.procs {
		if !p.Exited && !inView[id] {
			out = append(out, fmt.Sprintf("%s runs but the cluster has lost track of it", id))
		}
	}
	return out
}
