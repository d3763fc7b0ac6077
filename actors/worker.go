package actors

import (
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/fsm"
	"github.com/dutchmaster/dutchmaster/sockets/wire"
)

// Orders from the cluster actor to a worker.
type (
	// DrainOrder asks the worker to stop gracefully.
	DrainOrder struct{ Reason string }
	// KillOrder ends the worker at once.
	KillOrder struct{ Reason string }
	// AbortOrder ends a hung worker with SIGABRT.
	AbortOrder struct{ Reason string }
	// ReadyTimerFired arrives in timer ready mode once the worker has
	// lived long enough.
	ReadyTimerFired struct{}
	// Reattached is the first message to the machine of a worker handed
	// over by another master image, once its process is reattached: its
	// ready timer, if one was pending, is set again for the time it had
	// left.
	Reattached struct{}
)

// Effects of one message to a worker, for its host to carry out in order.
type (
	// RuntimeDrain: call Runtime.Drain with the method.
	RuntimeDrain struct{ How DrainMethod }
	// RuntimeKill: call Runtime.Kill.
	RuntimeKill struct{}
	// RuntimeAbort: call Runtime.Abort.
	RuntimeAbort struct{}
	// StartReadyTimer: deliver ReadyTimerFired after the duration.
	StartReadyTimer struct{ After time.Duration }
	// Finished: the worker is killed; its host may stop.
	Finished struct{}
)

// WorkerMachine is a worker actor's logic without the actor: it turns
// runtime events and cluster orders into lifecycle events, and returns
// what follows as data (reports for the cluster, which are core.Inputs,
// and runtime calls). The worker actor hosts one; tests that need no
// actors host it directly.
type WorkerMachine struct {
	Spec     WorkerSpec
	life     *fsm.Lifecycle
	log      zerolog.Logger
	ready    ReadyMode
	drain    DrainMethod
	spokeIPC bool
	killed   bool // the master's SIGKILL was sent
	pid      int
	// ignored counts the IPC lines ignored (unreadable, malformed,
	// unknown), and logged the count at the last line that said so.
	ignored, logged int
	// readyDue is when the pending ready timer fires (Apply keeps it);
	// zero when none is pending. readyLeft is a handed-over worker's
	// ready timer, set again at Reattached.
	readyDue  time.Time
	readyLeft *time.Duration
}

// IgnoredLoggedEach is how many ignored IPC lines of one worker are
// logged one by one. Past it, a line is logged when the count reaches a
// power of two, and the total once more when the worker exits: a worker
// flooding its channel cannot make the master's log grow at its pace.
const IgnoredLoggedEach = 16

// NewWorkerMachine returns the machine of a worker about to be forked.
func NewWorkerMachine(spec WorkerSpec, ready ReadyMode, drain DrainMethod, log zerolog.Logger) *WorkerMachine {
	return &WorkerMachine{Spec: spec, life: fsm.New(), ready: ready, drain: drain, log: log}
}

// State is the worker's lifecycle state.
func (m *WorkerMachine) State() fsm.State { return m.life.State() }

// logAt starts a log line about the worker, with its state now (the
// logger has the rest of the fields every such line carries).
func (m *WorkerMachine) logAt(level zerolog.Level) *zerolog.Event {
	return m.log.WithLevel(level).Str(FieldState, string(m.life.State()))
}

