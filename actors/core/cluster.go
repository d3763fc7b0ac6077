package core

import (
	"fmt"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/fsm"
)

// Cluster is the state the decisions are made from. It is not safe for
// concurrent use; the cluster actor is its only user.
type Cluster struct {
	cfg        Config
	target     int
	generation int
	workers    []*Worker // not yet killed, ordered by ID
	slots      []slot
	nextID     WorkerID
	rollout    *Rollout
	started    bool
	ready      bool
	stopping   bool
	killing    bool
	stopped    bool

	now time.Time
	out []Decision
}

// slot is a position in the cluster that one serving worker fills;
// replacements take over their predecessor's slot.
type slot struct {
	failures  int       // consecutive failures of this slot's workers
	notBefore time.Time // no fork into the slot before this (backoff)
}

// New returns a cluster that has not started.
func New(cfg Config) *Cluster {
	return &Cluster{cfg: cfg.WithDefaults(), nextID: 1}
}

// Config is the configuration in force, defaults filled.
func (c *Cluster) Config() Config { return c.cfg }

// Step applies one input at time now and returns what to do, in order.
func (c *Cluster) Step(now time.Time, in Input) []Decision {
	c.now, c.out = now, nil
	switch in := in.(type) {
	case Start:
		c.start(in)
	case RestartRequested:
		c.restart(in)
	case WorkerRestartRequested:
		c.workerRestart(in)
	case StopRequested:
		c.stop(in)
	case WorkerSpawned:
		if w := c.worker(in.Worker); w != nil {
			w.PID = in.PID
			c.note(zerolog.DebugLevel, "worker started", w)
		}
	case WorkerListening:
		c.listening(in)
	case WorkerDraining:
		// The order came from here, so the view already says draining.
	case WorkerExited:
		c.exited(in)
	case TimerFired:
		c.timer(in.Timer)
	default:
		c.note(zerolog.WarnLevel, "unknown input ignored", nil, Field{"input", fmt.Sprintf("%T", in)})
	}
	c.reconcile()
	return c.out
}

// Worker returns a copy of one worker's view.
func (c *Cluster) Worker(id WorkerID) (Worker, bool) {
	if w := c.worker(id); w != nil {
		return *w, true
	}
	return Worker{}, false
}

// View returns a copy of the cluster's state.
func (c *Cluster) View() View {
	v := View{Target: c.target, Generation: c.generation, Ready: c.ready, Stopping: c.stopping, Stopped: c.stopped}
	for _, w := range c.workers {
		v.Workers = append(v.Workers, *w)
	}
	if c.rollout != nil {
		r := *c.rollout
		v.Rollout = &r
	}
	return v
}

func (c *Cluster) start(in Start) {
	if c.started {
		c.note(zerolog.WarnLevel, "start ignored: already started", nil)
		return
	}
	c.started = true
	c.generation = 1
	c.setTarget(max(in.Target, 1))
	c.note(zerolog.InfoLevel, "cluster starting", nil, Field{"workers", c.target}, Field{"generation", c.generation})
}

func (c *Cluster) setTarget(n int) {
	c.target = n
	for len(c.slots) < n {
		c.slots = append(c.slots, slot{})
	}
}

func (c *Cluster) restart(in RestartRequested) {
	if c.stopping || !c.started {
		c.note(zerolog.WarnLevel, "restart ignored", nil, Field{"source", in.Source}, Field{"reason", c.notRunningReason()})
		return
	}
	if in.Target > 0 && in.Target != c.target {
		c.note(zerolog.InfoLevel, "worker count changed", nil, Field{"from", c.target}, Field{"to", in.Target})
		c.setTarget(in.Target)
	}
	c.generation++
	if c.rollout != nil {
		c.rollout.Generation = c.generation
		c.note(zerolog.InfoLevel, "restart requested during rollout: coalesced", nil,
			Field{"generation", c.generation}, Field{"source", in.Source})
		return
	}
	c.rollout = &Rollout{Generation: c.generation, Baseline: c.listeningCount(), Started: c.now, Source: in.Source}
	c.note(zerolog.InfoLevel, "restart requested", nil, Field{"generation", c.generation}, Field{"source", in.Source})
}

func (c *Cluster) notRunningReason() string {
	if c.stopping {
		return "stopping"
	}
	return "not started"
}

func (c *Cluster) workerRestart(in WorkerRestartRequested) {
	w := c.worker(in.Worker)
	switch {
	case w == nil:
		return
	case c.stopping || w.State != fsm.Listening:
		c.note(zerolog.WarnLevel, "worker restart request ignored", w, Field{"reason", "worker is " + c.stateOrStopping(w)})
		return
	case w.RestartRequested:
		c.note(zerolog.InfoLevel, "worker restart request already pending", w)
		return
	}
	w.RestartRequested = true
	if c.rollout == nil {
		c.rollout = &Rollout{Baseline: c.listeningCount(), Started: c.now, Source: "worker " + w.ID.String()}
	}
	c.note(zerolog.InfoLevel, "worker requested restart", w)
}

