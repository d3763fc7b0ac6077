package actors

import (
	"time"

	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/fsm"
)

// ClusterHost is where an Executor's decisions land: the mailboxes of the
// workers and of the cluster. The cluster actor is one host; the
// synchronous host of the generated-sequence tests (scenarios.SyncHost) is
// the other. Everything else about carrying out a decision (what is
// logged, which machine a worker gets, which timers are kept) is the
// Executor's, so both hosts behave alike by construction.
type ClusterHost interface {
	// StartWorker gives a new worker's machine a mailbox and forks its
	// process (Runtime.Fork, reporting to that mailbox).
	StartWorker(m *WorkerMachine)
	// ResumeWorker gives the machine of a worker handed over by another
	// master image a mailbox, reattaches its process
	// (Reattacher.Reattach, reporting to that mailbox) and applies
	// Reattached to the machine.
	ResumeWorker(m *WorkerMachine)
	// Order puts a DrainOrder or a KillOrder in a worker's mailbox, if
	// the worker still has one.
	Order(id core.WorkerID, order any)
	// FireTimer puts core.TimerFired{t} in the cluster's mailbox. It is
	// called on the clock's goroutine.
	FireTimer(t core.Timer)
	// Stopped: the cluster has stopped and every worker is gone.
	Stopped()
}

// Executor owns the core and carries out its decisions through a host:
// the one place where a decision becomes a log line, a worker, an order
// or a timer.
type Executor struct {
	opts   Options
	core   *core.Cluster
	timers *WorkerTimers
	steps  int // how many steps the core took
	// handed is what an executor resumed from a handover
	// (NewResumedExecutor) carries out at Start instead of forking.
	handed *handedOver
}

// NewExecutor returns an executor for a cluster that has not started;
// Options' defaults are filled here.
func NewExecutor(opts Options) *Executor {
	if opts.Clock == nil {
		opts.Clock = SystemClock{}
	}
	if opts.Workers == nil {
		opts.Workers = func() int { return 2 }
	}
	return &Executor{opts: opts, core: core.New(opts.Core), timers: NewWorkerTimers(opts.Clock)}
}

// Options are the options in force, defaults filled.
func (e *Executor) Options() Options { return e.opts }

// Start forks the first generation. An executor resumed from a
// handover instead gives the host every handed-over worker's machine and
// sets the pending timers again, and returns those SetTimer decisions.
func (e *Executor) Start(h ClusterHost) []core.Decision {
	if handed := e.handed; handed != nil {
		e.handed = nil
		v := e.core.View()
		e.opts.Logger.Info().Int(FieldGeneration, v.Generation).Int("workers", len(handed.machines)).
			Int("timers", len(handed.timers)).Msg("resumed: workers and state handed over by the previous master image")
		for _, m := range handed.machines {
			h.ResumeWorker(m)
		}
		for _, d := range handed.timers {
			e.execute(d, h)
		}
		return handed.timers
	}
	return e.Step(core.Start{Target: e.opts.Workers()}, h)
}

// Reconfigure changes the configuration from the next decision on.
func (e *Executor) Reconfigure(r Reconfigure, h ClusterHost) []core.Decision {
	if r.Workers != nil {
		e.opts.Workers = r.Workers
	}
	e.opts.Ready, e.opts.Drain = r.Ready, r.Drain
	return e.Step(core.Reconfigure{Config: r.Core}, h)
}

// Step gives the core one input at the clock's time, shows the step to
// Options.Observe, and carries out every decision in order. It returns
// the decisions.
func (e *Executor) Step(in core.Input, h ClusterHost) []core.Decision {
	if r, ok := in.(core.RestartRequested); ok && r.Target == 0 {
		// The worker count is re-evaluated at every rolling restart.
		r.Target = e.opts.Workers()
		in = r
	}
	now := e.opts.Clock.Now()
	out := e.core.Step(now, in)
	e.steps++
	if e.opts.Observe != nil {
		e.opts.Observe(now, in, out)
	}
	e.timers.Stepped(in)
	for _, d := range out {
		e.execute(d, h)
	}
	return out
}

// Handover is the core's whole state at now (core.Cluster.Handover),
// for a host at a cut: between two steps, every worker's messages
// handled (Cluster.Freeze reaches one; the synchronous host is at one
// once idle).
func (e *Executor) Handover(now time.Time) (core.State, error) { return e.core.Handover(now) }

