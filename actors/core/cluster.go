package core

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/fsm"
)

// MaxWorkers bounds the target count, whatever asks for more.
const MaxWorkers = 4096

// FlappingAfter is how many consecutive failures flag a slot as flapping.
const FlappingAfter = 3

// Cluster is the state the decisions are made from. It is not safe for
// concurrent use; the cluster actor is its only user.
type Cluster struct {
	cfg        Config
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
	wakeAt     time.Time       // the policy's pending wake-up, if any
	wakeSeq    int             // which PolicyWake timer is the pending one
	refused    map[string]bool // policy proposals refused at the last consultation
	rng        *rand.Rand      // the recycles' jitter, from Config.Seed
	src        *rand.PCG       // rng's source, whose state a handover carries
	timers     pendingTimers   // the timers set and not yet fired (handover.go)
	stepping   bool            // inside Step: a handover now would miss the step's end

	now time.Time
	out []Decision
}

// slot is a position that one serving worker fills. Retired slots (after
// a scale down) keep their index so that numbers stay stable.
type slot struct {
	active    bool
	failures  int       // consecutive failures of this slot's workers
	notBefore time.Time // no fork into the slot before this (backoff)
}

// New returns a cluster that has not started.
func New(cfg Config) *Cluster {
	cfg = cfg.WithDefaults()
	src := rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)
	return &Cluster{cfg: cfg, nextID: 1, rng: rand.New(src), src: src}
}

// Config is the configuration in force, defaults filled.
func (c *Cluster) Config() Config { return c.cfg }

// Step applies one input at time now and returns what to do, in order.
func (c *Cluster) Step(now time.Time, in Input) []Decision {
	c.now, c.out = now, nil
	c.stepping = true
	defer func() { c.stepping = false }()
	c.timers.stepped(in)
	switch in := in.(type) {
	case Start:
		c.start(in)
	case RestartRequested:
		c.restart(in)
	case WorkerRestartRequested:
		c.workerRestart(in)
	case ReplaceWorker:
		c.replaceWorker(in)
	case StopRequested:
		c.stop(in)
	case ScaleBy:
		c.scale(in, c.target()+in.Delta, in.Source)
	case ScaleTo:
		c.scale(in, in.Target, in.Source)
	case Reconfigure:
		c.cfg = in.Config.WithDefaults()
		c.note(zerolog.InfoLevel, "configuration changed", nil, Field{"policy", c.cfg.Policy.Name()})
	case WorkerSpawned:
		if w := c.worker(in.Worker); w != nil {
			w.PID = in.PID
			c.note(zerolog.DebugLevel, "worker started", w)
		}
		return c.out // a pid changes nothing to decide
	case WorkerHeartbeat:
		if w := c.worker(in.Worker); w != nil {
			w.LastHeartbeat = c.now
		}
		return c.out // the watchdog's timer reads it when it fires
	case WatchdogTriggered:
		c.watchdogTriggered(in)
	case ReadyTimeoutExtended:
		c.extendReadyTimeout(in)
		return c.out
	case UsageSampled:
		c.sampled(in)
	case WorkerDraining:
		// The order came from here, so the view already says draining;
		// nothing to decide, and a policy is not consulted on echoes of
		// its own steps.
		return c.out
	case WorkerListening:
		c.listening(in)
	case WorkerExited:
		c.exited(in)
	case TimerFired:
		if in.Timer.Kind == PolicyWake && in.Timer.Seq != c.wakeSeq {
			return c.out // superseded by an earlier wake-up
		}
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
		cp := *w
		cp.Due = c.due(w)
		return cp, true
	}
	return Worker{}, false
}

// View returns a copy of the cluster's state.
func (c *Cluster) View() View {
	v := View{Now: c.now, Target: c.target(), Generation: c.generation, Policy: c.cfg.Policy.Name(),
		Ready: c.ready, Stopping: c.stopping, Stopped: c.stopped}
	if len(c.workers) > 0 {
		v.Workers = make([]Worker, len(c.workers))
	}
	for i, w := range c.workers {
		v.Workers[i] = *w
		v.Workers[i].Due = c.due(w)
	}
	for i, s := range c.slots {
		if s.active {
			v.Slots = append(v.Slots, Slot{Index: i, Failures: s.failures, Flapping: s.failures >= FlappingAfter, NotBefore: s.notBefore})
		}
	}
	if c.rollout != nil {
		r := *c.rollout
		v.Rollout = &r
	}
	v.idx = buildIndex(v)
	return v
}

