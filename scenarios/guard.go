package scenarios

import (
	"fmt"

	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/fsm"
)

// Guard checks the replace-before-stop invariant (DESIGN.md section 2)
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
	baseline   int
	violations []string
}

// NewGuard attaches a guard to the runtime's drain and kill calls.
func NewGuard(rt *ScriptedRuntime) *Guard {
	g := &Guard{rt: rt}
	rt.mu.Lock()
	rt.check = g.onStopping
	rt.mu.Unlock()
	return g
}

// SetTarget sets the worker count the cluster aims at.
func (g *Guard) SetTarget(n int) {
	g.rt.mu.Lock()
	defer g.rt.mu.Unlock()
	g.target = n
}

// Before must see every restart and stop input before it is delivered.
func (g *Guard) Before(in core.Input) {
	g.rt.mu.Lock()
	defer g.rt.mu.Unlock()
	switch in.(type) {
	case core.StopRequested:
		g.stopping = true
	case core.RestartRequested, core.WorkerRestartRequested:
		if !g.rollout {
			g.rollout = true
			g.baseline = g.rt.servingLocked()
		}
	}
}

// onStopping runs under the runtime's lock, before p is marked stopping.
func (g *Guard) onStopping(p *Process, what string) {
	if g.stopping || !p.Serving() {
		return
	}
	required := g.target
	if g.rollout {
		required = min(g.target, g.baseline)
	}
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
	if v.Rollout == nil {
		g.rollout = false
	}
	if v.Target > 0 {
		g.target = v.Target
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
		case w.State == fsm.Listening && !p.Serving():
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
