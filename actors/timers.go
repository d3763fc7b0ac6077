package actors

import "github.com/dutchmaster/dutchmaster/actors/core"

// WorkerTimers holds the pending timers that belong to one worker (its
// ready and kill timeouts) and stops each once it can no longer apply:
// the ready timeout once the worker listens or exits, the kill timeout
// once it exits. The core ignores a timer that fires late, so stopping
// changes no decision; it frees what a pending timer holds. The ready
// timeout is a minute by default, so a master restarting every few
// seconds would otherwise carry thousands of them. Timers of the cluster
// as a whole (backoff, stable check, policy wake-up) are few and left to
// fire. Used from one goroutine: the host's.
type WorkerTimers struct {
	clock   Clock
	pending map[core.Timer]func() bool
}

// NewWorkerTimers returns an empty set on clock.
func NewWorkerTimers(clock Clock) *WorkerTimers {
	return &WorkerTimers{clock: clock, pending: map[core.Timer]func() bool{}}
}

// Set starts d's timer; fire delivers it to the host, on the clock's
// goroutine.
func (ts *WorkerTimers) Set(d core.SetTimer, fire func(core.Timer)) {
	t := d.Timer
	stop := ts.clock.AfterFunc(d.After, func() { fire(t) })
	if t.Worker != 0 {
		if earlier, ok := ts.pending[t]; ok {
			earlier() // pushed back (an extended ready timeout)
		}
		ts.pending[t] = stop
	}
}

// Stepped forgets a timer that fired, and stops those that in no longer
// leaves any use for. Call it with each input the core is given.
func (ts *WorkerTimers) Stepped(in core.Input) {
	switch in := in.(type) {
	case core.TimerFired:
		delete(ts.pending, in.Timer)
	case core.WorkerListening:
		ts.stop(core.Timer{Kind: core.ReadyTimeout, Worker: in.Worker})
	case core.WorkerExited:
		for _, k := range []core.TimerKind{core.ReadyTimeout, core.KillTimeout, core.WatchdogTime, core.AbortTimeout, core.LifetimeEnd, core.RecycleDue} {
			ts.stop(core.Timer{Kind: k, Worker: in.Worker})
		}
	}
}

// Pending is how many worker timers are pending.
func (ts *WorkerTimers) Pending() int { return len(ts.pending) }

func (ts *WorkerTimers) stop(t core.Timer) {
	if stop, ok := ts.pending[t]; ok {
		stop()
		delete(ts.pending, t)
	}
}