func (c *Cluster) start(in Start) {
	if c.started {
		c.note(zerolog.WarnLevel, "start ignored: already started", nil)
		c.emit(Refused{Input: in, Reason: "already started"})
		return
	}
	c.started = true
	c.generation = 1
	c.setTarget(in.Target)
	c.note(zerolog.InfoLevel, "cluster starting", nil, Field{"workers", c.target()}, Field{"generation", c.generation},
		Field{"policy", c.cfg.Policy.Name()})
}

func (c *Cluster) restart(in RestartRequested) {
	if c.stopping || !c.started {
		c.note(zerolog.WarnLevel, "restart ignored", nil, Field{"source", in.Source}, Field{"reason", c.notRunningReason()})
		c.emit(Refused{Input: in, Reason: c.notRunningReason()})
		return
	}
	if in.Target > 0 && in.Target != c.target() {
		c.note(zerolog.InfoLevel, "worker count changed", nil, Field{"from", c.target()}, Field{"to", min(in.Target, MaxWorkers)})
		c.setTarget(in.Target)
	}
	c.generation++
	if c.rollout != nil {
		c.rollout.Generation = c.generation
		// The new release gets a first replacement (a canary) of its own.
		c.rollout.First, c.rollout.FirstReadyAt, c.rollout.FirstDiedAt = 0, time.Time{}, time.Time{}
		c.note(zerolog.InfoLevel, "restart requested during rollout: coalesced", nil,
			Field{"generation", c.generation}, Field{"source", in.Source})
		c.emit(RolloutCoalesced{Generation: c.generation, Source: in.Source})
		return
	}
	c.beginRollout(c.generation, in.Source)
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
		why := "worker is " + c.stateOrStopping(w)
		c.note(zerolog.WarnLevel, "worker restart request ignored", w, Field{"reason", why})
		c.emit(Refused{Input: in, Reason: why})
		return
	case w.RestartRequested:
		c.note(zerolog.InfoLevel, "worker restart request already pending", w)
		return
	case in.Reason == RecycleRequests:
		// The worker drew its limit's jitter at its fork; it waits its
		// turn as every recycle does.
		if w.RecycleCause == "" && !w.Recycling {
			c.wantRecycle(w, RecycleRequests, 0)
		}
		return
	}
	c.markForReplacement(w, "worker "+w.ID.String())
	c.note(zerolog.InfoLevel, "worker requested restart", w)
}

// replaceWorker marks one worker for replacement on an operator's request.
// When a rollout runs already, the worker joins it, and the rollout's end
// answers the request (RolloutCoalesced, with the rollout's generation).
func (c *Cluster) replaceWorker(in ReplaceWorker) {
	w := c.worker(in.Worker)
	switch {
	case w == nil:
		why := "no worker " + in.Worker.String()
		c.note(zerolog.WarnLevel, "worker replacement ignored", nil, Field{"source", in.Source}, Field{"reason", why})
		c.emit(Refused{Input: in, Reason: why})
		return
	case c.stopping || !c.started || w.State != fsm.Listening:
		why := "worker " + in.Worker.String() + " is " + c.stateOrStopping(w)
		c.note(zerolog.WarnLevel, "worker replacement ignored", w, Field{"source", in.Source}, Field{"reason", why})
		c.emit(Refused{Input: in, Reason: why})
		return
	}
	c.note(zerolog.InfoLevel, "worker replacement requested", w, Field{"source", in.Source})
	if c.rollout != nil {
		w.RestartRequested = true
		c.emit(RolloutCoalesced{Generation: c.rollout.Generation, Source: in.Source})
		return
	}
	c.markForReplacement(w, in.Source)
}

// markForReplacement makes w due, beginning a rollout if none runs. Such
// a rollout has generation 0: only the marked workers are due.
func (c *Cluster) markForReplacement(w *Worker, source string) {
	w.RestartRequested = true
	if c.rollout == nil {
		c.beginRollout(0, source)
	}
}