// Handle applies one runtime event or order and returns its effects.
func (m *WorkerMachine) Handle(msg any) []any {
	id := m.Spec.ID
	switch msg := msg.(type) {
	case Spawned:
		m.pid = msg.PID
		m.log = m.log.With().Int(FieldPID, msg.PID).Logger()
		out := []any{core.WorkerSpawned{Worker: id, PID: msg.PID}}
		if m.ready.Source == ReadyTimer {
			out = append(out, StartReadyTimer{After: m.ready.After})
		}
		return out
	case ForkFailed:
		return m.exit(fsm.ExitReason{Kind: fsm.ExitForkFailed, Detail: msg.Err})
	case IPC:
		m.spokeIPC = true
		return m.onIPC(msg)
	case Online:
		m.spokeIPC = true
	case Notify:
		return m.onNotify(msg)
	case ReadyTimerFired:
		return m.becameReady(ReadyTimer)
	case Reattached:
		if left := m.readyLeft; left != nil {
			m.readyLeft = nil
			return []any{StartReadyTimer{After: *left}}
		}
	case Exited:
		if m.killed && msg.Signal == syscall.SIGKILL {
			msg.Killed = true
		}
		return m.exit(msg.Reason())
	case DrainOrder:
		if _, err := m.life.Drain(); err != nil {
			m.logAt(zerolog.DebugLevel).Err(err).Msg("drain order ignored")
			return nil
		}
		return []any{RuntimeDrain{How: m.drain.resolve(m.spokeIPC)}, core.WorkerDraining{Worker: id}}
	case AbortOrder:
		if m.life.State() == fsm.Killed {
			return nil
		}
		return append(m.drainingFirst(id), RuntimeAbort{})
	case KillOrder:
		if m.life.State() == fsm.Killed {
			return nil
		}
		m.killed = true
		return append(m.drainingFirst(id), RuntimeKill{})
	}
	return nil
}

// drainingFirst moves a worker that an abort or a kill ends while it
// still serves to draining first (the lifecycle has no shorter path), and
// says so to the core.
func (m *WorkerMachine) drainingFirst(id core.WorkerID) []any {
	if !m.life.Can(fsm.Drain) {
		return nil
	}
	_, _ = m.life.Drain()
	return []any{core.WorkerDraining{Worker: id}}
}

func (m *WorkerMachine) onIPC(msg IPC) []any {
	if msg.Err != "" {
		if m.ignore() {
			m.logAt(zerolog.WarnLevel).Str(FieldReason, msg.Err).Int("ignored", m.ignored).Msg("unreadable IPC message ignored")
		}
		return nil
	}
	wm := wire.Classify(msg.Line)
	switch wm.Kind {
	case wire.KindReady:
		return m.becameReady(ReadyIPC)
	case wire.KindRequestRestart:
		return []any{core.WorkerRestartRequested{Worker: m.Spec.ID, Reason: wm.Reason}}
	case wire.KindHeartbeat:
		return []any{core.WorkerHeartbeat{Worker: m.Spec.ID}}
	case wire.KindMalformed:
		if m.ignore() {
			m.logAt(zerolog.WarnLevel).Int("bytes", len(msg.Line)).Int("ignored", m.ignored).Msg("malformed IPC message ignored")
		}
	default:
		if m.ignore() {
			m.logAt(zerolog.InfoLevel).Str("event", wm.Event).Int("ignored", m.ignored).Msg("unknown IPC message ignored")
		}
	}
	return nil
}

// onNotify reads one sd_notify datagram: readiness, and the watchdog's
// messages (a datagram may carry several).
func (m *WorkerMachine) onNotify(msg Notify) []any {
	n := wire.ParseNotify(msg.Payload)
	var out []any
	if n.Ready() {
		out = append(out, m.becameReady(ReadyNotify)...)
	}
	if n.Watchdog() {
		out = append(out, core.WorkerHeartbeat{Worker: m.Spec.ID})
	}
	if n.WatchdogTrigger() {
		out = append(out, core.WatchdogTriggered{Worker: m.Spec.ID})
	}
	if us, ok := n.ExtendTimeout(); ok && m.life.State() == fsm.Forking {
		by := time.Duration(min(us, uint64(maxExtend/time.Microsecond))) * time.Microsecond
		out = append(out, core.ReadyTimeoutExtended{Worker: m.Spec.ID, By: by})
	}
	return out
}

// maxExtend bounds one EXTEND_TIMEOUT_USEC: a day is more than any boot.
const maxExtend = 24 * time.Hour

// ignore counts one ignored line and says whether to log it.
func (m *WorkerMachine) ignore() bool {
	m.ignored++
	n := m.ignored
	switch {
	case n <= IgnoredLoggedEach || n&(n-1) == 0:
		m.logged = n
		return true
	case n == IgnoredLoggedEach+1:
		m.logAt(zerolog.WarnLevel).Int("ignored", n).Msg("more IPC messages ignored: counted, logged at each power of two")
		m.logged = n
	}
	return false
}

