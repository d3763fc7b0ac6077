package core

import (
	"slices"
	"time"

	"github.com/dutchmaster/dutchmaster/fsm"
)

// Policy decides the steps of rollouts. The cluster asks it after every
// input, rollout or not, with a read-only view, and checks each proposal
// against the invariant before acting: a proposal that would break it is
// refused and logged, so no policy can stop a worker before its
// replacement listens. A policy must be a pure function of the view (it
// may be asked many times for the same state) and must not block.
type Policy interface {
	// Name is used in logs and status.
	Name() string
	// Next proposes what to do now.
	Next(v View) Step
}

// Step is a policy's proposal.
type Step struct {
	// Replace marks workers as due for replacement; a rollout begins if
	// none runs. Only listening workers can be marked.
	Replace []WorkerID
	// Fork starts a replacement in each of these slots. Allowed only during
	// a rollout, for a slot whose newest worker is due and listening, with
	// nothing starting in it and no backoff pending.
	Fork []int
	// Drain asks these workers to stop. A listening worker is drained only
	// if the invariant allows it.
	Drain []WorkerID
	// Wait asks to be consulted again after this long, even if nothing
	// happens (a soak period, a periodic check). Zero: only on the next input.
	Wait time.Duration
	// Abort ends the running rollout with this reason, as a failed
	// replacement does: old workers keep serving, the next request retries.
	Abort string
}

// LiveBySlot lists each active slot's live workers (forking or listening,
// not hung), oldest first.
func (v View) LiveBySlot() map[int][]Worker {
	x := v.index()
	out := make(map[int][]Worker, len(v.Slots))
	for slot := range x.bySlot {
		if members := x.live(v, slot); len(members) > 0 {
			out[slot] = members
		}
	}
	return out
}

// Starting counts the replacements that are forking.
func (v View) Starting() int { return v.index().starting }

// CanDrain reports whether the invariant allows draining w now (a hung
// worker serves nothing: it may always go).
func (v View) CanDrain(w Worker) bool {
	return drainAllowed(w, v.Listening(), requiredListening(v.Target, v.Rollout))
}

// Surplus lists, slot by slot, the live workers older than their slot's
// newest listening worker, and every live worker of a retired slot.
func (v View) Surplus() []Worker {
	x := v.index()
	var out []Worker
	for slot, members := range x.bySlot {
		if len(members) == 0 || len(members) == 1 && x.active(slot) {
			continue // a lone worker is never surplus in an active slot
		}
		newest := WorkerID(0)
		if x.active(slot) {
			for _, i := range members {
				if v.Workers[i].State == fsm.Listening {
					newest = v.Workers[i].ID
				}
			}
		} else {
			newest = v.Workers[members[len(members)-1]].ID + 1
		}
		for _, i := range members {
			if v.Workers[i].ID < newest {
				out = append(out, v.Workers[i])
			}
		}
	}
	sortByID(out)
	return out
}

// Replaceable lists the active slots that a replacement could be forked
// into now (the newest worker is due and listening, nothing is starting in
// the slot, it is not backing off), most outdated first: when requests
// keep coming during a rollout, a slot that was never replaced goes before
// one replaced by an earlier request.
func (v View) Replaceable() []int {
	if v.Rollout == nil {
		return nil
	}
	x := v.index()
	type candidate struct{ slot, generation int }
	var cs []candidate
	for _, s := range v.Slots {
		newest, ok := x.newest(v, s.Index)
		if !ok || v.Now.Before(s.NotBefore) {
			continue
		}
		if newest.State == fsm.Listening && newest.Due {
			cs = append(cs, candidate{s.Index, newest.Generation})
		}
	}
	slices.SortStableFunc(cs, func(a, b candidate) int { return a.generation - b.generation })
	out := make([]int, len(cs))
	for i, c := range cs {
		out[i] = c.slot
	}
	return out
}