func (c *Cluster) stateOrStopping(w *Worker) string {
	if c.stopping {
		return "stopping"
	}
	return string(w.State)
}

func (c *Cluster) stop(in StopRequested) {
	switch {
	case c.stopped:
		return
	case !c.stopping:
		c.stopping = true
		if c.rollout != nil {
			c.note(zerolog.WarnLevel, "rollout cancelled by stop", nil, Field{"generation", c.generation})
			c.rollout = nil
		}
		c.note(zerolog.InfoLevel, "stopping", nil, Field{"source", in.Source}, Field{"workers", len(c.workers)})
		for _, w := range c.workers {
			if w.State.Live() {
				c.drain(w, "stop")
			}
		}
	case !c.killing:
		c.killing = true
		c.note(zerolog.WarnLevel, "second stop: killing workers", nil, Field{"source", in.Source})
		for _, w := range c.workers {
			c.kill(w, "second stop")
		}
	default:
		c.note(zerolog.InfoLevel, "stop already in progress", nil, Field{"source", in.Source})
	}
	c.maybeStopped()
}

func (c *Cluster) maybeStopped() {
	if c.stopping && !c.stopped && len(c.workers) == 0 {
		c.stopped = true
		c.note(zerolog.InfoLevel, "cluster stopped", nil)
		c.emit(Stopped{})
	}
}

func (c *Cluster) listening(in WorkerListening) {
	w := c.worker(in.Worker)
	if w == nil || w.State != fsm.Forking {
		return
	}
	w.State = fsm.Listening
	w.ReadyAt = c.now
	c.note(zerolog.InfoLevel, "worker listening", w, Field{"boot", c.now.Sub(w.ForkedAt)})
}

func (c *Cluster) exited(in WorkerExited) {
	w := c.worker(in.Worker)
	if w == nil {
		return
	}
	prev := w.State
	w.State = fsm.Killed
	c.workers = slices.DeleteFunc(c.workers, func(x *Worker) bool { return x == w })
	level := zerolog.InfoLevel
	if prev != fsm.Draining {
		level = zerolog.WarnLevel
	}
	c.note(level, "worker exited", w, Field{"reason", in.Reason.String()}, Field{"was", string(prev)})
	if c.stopping {
		c.maybeStopped()
		return
	}
	switch prev {
	case fsm.Forking:
		c.failedBeforeReady(w, "exited before ready: "+in.Reason.String())
	case fsm.Listening:
		if c.now.Sub(w.ReadyAt) >= c.cfg.Backoff.Reset {
			c.slots[w.Slot].failures = 0
		}
		c.slotFailed(w.Slot)
	}
}

// failedBeforeReady handles a worker that will never listen: a
// replacement's failure aborts the rollout, any other counts against its
// slot's backoff.
func (c *Cluster) failedBeforeReady(w *Worker, why string) {
	if w.Replacement && c.rollout != nil {
		c.abort(w, why)
		return
	}
	if w.Slot < len(c.slots) {
		c.slotFailed(w.Slot)
	}
}

func (c *Cluster) slotFailed(i int) {
	if i >= len(c.slots) {
		return
	}
	s := &c.slots[i]
	s.failures++
	d := c.cfg.Backoff.delay(s.failures)
	if d > 0 {
		s.notBefore = c.now.Add(d)
		c.note(zerolog.WarnLevel, "slot backing off", nil, Field{"slot", i}, Field{"failures", s.failures}, Field{"delay", d})
		c.emit(SetTimer{Timer: Timer{Kind: BackoffEnd, Slot: i}, After: d})
	}
}

// abort ends the rollout after a replacement failed: starting replacements
// are stopped, nothing old is drained, and the next request retries.
func (c *Cluster) abort(failed *Worker, why string) {
	c.note(zerolog.ErrorLevel, "rollout aborted", failed, Field{"reason", why}, Field{"rollout", c.rollout.Generation})
	c.rollout = nil
	for _, w := range c.workers {
		w.RestartRequested = false
		if w.State == fsm.Forking && w.Replacement {
			c.drain(w, "rollout aborted")
		}
	}
}

func (c *Cluster) timer(t Timer) {
	switch t.Kind {
	case KillTimeout:
		if w := c.worker(t.Worker); w != nil {
			c.note(zerolog.WarnLevel, "kill timeout", w, Field{"after", c.cfg.KillTimeout})
			c.kill(w, "kill timeout")
		}
	case ReadyTimeout:
		w := c.worker(t.Worker)
		if w == nil || w.State != fsm.Forking || c.stopping {
			return
		}
		c.note(zerolog.WarnLevel, "ready timeout", w, Field{"after", c.cfg.ReadyTimeout})
		c.kill(w, "ready timeout")
		c.failedBeforeReady(w, fmt.Sprintf("not ready after %s", c.cfg.ReadyTimeout))
	case BackoffEnd:
		// reconcile, which runs after every input, forks what is now allowed.
	}
}

// due reports whether w must be replaced by the rollout in progress.
func (c *Cluster) due(w *Worker) bool {
	if c.rollout == nil {
		return false
	}
	return w.RestartRequested || w.Generation < c.rollout.Generation
}