func (c *Cluster) beginRollout(generation int, source string) {
	c.rollout = &Rollout{Generation: generation, Baseline: c.listeningCount(), Started: c.now, Source: source}
	c.emit(RolloutStarted{Generation: generation, Baseline: c.rollout.Baseline, Source: source})
}

// endRollout closes the running rollout with an outcome.
func (c *Cluster) endRollout(outcome, reason string) {
	c.rollout = nil
	c.emit(RolloutEnded{Outcome: outcome, Reason: reason})
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
			c.endRollout(OutcomeCancelled, "stop")
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
	c.move(w, fsm.Ready)
	w.ReadyAt = c.now
	c.note(zerolog.InfoLevel, "worker listening", w, Field{"boot", c.now.Sub(w.ForkedAt)})
	c.listeningHealth(w)
	if r := c.rollout; r != nil {
		r.Baseline = max(r.Baseline, c.listeningCount())
	}
	if r := c.rollout; r != nil && r.First == w.ID {
		r.FirstReadyAt = c.now
	}
	if s := c.slotOf(w); s != nil && s.failures > 0 {
		// The slot's failures are forgotten once a worker stays up.
		c.emit(SetTimer{Timer: Timer{Kind: StableCheck, Slot: w.Slot}, After: c.cfg.Backoff.Reset})
	}
}