// drainable keeps the workers the invariant lets go one after the other.
func (v View) drainable(ws []Worker) []WorkerID {
	listening := v.Listening()
	required := requiredListening(v.Target, v.Rollout)
	var out []WorkerID
	for _, w := range ws {
		if drainAllowed(w, listening, required) {
			out = append(out, w.ID)
			if w.Serves() {
				listening--
			}
		}
	}
	return out
}

// Rolling replaces workers a few at a time: at most MaxSurge replacements
// start at once, and each old worker drains as soon as its replacement
// listens. It is the default policy.
type Rolling struct{ MaxSurge int }

func (p Rolling) Name() string { return "rolling" }

func (p Rolling) Next(v View) Step {
	s := Step{Drain: v.drainable(v.Surplus())}
	room := max(p.MaxSurge, 1) - v.Starting()
	for _, slot := range v.Replaceable() {
		if room <= 0 {
			break
		}
		s.Fork = append(s.Fork, slot)
		room--
	}
	return s
}

// BlueGreen starts every replacement at once and drains the old
// generation only when every one of them listens. It needs twice the
// workers' resources for the length of a boot.
type BlueGreen struct{}

func (BlueGreen) Name() string { return "blue-green" }

func (BlueGreen) Next(v View) Step {
	s := Step{Fork: v.Replaceable()}
	if v.Rollout == nil || newestAllReady(v) {
		s.Drain = v.drainable(v.Surplus())
		return s
	}
	// Until the new generation is complete, each slot keeps its oldest
	// listening worker (the old generation, still serving); replacements
	// that a coalesced request made outdated go at once.
	var intermediate []Worker
	x := v.index()
	for slot, members := range x.bySlot {
		if len(members) <= 2 {
			continue // nothing between the oldest and the newest
		}
		var listening []Worker
		for _, w := range x.live(v, slot) {
			if w.State == fsm.Listening {
				listening = append(listening, w)
			}
		}
		if len(listening) > 2 {
			intermediate = append(intermediate, listening[1:len(listening)-1]...)
		}
	}
	sortByID(intermediate)
	s.Drain = v.drainable(intermediate)
	return s
}

// newestAllReady: every active slot's newest worker listens and is not due.
func newestAllReady(v View) bool {
	x := v.index()
	for _, s := range v.Slots {
		n, ok := x.newest(v, s.Index)
		if !ok || n.State != fsm.Listening || n.Due {
			return false
		}
	}
	return true
}

// Canary replaces one worker first and keeps the worker it replaces
// serving while the canary soaks: if the canary dies within Soak of
// becoming ready, the rollout is aborted. After the soak it continues as
// Rolling with MaxSurge.
type Canary struct {
	Soak     time.Duration
	MaxSurge int
}

func (p Canary) Name() string { return "canary" }

func (p Canary) Next(v View) Step {
	r := v.Rollout
	if r == nil {
		return Rolling{p.MaxSurge}.Next(v)
	}
	switch {
	case r.First == 0:
		// No canary yet: start one (surplus from earlier still drains).
		s := Step{Drain: v.drainable(v.Surplus())}
		if slots := v.Replaceable(); len(slots) > 0 && v.Starting() == 0 {
			s.Fork = slots[:1]
		}
		return s
	case r.FirstReadyAt.IsZero():
		return Step{} // booting; a failure before ready aborts by itself
	}
	soaked := r.FirstReadyAt.Add(p.Soak)
	if !r.FirstDiedAt.IsZero() && r.FirstDiedAt.Before(soaked) {
		return Step{Abort: "canary " + r.First.String() + " died during its soak"}
	}
	if v.Now.Before(soaked) {
		return Step{Wait: soaked.Sub(v.Now)}
	}
	return Rolling{p.MaxSurge}.Next(v)
}

func sortByID(ws []Worker) {
	slices.SortFunc(ws, func(a, b Worker) int { return int(a.ID - b.ID) })
}
