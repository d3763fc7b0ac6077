package scenarios

import (
	"fmt"
	"sort"
	"sync"
	"time"
)

// Epoch is the scripted clock's start: scenario times are offsets from it.
var Epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// ManualClock is the scripted clock: time moves only when Advance says so,
// and due timers fire one at a time, earliest first (ties in the order
// they were set), so a scenario's output does not depend on scheduling.
type ManualClock struct {
	mu     sync.Mutex
	now    time.Time
	seq    int
	timers []manualTimer
}

type manualTimer struct {
	due time.Time
	seq int
	f   func()
}

// NewManualClock starts at Epoch.
func NewManualClock() *ManualClock { return &ManualClock{now: Epoch} }

// Now is the scripted time.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc schedules f at Now()+d.
func (c *ManualClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	seq := c.seq
	c.timers = append(c.timers, manualTimer{due: c.now.Add(d), seq: seq, f: f})
	return func() bool { return c.cancel(seq) }
}

// cancel removes the pending timer seq, if it has not fired.
func (c *ManualClock) cancel(seq int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, t := range c.timers {
		if t.seq == seq {
			c.timers = append(c.timers[:i], c.timers[i+1:]...)
			return true
		}
	}
	return false
}

// maxTimersPerAdvance bounds one Advance: timers that keep setting
// timers at the same instant are a bug, reported instead of spinning.
const maxTimersPerAdvance = 100000

// Advance moves time forward by d. Each timer due by then fires at its own
// instant, and settle runs after each one so that whatever it set off is
// finished before the next fires (and timers it sets may fire too).
func (c *ManualClock) Advance(d time.Duration, settle func()) {
	c.mu.Lock()
	target := c.now.Add(d)
	c.mu.Unlock()
	for n := 0; ; n++ {
		if n == maxTimersPerAdvance {
			panic(fmt.Sprintf("ManualClock: more than %d timers fired within one advance of %s", n, d))
		}
		f, ok := c.popDue(target)
		if !ok {
			break
		}
		f()
		settle()
	}
	c.mu.Lock()
	c.now = target
	c.mu.Unlock()
}

// Pending is how many timers have neither fired nor been stopped.
func (c *ManualClock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// NextDue returns how long until the next pending timer.
func (c *ManualClock) NextDue() (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.timers) == 0 {
		return 0, false
	}
	c.sortLocked()
	return c.timers[0].due.Sub(c.now), true
}

func (c *ManualClock) popDue(target time.Time) (func(), bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.timers) == 0 {
		return nil, false
	}
	c.sortLocked()
	t := c.timers[0]
	if t.due.After(target) {
		return nil, false
	}
	c.timers = c.timers[1:]
	c.now = t.due
	return t.f, true
}

func (c *ManualClock) sortLocked() {
	sort.Slice(c.timers, func(i, j int) bool {
		a, b := c.timers[i], c.timers[j]
		if !a.due.Equal(b.due) {
			return a.due.Before(b.due)
		}
		return a.seq < b.seq
	})
}
