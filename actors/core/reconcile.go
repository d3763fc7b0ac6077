package core

import (
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/fsm"
)

// MinPolicyWait is the shortest Step.Wait honoured: a policy cannot make
// the master spin.
const MinPolicyWait = 100 * time.Millisecond

// reconcile moves the cluster one step toward its goal: every active slot
// served by one listening worker that is not due. The cluster's own jobs
// come first (fill empty slots, drain retired ones); then the policy is
// consulted about the rollout, and each of its proposals is checked.
func (c *Cluster) reconcile() {
	if !c.started || c.stopping {
		return
	}
	c.abortServedHung()
	c.fillEmptySlots()
	c.drainRetiredSlots()
	// A proposal that marks workers or ends a rollout changes what the
	// policy sees, so it is consulted again, a bounded number of times.
	refused := map[string]bool{}
	var wait time.Duration
	for range 4 {
		recycling := c.startRecycles()
		changed, w := c.consultPolicy(refused)
		changed = changed || recycling
		if w > 0 && (wait == 0 || w < wait) {
			wait = w
		}
		if c.finishRollout() {
			changed = true // a policy may start the next rollout at once
		}
		if !changed {
			break
		}
	}
	c.refused = refused
	c.wakePolicy(wait)
	if !c.ready && c.listeningCount() >= c.target() {
		c.ready = true
		c.note(zerolog.InfoLevel, "cluster ready", nil, Field{"workers", c.target()}, Field{"generation", c.generation})
		c.emit(Ready{Generation: c.generation, Workers: c.target()})
	}
}

// fillEmptySlots forks a worker into every active slot that has none,
// unless the slot is backing off: crashes, start-up and scaling up.
func (c *Cluster) fillEmptySlots() {
	occupied := make([]bool, len(c.slots))
	for _, w := range c.workers {
		// A hung worker leaves its slot to be filled, as a crashed one.
		if w.State.Live() && !w.Hung && w.Slot < len(occupied) {
			occupied[w.Slot] = true
		}
	}
	for i, s := range c.slots {
		if s.active && !occupied[i] && !c.now.Before(s.notBefore) && len(c.workers) < c.workerCap() {
			c.fork(i, false)
		}
	}
}

// workerCap bounds the processes alive at once, draining ones included:
// however a policy behaves, the master never piles up workers faster
// than old ones leave.
func (c *Cluster) workerCap() int { return 2*c.target() + c.cfg.MaxSurge }

// drainRetiredSlots drains the workers of slots retired by a scale down,
// as the invariant allows, oldest first.
func (c *Cluster) drainRetiredSlots() {
	for _, w := range c.workers {
		if s := c.slotOf(w); s != nil && !s.active && w.State.Live() && c.drainAllowed(w) {
			c.drain(w, "scale down")
		}
	}
}

func (c *Cluster) drainAllowed(w *Worker) bool {
	return drainAllowed(*w, c.listeningCount(), requiredListening(c.target(), c.rollout))
}

// consultPolicy asks the policy for a step and carries out what passes the
// checks. It reports whether the step changed what the policy would see
// beyond its own forks and drains (marks, an abort), and the wait asked for.
func (c *Cluster) consultPolicy(refused map[string]bool) (bool, time.Duration) {
	p := c.cfg.Policy
	step := p.Next(c.View())
	changed := false
	if step.Abort != "" && c.rollout != nil {
		c.abort(nil, "policy "+p.Name()+": "+step.Abort)
		return true, 0
	}
	for _, id := range step.Replace {
		w := c.worker(id)
		if w == nil || w.State != fsm.Listening || c.due(w) {
			c.refuse(refused, "replace", id, "not a listening worker that is not already due")
			continue
		}
		c.markForReplacement(w, "policy "+p.Name())
		c.note(zerolog.InfoLevel, "policy marked worker for replacement", w, Field{"policy", p.Name()})
		changed = true
	}
	for _, id := range step.Drain {
		w := c.worker(id)
		switch {
		case w == nil || !w.State.Live():
			// Gone or on its way out already: nothing to do.
		case !c.drainAllowed(w):
			c.refuse(refused, "drain", id, fmt.Sprintf("would leave %d listening, %d required",
				c.listeningCount()-1, requiredListening(c.target(), c.rollout)))
		default:
			by := c.successor(w)
			c.drain(w, drainReason(by, p))
			if by != nil && w.State == fsm.Draining {
				c.replacedInSlot(w, by)
			}
		}
	}
	for _, slot := range step.Fork {
		if why := c.forkRefusal(slot); why != "" {
			c.refuse(refused, "fork", WorkerID(0), fmt.Sprintf("slot %d: %s", slot, why))
			continue
		}
		c.fork(slot, true)
	}
	return changed, step.Wait
}

