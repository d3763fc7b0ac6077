package actors

import (
	"syscall"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/fsm"
)

// Orders from the cluster actor to a worker actor.
type (
	drainOrder struct{ reason string }
	killOrder  struct{ reason string }
	// readyTimer fires in timer ready mode once the worker has lived long enough.
	readyTimer struct{}
)

// workerActor owns one worker process and its lifecycle.
type workerActor struct {
	spec     WorkerSpec
	cluster  *actor.PID
	runtime  Runtime
	clock    Clock
	log      zerolog.Logger
	ready    ReadyMode
	drain    DrainMethod
	life     *fsm.Lifecycle
	pid      int
	spokeIPC bool
	killed   bool // the master's SIGKILL was sent
}

func (w *workerActor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		self, system := ctx.Self(), ctx.ActorSystem()
		w.runtime.Fork(w.spec, func(m any) { system.Root.Send(self, m) })
	case Spawned:
		w.pid = msg.PID
		w.log = w.log.With().Int(FieldPID, msg.PID).Logger()
		w.report(ctx, core.WorkerSpawned{Worker: w.spec.ID, PID: msg.PID})
		if w.ready.Source == ReadyTimer {
			self, system := ctx.Self(), ctx.ActorSystem()
			w.clock.AfterFunc(w.ready.After, func() { system.Root.Send(self, readyTimer{}) })
		}
	case ForkFailed:
		w.exit(ctx, fsm.ExitReason{Kind: fsm.ExitForkFailed, Detail: msg.Err})
	case IPC:
		w.spokeIPC = true
		w.onIPC(ctx, msg)
	case Notify:
		if NotifyReady(msg.Payload) {
			w.becameReady(ctx, ReadyNotify)
		}
	case readyTimer:
		w.becameReady(ctx, ReadyTimer)
	case Exited:
		if w.killed && msg.Signal == syscall.SIGKILL {
			msg.Killed = true
		}
		w.exit(ctx, msg.Reason())
	case drainOrder:
		if _, err := w.life.Drain(); err != nil {
			w.log.Debug().Err(err).Msg("drain order ignored")
			return
		}
		w.runtime.Drain(w.spec.ID, w.drain.resolve(w.spokeIPC))
		w.report(ctx, core.WorkerDraining{Worker: w.spec.ID})
	case killOrder:
		if w.life.State() == fsm.Killed {
			return
		}
		if w.life.Can(fsm.Drain) {
			_, _ = w.life.Drain()
			w.report(ctx, core.WorkerDraining{Worker: w.spec.ID})
		}
		w.killed = true
		w.runtime.Kill(w.spec.ID)
	}
}

func (w *workerActor) onIPC(ctx actor.Context, msg IPC) {
	if msg.Err != "" {
		w.log.Warn().Str(FieldReason, msg.Err).Msg("unreadable IPC message ignored")
		return
	}
	m := ClassifyIPC(msg.Line)
	switch m.Kind {
	case MsgReady:
		w.becameReady(ctx, ReadyIPC)
	case MsgRequestRestart:
		w.report(ctx, core.WorkerRestartRequested{Worker: w.spec.ID})
	case MsgMalformed:
		w.log.Warn().Int("bytes", len(msg.Line)).Msg("malformed IPC message ignored")
	default:
		w.log.Info().Str("event", m.Event).Msg("unknown IPC message ignored")
	}
}

func (w *workerActor) becameReady(ctx actor.Context, source string) {
	if !w.ready.Accepts(source) {
		w.log.Debug().Str("source", source).Str("ready", w.ready.String()).Msg("readiness from a source the ready mode ignores")
		return
	}
	if _, err := w.life.Ready(); err != nil {
		w.log.Debug().Err(err).Msg("ready ignored")
		return
	}
	w.report(ctx, core.WorkerListening{Worker: w.spec.ID})
}

func (w *workerActor) exit(ctx actor.Context, r fsm.ExitReason) {
	if _, err := w.life.Exit(r); err != nil {
		w.log.Debug().Err(err).Msg("exit ignored")
		return
	}
	w.report(ctx, core.WorkerExited{Worker: w.spec.ID, Reason: r})
	ctx.Stop(ctx.Self())
}

func (w *workerActor) report(ctx actor.Context, in core.Input) {
	ctx.Send(w.cluster, in)
}
