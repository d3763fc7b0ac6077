// Package balance keeps the kernel's choice of worker for new connections
// (sockets/reuseport) in step with the cluster: a slot is eligible while a
// worker of it listens and does not drain. Fed by actors.Options.Observe,
// it acts on the core's inputs and decisions, never on a Note's wording.
//
//	Fork             the worker's slot (a replacement takes its predecessor's)
//	WorkerListening  the worker's slot becomes eligible
//	Drain, Kill      the worker no longer counts, from the decision on, so
//	                 that no new connection reaches it once it is told to go
//	WatchdogMissed   likewise for a hung worker (its slot's queue waits for
//	                 its successor, as after a crash), and Abort
//	WorkerDraining   likewise, when the worker drains of its own accord
//	WorkerExited     likewise (a crash: its queue waits for a replacement)
//
// Retired tells the runtime which drains are a scale down's, whose slot's
// queue must empty before the worker stops accepting.
//
// A target that also balances by worker (the Node.js round-robin,
// WorkerTarget) is told the eligible workers themselves: during a
// replacement both the old worker and its replacement take connections.
//
// During a replacement the slot stays eligible through its old worker until
// that one is drained, by which time the replacement listens.
package balance

import (
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/fsm"
)

// Target is what the observer updates: a reuseport.Group, one per balanced
// listener, or the Node.js cluster servers (nodecluster.Registry).
type Target interface {
	SetEligible(slots []int) error
}

// WorkerTarget is a Target that is also told the eligible workers, by id
// (nodecluster.Registry, for its round-robin).
type WorkerTarget interface {
	SetEligibleWorkers(workers []int)
}

// Observer tracks which slots hold a listening worker that does not drain
// and tells the targets whenever that set changes.
type Observer struct {
	targets []Target
	log     zerolog.Logger

	mu       sync.Mutex
	slotOf   map[core.WorkerID]int
	serving  map[core.WorkerID]bool // listening and not draining
	stopping map[core.WorkerID]bool // told to drain or killed, until it exits
	eligible []int                  // the last set given to the targets
	workers  []int                  // the serving workers last given to the worker targets
}

// New returns an Observer for targets; log receives a failure to update
// one (the kernel then keeps the previous set).
func New(log zerolog.Logger, targets ...Target) *Observer {
	return &Observer{targets: targets, log: log, slotOf: map[core.WorkerID]int{}, serving: map[core.WorkerID]bool{},
		stopping: map[core.WorkerID]bool{}}
}

// Observe is actors.Options.Observe. It runs on the cluster's goroutine
// before the step's decisions are carried out, so a drained worker is out
// of the set before its order reaches it.
func (o *Observer) Observe(_ time.Time, in core.Input, out []core.Decision) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch in := in.(type) {
	case core.WorkerListening:
		if _, known := o.slotOf[in.Worker]; known {
			o.serving[in.Worker] = true
		}
	case core.WorkerDraining:
		delete(o.serving, in.Worker)
		o.stopping[in.Worker] = true
	case core.WorkerExited:
		delete(o.serving, in.Worker)
		delete(o.slotOf, in.Worker)
		delete(o.stopping, in.Worker)
	}
	for _, d := range out {
		switch d := d.(type) {
		case core.Fork:
			o.slotOf[d.Worker] = d.Slot
		case core.Drain:
			delete(o.serving, d.Worker)
			o.stopping[d.Worker] = true
		case core.Kill:
			delete(o.serving, d.Worker)
			o.stopping[d.Worker] = true
		case core.WatchdogMissed:
			delete(o.serving, d.Worker)
		case core.Abort:
			delete(o.serving, d.Worker)
		}
	}
	o.update()
}

// Resume takes the workers of a master that took over from another (an
// upgrade in place): each worker's slot, and as serving those that listen,
// neither draining nor hung, as Observe would have learnt them. The
// targets are told the set (the kernel's is already that one).
func (o *Observer) Resume(workers []core.Worker) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, w := range workers {
		o.slotOf[w.ID] = w.Slot
		if w.Serves() {
			o.serving[w.ID] = true
		}
		if w.State == fsm.Draining {
			o.stopping[w.ID] = true
		}
	}
	o.update()
}

// Retired says whether slot has left the kernel's choice for good, as
// seen after the step being carried out: out of the eligible slots while
// others remain, with every worker of it told to go (a scale down; in a
// replacement the new worker of the slot is not). With no slot eligible
// (a stop) the kernel spreads over every slot anyway, and nothing is
// retired. For osproc.Config.Retired.
func (o *Observer) Retired(slot int) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.eligible) == 0 || slices.Contains(o.eligible, slot) {
		return false
	}
	for w, s := range o.slotOf {
		if s == slot && !o.stopping[w] {
			return false
		}
	}
	return true
}

// Eligible is the set of slots last given to the targets, in order.
func (o *Observer) Eligible() []int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.eligible)
}

// EligibleWorkers is the set of workers last given to the worker
// targets, by id.
func (o *Observer) EligibleWorkers() []int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.workers)
}

func (o *Observer) update() {
	var slots, workers []int
	for w := range o.serving {
		workers = append(workers, int(w))
		if s := o.slotOf[w]; !slices.Contains(slots, s) {
			slots = append(slots, s)
		}
	}
	slices.Sort(workers)
	if !slices.Equal(workers, o.workers) {
		o.workers = workers
		for _, t := range o.targets {
			if wt, ok := t.(WorkerTarget); ok {
				wt.SetEligibleWorkers(slices.Clone(workers))
			}
		}
		o.log.Debug().Ints("workers", workers).Msg("balance: eligible workers")
	}
	slices.Sort(slots)
	if slices.Equal(slots, o.eligible) {
		return
	}
	o.eligible = slots
	for _, t := range o.targets {
		if err := t.SetEligible(slots); err != nil {
			o.log.Error().Err(err).Ints("slots", slots).Msg("balance: the eligible slots could not be updated; the kernel keeps the previous ones")
		}
	}
	o.log.Debug().Ints("slots", slots).Msg("balance: eligible slots")
}