// wakePolicy sets one timer to consult the policy again, unless one that
// fires sooner is pending. Only the latest timer counts (Timer.Seq).
func (c *Cluster) wakePolicy(wait time.Duration) {
	if wait <= 0 {
		return
	}
	wait = max(wait, MinPolicyWait)
	if at := c.now.Add(wait); c.wakeAt.IsZero() || at.Before(c.wakeAt) {
		c.wakeAt = at
		c.wakeSeq++
		c.emit(SetTimer{Timer: Timer{Kind: PolicyWake, Seq: c.wakeSeq}, After: wait})
	}
}

// forkRefusal says why a replacement may not start in slot, or "".
func (c *Cluster) forkRefusal(i int) string {
	s := c.slotAt(i)
	switch {
	case c.rollout == nil:
		return "no rollout is running"
	case s == nil || !s.active:
		return "not an active slot"
	case c.now.Before(s.notBefore):
		return "backing off"
	case len(c.workers) >= c.workerCap():
		// Draining workers still hold resources; a policy cannot pile up
		// replacements faster than old workers leave.
		return fmt.Sprintf("%d workers alive, waiting for draining ones to exit", len(c.workers))
	}
	var newest *Worker
	for _, w := range c.workers {
		if w.Slot == i && w.State.Live() && !w.Hung {
			if w.State == fsm.Forking {
				return "a worker is already starting in it"
			}
			newest = w
		}
	}
	if newest == nil || !c.due(newest) {
		return "its worker is not due for replacement"
	}
	return ""
}

// successor is the newest listening worker of w's slot that is newer
// than w, the worker that makes w surplus; nil if there is none.
func (c *Cluster) successor(w *Worker) *Worker {
	var by *Worker
	for _, x := range c.workers {
		if x.Slot == w.Slot && x.ID > w.ID && x.State == fsm.Listening {
			by = x
		}
	}
	return by
}

// drainReason says why a worker is drained, for the log.
func drainReason(by *Worker, p Policy) string {
	if by == nil {
		return "policy " + p.Name()
	}
	return "replaced by " + by.ID.String()
}

// replacedInSlot clears the failures of the slot whose worker old was
// just replaced by by, which listens: a successful replacement shows the
// slot healthy. Without it only a worker that stays listening for
// Backoff.Reset clears the count, which never happens while rollouts come
// more often than that, and every crash in between would then wait
// longer, up to Backoff.Max.
//
// A recycle is not such a sign: a worker over its limit from its start
// counts as a failure, and its replacement, over the limit as well,
// must not clear it, or recycling would loop without backoff.
func (c *Cluster) replacedInSlot(old, by *Worker) {
	s := c.slotOf(old)
	if s == nil || s.failures == 0 || !s.active || old.Recycling {
		return
	}
	s.failures = 0
	c.note(zerolog.InfoLevel, "slot failures cleared: worker replaced", by, Field{"replaced", old.ID.String()})
}

// refuse logs a refused proposal once: the same refusal at the next
// consultation is not logged again.
func (c *Cluster) refuse(refused map[string]bool, what string, id WorkerID, why string) {
	key := fmt.Sprintf("%s %d %s", what, id, why)
	refused[key] = true
	if c.refused[key] {
		return
	}
	fields := []Field{{"policy", c.cfg.Policy.Name()}, {"proposal", what}, {"reason", why}}
	// A line about a worker carries the worker's fields; one that is gone
	// has only its number left.
	w := c.worker(id)
	if w == nil && id != 0 {
		fields = append(fields, Field{"worker", int(id)})
	}
	c.note(zerolog.WarnLevel, "policy proposal refused", w, fields...)
}

// finishRollout ends the rollout once no worker is due and nothing is
// starting: the old workers are gone, every replacement listens. It
// reports whether it ended one.
func (c *Cluster) finishRollout() bool {
	r := c.rollout
	if r == nil {
		return false
	}
	for _, w := range c.workers {
		if c.due(w) || w.State == fsm.Forking {
			return false
		}
	}
	c.note(zerolog.InfoLevel, "restart complete", nil, Field{"generation", c.generation},
		Field{"duration", c.now.Sub(r.Started)}, Field{"source", r.Source})
	c.endRollout(OutcomeComplete, "")
	return true
}
