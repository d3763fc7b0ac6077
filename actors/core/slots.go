package core

import (
	"github.com/rs/zerolog"
)

// target is the number of active slots.
func (c *Cluster) target() int {
	n := 0
	for _, s := range c.slots {
		if s.active {
			n++
		}
	}
	return n
}

func (c *Cluster) slotAt(i int) *slot {
	if i < 0 || i >= len(c.slots) {
		return nil
	}
	return &c.slots[i]
}

func (c *Cluster) slotOf(w *Worker) *slot { return c.slotAt(w.Slot) }

// setTarget activates or retires slots until n are active (1..MaxWorkers).
func (c *Cluster) setTarget(n int) {
	n = min(max(n, 1), MaxWorkers)
	if n != c.target() {
		defer c.emit(TargetChanged{Target: n})
	}
	for c.target() < n {
		c.activateSlot()
	}
	for c.target() > n {
		c.retireSlot()
	}
}

// activateSlot takes the lowest retired slot, or a new one.
func (c *Cluster) activateSlot() {
	for i := range c.slots {
		if !c.slots[i].active {
			c.slots[i] = slot{active: true}
			return
		}
	}
	c.slots = append(c.slots, slot{active: true})
}

// retireSlot retires the slot that serves with the oldest worker (an
// empty slot first: it costs nothing); reconcile then drains its workers
// as the invariant allows.
func (c *Cluster) retireSlot() {
	best, bestID := -1, WorkerID(0)
	for i, s := range c.slots {
		if !s.active {
			continue
		}
		newest := WorkerID(0)
		for _, w := range c.workers {
			if w.Slot == i && w.State.Live() {
				newest = w.ID
			}
		}
		if newest == 0 {
			best = i
			break
		}
		if best < 0 || newest < bestID {
			best, bestID = i, newest
		}
	}
	c.slots[best].active = false
}

// scale sets the target count to n; in is the ScaleBy or ScaleTo asking.
func (c *Cluster) scale(in Input, n int, source string) {
	if c.stopping || !c.started {
		c.note(zerolog.WarnLevel, "scale ignored", nil, Field{"source", source}, Field{"reason", c.notRunningReason()})
		c.emit(Refused{Input: in, Reason: c.notRunningReason()})
		return
	}
	n = min(max(n, 1), MaxWorkers)
	if n == c.target() {
		c.note(zerolog.InfoLevel, "scale unchanged", nil, Field{"workers", n}, Field{"source", source})
		return
	}
	c.note(zerolog.InfoLevel, "scale", nil, Field{"from", c.target()}, Field{"to", n}, Field{"source", source})
	c.setTarget(n)
}