// reconcile moves the cluster one step toward its goal: every slot served
// by one listening worker that is not due. It drains surplus workers where
// the invariant allows, forks where a slot needs a worker, and ends the
// rollout when nothing is left to replace.
func (c *Cluster) reconcile() {
	if !c.started || c.stopping {
		return
	}
	members := c.liveBySlot()
	c.drainSurplus(members)
	c.forkWhereNeeded(members)
	c.finishRollout()
	if !c.ready && c.listeningCount() >= c.target {
		c.ready = true
		c.note(zerolog.InfoLevel, "cluster ready", nil, Field{"workers", c.target}, Field{"generation", c.generation})
	}
}

// drainSurplus drains, in each slot, every worker older than the slot's
// newest listening worker, and every worker of a slot beyond the target.
func (c *Cluster) drainSurplus(bySlot [][]*Worker) {
	for i, members := range bySlot {
		if i >= c.target {
			for _, w := range members {
				c.drainIfSafe(w, "scale down")
			}
			continue
		}
		var newest *Worker
		for _, w := range members {
			if w.State == fsm.Listening {
				newest = w
			}
		}
		for _, w := range members {
			if newest != nil && w.ID < newest.ID {
				c.drainIfSafe(w, fmt.Sprintf("replaced by %s", newest.ID))
			}
		}
	}
}

// drainIfSafe is the replace-before-stop invariant: a listening worker is
// drained only if enough others keep listening without it.
func (c *Cluster) drainIfSafe(w *Worker, why string) {
	if w.State == fsm.Listening && c.listeningCount()-1 < c.required() {
		return
	}
	c.drain(w, why)
}

// required is how many workers must keep listening outside a stop.
func (c *Cluster) required() int {
	if c.rollout != nil {
		return min(c.target, c.rollout.Baseline)
	}
	return c.target
}

func (c *Cluster) forkWhereNeeded(bySlot [][]*Worker) {
	starting := 0
	for _, w := range c.workers {
		if w.State == fsm.Forking && w.Replacement {
			starting++
		}
	}
	for i := 0; i < c.target; i++ {
		if c.now.Before(c.slots[i].notBefore) {
			continue
		}
		members := slices.DeleteFunc(bySlot[i], func(w *Worker) bool { return !w.State.Live() })
		if len(members) == 0 {
			c.fork(i, false)
			continue
		}
		newest := members[len(members)-1]
		if newest.State == fsm.Forking || !c.due(newest) || starting >= c.cfg.MaxSurge {
			continue
		}
		c.fork(i, true)
		starting++
	}
}

func (c *Cluster) finishRollout() {
	r := c.rollout
	if r == nil {
		return
	}
	for _, w := range c.workers {
		if c.due(w) || w.State == fsm.Forking {
			return
		}
	}
	c.note(zerolog.InfoLevel, "restart complete", nil, Field{"generation", c.generation},
		Field{"duration", c.now.Sub(r.Started)}, Field{"source", r.Source})
	c.rollout = nil
}

func (c *Cluster) fork(slot int, replacement bool) {
	w := &Worker{ID: c.nextID, Slot: slot, Generation: c.generation, State: fsm.Forking, ForkedAt: c.now, Replacement: replacement}
	c.nextID++
	c.workers = append(c.workers, w)
	c.emit(Fork{Worker: w.ID, Slot: slot, Generation: w.Generation, Replacement: replacement})
	if c.cfg.ReadyTimeout > 0 {
		c.emit(SetTimer{Timer: Timer{Kind: ReadyTimeout, Worker: w.ID}, After: c.cfg.ReadyTimeout})
	}
}

func (c *Cluster) drain(w *Worker, why string) {
	w.State = fsm.Draining
	c.emit(Drain{Worker: w.ID, Reason: why})
	c.emit(SetTimer{Timer: Timer{Kind: KillTimeout, Worker: w.ID}, After: c.cfg.KillTimeout})
}

func (c *Cluster) kill(w *Worker, why string) {
	w.State = fsm.Draining
	c.emit(Kill{Worker: w.ID, Reason: why})
}

// liveBySlot lists each slot's live workers, oldest first.
func (c *Cluster) liveBySlot() [][]*Worker {
	out := make([][]*Worker, len(c.slots))
	for _, w := range c.workers {
		if w.State.Live() && w.Slot < len(out) {
			out[w.Slot] = append(out[w.Slot], w)
		}
	}
	return out
}

func (c *Cluster) listeningCount() int {
	n := 0
	for _, w := range c.workers {
		if w.State == fsm.Listening {
			n++
		}
	}
	return n
}

func (c *Cluster) worker(id WorkerID) *Worker {
	for _, w := range c.workers {
		if w.ID == id {
			return w
		}
	}
	return nil
}

func (c *Cluster) emit(d Decision) { c.out = append(c.out, d) }

func (c *Cluster) note(level zerolog.Level, msg string, w *Worker, fields ...Field) {
	n := Note{Level: level, Message: msg, Fields: fields}
	if w != nil {
		cp := *w
		n.Worker = &cp
	}
	c.emit(n)
}