// View is a copy of the cluster's state.
func (e *Executor) View() core.View { return e.core.View() }

// Worker is a copy of one worker's view.
func (e *Executor) Worker(id core.WorkerID) (core.Worker, bool) { return e.core.Worker(id) }

func (e *Executor) execute(d core.Decision, h ClusterHost) {
	log := e.opts.Logger
	switch d := d.(type) {
	case core.Note:
		LogNote(log, d)
	case core.Fork:
		// No pid yet: the process is made after this line.
		log.Info().Int(FieldWorker, int(d.Worker)).Int(FieldSlot, d.Slot).Int(FieldGeneration, d.Generation).
			Str(FieldState, string(fsm.Forking)).Bool("replacement", d.Replacement).Msg("fork")
		spec := WorkerSpec{ID: d.Worker, Slot: d.Slot, Generation: d.Generation, MaxRequests: d.MaxRequests}
		h.StartWorker(NewWorkerMachine(spec, e.opts.Ready, e.opts.Drain, e.workerLog(spec)))
	case core.Drain:
		e.order(d.Worker, "drain", d.Reason, DrainOrder{d.Reason}, h)
	case core.Kill:
		e.order(d.Worker, "kill", d.Reason, KillOrder{d.Reason}, h)
	case core.Abort:
		e.order(d.Worker, "abort", d.Reason, AbortOrder{d.Reason}, h)
	case core.SetTimer:
		e.timers.Set(d, h.FireTimer)
	case core.Stopped:
		h.Stopped()
	}
}

// workerLog is the logger of a worker's machine: every line carries the
// worker, its slot and generation (and its pid, added once known).
func (e *Executor) workerLog(spec WorkerSpec) zerolog.Logger {
	return e.opts.Logger.With().Int(FieldWorker, int(spec.ID)).Int(FieldSlot, spec.Slot).Int(FieldGeneration, spec.Generation).Logger()
}

func (e *Executor) order(id core.WorkerID, what, reason string, msg any, h ClusterHost) {
	ev := e.opts.Logger.Info()
	if w, ok := e.core.Worker(id); ok {
		ev = withWorker(ev, w)
	}
	ev.Str(FieldReason, reason).Msg(what)
	h.Order(id, msg)
}

// WorkerHost is where a worker machine's effects land: the worker actor,
// or the synchronous host's queue.
type WorkerHost interface {
	// Report puts an input in the cluster's mailbox.
	Report(in core.Input)
	// Deliver puts a message in the worker's own mailbox; it is called
	// on the clock's goroutine.
	Deliver(msg any)
	// Finished: the worker is killed and its mailbox may close.
	Finished()
}

// Apply hands msg to the machine and carries out its effects, in order,
// through the runtime, the clock and the host.
func (m *WorkerMachine) Apply(msg any, rt Runtime, clock Clock, h WorkerHost) {
	if _, ok := msg.(ReadyTimerFired); ok {
		m.readyDue = time.Time{}
	}
	for _, effect := range m.Handle(msg) {
		switch e := effect.(type) {
		case core.Input:
			h.Report(e)
		case RuntimeDrain:
			rt.Drain(m.Spec.ID, e.How)
		case RuntimeKill:
			rt.Kill(m.Spec.ID)
		case RuntimeAbort:
			rt.Abort(m.Spec.ID)
		case StartReadyTimer:
			m.readyDue = clock.Now().Add(e.After) // kept for a handover
			clock.AfterFunc(e.After, func() { h.Deliver(ReadyTimerFired{}) })
		case Finished:
			h.Finished()
		}
	}
}

// LogNote writes a note of the core as one log line.
func LogNote(log zerolog.Logger, n core.Note) {
	e := log.WithLevel(n.Level)
	if n.Worker != nil {
		e = withWorker(e, *n.Worker)
	}
	for _, f := range n.Fields {
		e = addField(e, f)
	}
	e.Msg(n.Message)
}

// addField writes durations as text ("1.5s") rather than nanoseconds, so
// logs read the way the flags are written.
func addField(e *zerolog.Event, f core.Field) *zerolog.Event {
	switch v := f.Value.(type) {
	case time.Duration:
		return e.Str(f.Key, v.String())
	case string:
		return e.Str(f.Key, v)
	case int:
		return e.Int(f.Key, v)
	}
	return e.Interface(f.Key, f.Value)
}