func (c *Cluster) exited(in WorkerExited) {
	w := c.worker(in.Worker)
	if w == nil {
		return
	}
	prev := w.State
	c.move(w, fsm.Exit)
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
	if r := c.rollout; r != nil && r.First == w.ID && prev == fsm.Listening {
		r.FirstDiedAt = c.now
	}
	switch {
	case prev == fsm.Forking:
		c.failedBeforeReady(w, "exited before ready: "+in.Reason.String())
	case prev == fsm.Listening && !w.Hung: // a hang counted against the slot already
		if c.now.Sub(w.ReadyAt) >= c.cfg.Backoff.Reset {
			if s := c.slotOf(w); s != nil {
				s.failures = 0
			}
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
	c.slotFailed(w.Slot)
}

func (c *Cluster) slotFailed(i int) {
	s := c.slotAt(i)
	if s == nil || !s.active {
		return
	}
	s.failures++
	if s.failures == FlappingAfter {
		c.note(zerolog.ErrorLevel, "slot flapping: its workers keep failing", nil, Field{"slot", i}, Field{"failures", s.failures})
	}
	if d := c.cfg.Backoff.delay(s.failures); d > 0 {
		s.notBefore = c.now.Add(d)
		c.note(zerolog.WarnLevel, "slot backing off", nil, Field{"slot", i}, Field{"failures", s.failures}, Field{"delay", d})
		c.emit(SetTimer{Timer: Timer{Kind: BackoffEnd, Slot: i}, After: d})
	}
}

// abort ends the rollout after a replacement failed (failed may be nil
// when a policy aborts): starting replacements are stopped, nothing old is
// drained, and the next request retries.
func (c *Cluster) abort(failed *Worker, why string) {
	c.note(zerolog.ErrorLevel, "rollout aborted", failed, Field{"reason", why}, Field{"rollout", c.rollout.Generation})
	c.endRollout(OutcomeAborted, why)
	for _, w := range c.workers {
		w.RestartRequested = false
		if w.Recycling {
			// Its replacement failed: the recycle is tried again once the
			// slot's backoff allows, not at once.
			w.Recycling = false
			c.slotFailed(w.Slot)
		}
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
		if w == nil || w.State != fsm.Forking || c.stopping || c.now.Before(w.readyDeadline) {
			return // gone, ready, or the worker asked for more time
		}
		c.note(zerolog.WarnLevel, "ready timeout", w, Field{"after", c.cfg.ReadyTimeout})
		c.kill(w, "ready timeout")
		c.failedBeforeReady(w, fmt.Sprintf("not ready after %s", c.cfg.ReadyTimeout))
	case StableCheck:
		s := c.slotAt(t.Slot)
		if s == nil || s.failures == 0 {
			return
		}
		for _, w := range c.workers {
			if w.Slot == t.Slot && w.State == fsm.Listening && c.now.Sub(w.ReadyAt) >= c.cfg.Backoff.Reset {
				s.failures = 0
				c.note(zerolog.InfoLevel, "slot stable again", w)
				return
			}
		}
	case PolicyWake:
		c.wakeAt = time.Time{}
	case WatchdogTime:
		c.watchdogCheck(t.Worker)
	case AbortTimeout:
		if w := c.worker(t.Worker); w != nil {
			c.note(zerolog.WarnLevel, "abort timeout", w, Field{"after", c.cfg.AbortTimeout})
			c.kill(w, "abort timeout")
		}
	case LifetimeEnd, RecycleDue:
		// reconcile starts the recycles that are now due.
	case BackoffEnd:
		// reconcile, which runs after every input, forks what is now allowed.
	}
}

// due reports whether w must be replaced by the rollout in progress.
func (c *Cluster) due(w *Worker) bool {
	if c.rollout == nil || w.Hung {
		return false // a hung worker's successor fills its slot, as after a crash
	}
	return w.RestartRequested || w.Generation < c.rollout.Generation
}

func (c *Cluster) fork(slot int, replacement bool) {
	w := &Worker{ID: c.nextID, Slot: slot, Generation: c.generation, State: fsm.Forking, ForkedAt: c.now, Replacement: replacement}
	c.nextID++
	c.workers = append(c.workers, w)
	if r := c.rollout; r != nil && replacement && r.First == 0 {
		r.First = w.ID
	}
	c.forkHealth(w)
	c.emit(Fork{Worker: w.ID, Slot: slot, Generation: w.Generation, Replacement: replacement, MaxRequests: w.MaxRequests})
	if c.cfg.ReadyTimeout > 0 {
		w.readyDeadline = c.now.Add(c.cfg.ReadyTimeout)
		c.emit(SetTimer{Timer: Timer{Kind: ReadyTimeout, Worker: w.ID}, After: c.cfg.ReadyTimeout})
	}
	if w.LifetimeEnd.After(c.now) {
		c.emit(SetTimer{Timer: Timer{Kind: LifetimeEnd, Worker: w.ID}, After: w.LifetimeEnd.Sub(c.now)})
	}
}

func (c *Cluster) drain(w *Worker, why string) {
	if w.Hung {
		c.abortHung(w, why)
		return
	}
	c.toDraining(w)
	c.emit(Drain{Worker: w.ID, Reason: why})
	c.emit(SetTimer{Timer: Timer{Kind: KillTimeout, Worker: w.ID}, After: c.cfg.KillTimeout})
}

func (c *Cluster) kill(w *Worker, why string) {
	c.toDraining(w)
	c.emit(Kill{Worker: w.ID, Reason: why})
}

// toDraining moves w to draining for a drain or kill order; an order to
// a worker already draining (a kill after its drain) leaves it there.
func (c *Cluster) toDraining(w *Worker) {
	if w.State != fsm.Draining {
		c.move(w, fsm.Drain)
	}
}

// move changes w's state by the lifecycle table (package fsm), the only
// way the core changes a worker's state. A move the table does not allow
// would be a bug of the core: it is logged and the state stays.
func (c *Cluster) move(w *Worker, e fsm.Event) {
	to, err := fsm.Next(w.State, e)
	if err != nil {
		c.note(zerolog.ErrorLevel, "worker state unchanged: the lifecycle does not allow this move", w, Field{"event", string(e)})
		return
	}
	w.State = to
}

// listeningCount counts the workers that serve: listening, not hung.
func (c *Cluster) listeningCount() int {
	n := 0
	for _, w := range c.workers {
		if w.Serves() {
			n++
		}
	}
	return n
}

// worker finds a worker by ID; c.workers is ordered by ID.
func (c *Cluster) worker(id WorkerID) *Worker {
	i, ok := slices.BinarySearchFunc(c.workers, id, func(w *Worker, id WorkerID) int { return int(w.ID - id) })
	if !ok {
		return nil
	}
	return c.workers[i]
}

func (c *Cluster) emit(d Decision) {
	if t, ok := d.(SetTimer); ok {
		c.timers.set(t.Timer, c.now.Add(t.After))
	}
	c.out = append(c.out, d)
}

func (c *Cluster) note(level zerolog.Level, msg string, w *Worker, fields ...Field) {
	n := Note{Level: level, Message: msg, Fields: fields}
	if w != nil {
		cp := *w
		n.Worker = &cp
	}
	c.emit(n)
}