func (m *WorkerMachine) becameReady(source string) []any {
	if !m.ready.Accepts(source) {
		m.logAt(zerolog.DebugLevel).Str("source", source).Str("ready", m.ready.String()).Msg("readiness from a source the ready mode ignores")
		return nil
	}
	if _, err := m.life.Ready(); err != nil {
		m.logAt(zerolog.DebugLevel).Err(err).Msg("ready ignored")
		return nil
	}
	return []any{core.WorkerListening{Worker: m.Spec.ID}}
}

func (m *WorkerMachine) exit(r fsm.ExitReason) []any {
	if _, err := m.life.Exit(r); err != nil {
		m.logAt(zerolog.DebugLevel).Err(err).Msg("exit ignored")
		return nil
	}
	if m.ignored > m.logged {
		m.logAt(zerolog.WarnLevel).Int("ignored", m.ignored).Msg("IPC messages ignored in all")
	}
	return []any{core.WorkerExited{Worker: m.Spec.ID, Reason: r}, Finished{}}
}

// workerActor hosts a WorkerMachine and carries out its effects.
type workerActor struct {
	machine *WorkerMachine
	cluster *actor.PID
	runtime Runtime
	clock   Clock
	// handedOver: the worker's process was handed over by another master
	// image; Started reattaches it instead of forking.
	handedOver bool
	// frozen: the cluster is frozen (Cluster.Freeze); every message is
	// kept in stash, in order, until it thaws.
	frozen bool
	stash  []any
}

func (w *workerActor) Receive(ctx actor.Context) {
	msg := ctx.Message()
	self, system := ctx.Self(), ctx.ActorSystem()
	box := workerMailbox{ctx: ctx, cluster: w.cluster, self: self, system: system}
	switch m := msg.(type) {
	case *actor.Started:
		events := func(ev any) { system.Root.Send(self, ev) }
		if w.handedOver {
			w.runtime.(Reattacher).Reattach(w.machine.Spec.ID, events)
			w.machine.Apply(Reattached{}, w.runtime, w.clock, box)
			return
		}
		w.runtime.Fork(w.machine.Spec, events)
		return
	case flush:
		// A killed worker is about to stop; the cluster learns of it
		// from its exit report and its end.
		if w.machine.State() != fsm.Killed {
			now := w.clock.Now()
			ctx.Send(w.cluster, flushed{round: m.round, id: w.machine.Spec.ID, at: now, state: w.machine.Handover(now)})
		}
		return
	case freezeWorker:
		w.frozen = true
		return
	case thawWorker:
		w.frozen = false
		stash := w.stash
		w.stash = nil
		for _, kept := range stash {
			w.machine.Apply(kept, w.runtime, w.clock, box)
		}
		return
	}
	if w.frozen && !isLifecycle(msg) {
		w.stash = append(w.stash, msg)
		return
	}
	w.machine.Apply(msg, w.runtime, w.clock, box)
}

// isLifecycle reports whether msg is one of the actor system's own
// messages (started, stopping, a watched actor's end), which a frozen
// actor handles rather than keeps.
func isLifecycle(msg any) bool {
	switch msg.(type) {
	case actor.SystemMessage, actor.AutoReceiveMessage:
		return true
	}
	return false
}

// workerMailbox carries a worker machine's effects out as actor messages.
type workerMailbox struct {
	ctx     actor.Context // valid during the Receive that made it
	cluster *actor.PID
	// self and system outlive that Receive: the ready timer fires after it.
	self   *actor.PID
	system *actor.ActorSystem
}

func (b workerMailbox) Report(in core.Input) { b.ctx.Send(b.cluster, in) }
func (b workerMailbox) Deliver(msg any)      { b.system.Root.Send(b.self, msg) }
func (b workerMailbox) Finished()            { b.ctx.Stop(b.self) }
