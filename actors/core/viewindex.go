package core

import "github.com/dutchmaster/dutchmaster/fsm"

// viewIndex groups a view's live workers by slot, built in one pass, so
// that a policy's questions (surplus, replaceable slots, counts) cost one
// walk over the workers instead of one map per question: the policy is
// consulted after every input, and a rollout has a few inputs per worker.
type viewIndex struct {
	// bySlot[s] holds the positions in View.Workers of slot s's live
	// workers that are not hung, oldest first (Workers is ordered by ID).
	bySlot    [][]int
	isActive  []bool
	listening int
	starting  int // replacements forking
}

func buildIndex(v View) *viewIndex {
	size := 0
	for _, s := range v.Slots {
		size = max(size, s.Index+1)
	}
	x := &viewIndex{}
	counts := make([]int, size)
	live := 0
	for _, w := range v.Workers {
		switch {
		case w.Serves():
			x.listening++
		case w.State == fsm.Forking:
			if w.Replacement {
				x.starting++
			}
		}
		if !w.State.Live() || w.Hung {
			continue // a hung worker is its slot's past: its successor is what counts
		}
		if w.Slot >= len(counts) {
			counts = append(counts, make([]int, w.Slot+1-len(counts))...)
		}
		counts[w.Slot]++
		live++
	}
	// One backing array for every slot's positions.
	positions := make([]int, live)
	x.bySlot = make([][]int, len(counts))
	next := 0
	for s, n := range counts {
		x.bySlot[s] = positions[next : next : next+n]
		next += n
	}
	for i, w := range v.Workers {
		if w.State.Live() && !w.Hung {
			x.bySlot[w.Slot] = append(x.bySlot[w.Slot], i)
		}
	}
	x.isActive = make([]bool, len(counts))
	for _, s := range v.Slots {
		x.isActive[s.Index] = true
	}
	return x
}

// index is the view's index, built with the view by the cluster, or now
// for a view made by hand.
func (v View) index() *viewIndex {
	if v.idx != nil {
		return v.idx
	}
	return buildIndex(v)
}

func (x *viewIndex) active(slot int) bool {
	return slot >= 0 && slot < len(x.isActive) && x.isActive[slot]
}

// live copies slot's live workers, oldest first.
func (x *viewIndex) live(v View, slot int) []Worker {
	if slot < 0 || slot >= len(x.bySlot) {
		return nil
	}
	out := make([]Worker, len(x.bySlot[slot]))
	for j, i := range x.bySlot[slot] {
		out[j] = v.Workers[i]
	}
	return out
}

// newest is slot's newest live worker, if it has one.
func (x *viewIndex) newest(v View, slot int) (Worker, bool) {
	if slot < 0 || slot >= len(x.bySlot) || len(x.bySlot[slot]) == 0 {
		return Worker{}, false
	}
	members := x.bySlot[slot]
	return v.Workers[members[len(members)-1]], true
}
