package actors

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/fsm"
)

// Options configure a cluster.
type Options struct {
	Runtime Runtime
	Clock   Clock // default SystemClock
	Logger  zerolog.Logger
	// Workers is the target worker count, evaluated at start and at every
	// rolling restart. Default 2.
	Workers func() int
	Core    core.Config
	Ready   ReadyMode
	Drain   DrainMethod
	// Observe, if set, sees every input and the decisions it produced,
	// on the cluster actor's goroutine, before they are carried out.
	Observe func(now time.Time, in core.Input, out []core.Decision)
}

// NewSystem returns an actor system whose own logging goes through log at
// warn level and up (slog.DiscardHandler when log is disabled).
func NewSystem(log zerolog.Logger) *actor.ActorSystem {
	var h slog.Handler = slog.DiscardHandler
	if log.GetLevel() != zerolog.Disabled {
		h = zerolog.NewSlogHandler(log.Level(max(log.GetLevel(), zerolog.WarnLevel)))
	}
	return actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(h) }))
}

// Cluster is the handle to a running cluster actor.
type Cluster struct {
	system *actor.ActorSystem
	pid    *actor.PID
	done   chan struct{}
}

// Start spawns the cluster actor, which forks the first generation.
func Start(system *actor.ActorSystem, opts Options) *Cluster {
	if opts.Clock == nil {
		opts.Clock = SystemClock{}
	}
	if opts.Workers == nil {
		opts.Workers = func() int { return 2 }
	}
	c := &Cluster{system: system, done: make(chan struct{})}
	props := actor.PropsFromProducer(func() actor.Actor {
		return &clusterActor{opts: opts, core: core.New(opts.Core), done: c.done, workers: map[core.WorkerID]*actor.PID{},
			timers: NewWorkerTimers(opts.Clock)}
	}, actor.WithSupervisor(stopOnPanic()))
	c.pid = system.Root.Spawn(props)
	return c
}

// stopOnPanic replaces protoactor's default supervisor, which would
// silently restart a panicking actor with fresh state and so forget a live
// process. A failed actor stops, and its parent handles Terminated.
func stopOnPanic() actor.SupervisorStrategy {
	return actor.NewOneForOneStrategy(0, time.Second, func(any) actor.Directive { return actor.StopDirective })
}

// Send delivers an input (a signal, a control command) to the cluster actor.
func (c *Cluster) Send(in core.Input) { c.system.Root.Send(c.pid, in) }

// Reconfigure sends a new configuration; it applies to what follows.
func (c *Cluster) Reconfigure(r Reconfigure) { c.system.Root.Send(c.pid, r) }

// Restart asks for a rolling restart.
func (c *Cluster) Restart(source string) { c.Send(core.RestartRequested{Source: source}) }

// Stop asks for a graceful stop; a second call kills the workers.
func (c *Cluster) Stop(source string) { c.Send(core.StopRequested{Source: source}) }

// Done is closed once the cluster has stopped and every worker is gone.
func (c *Cluster) Done() <-chan struct{} { return c.done }

// View asks the cluster actor for a copy of its state.
func (c *Cluster) View(ctx context.Context) (core.View, error) {
	timeout := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	res, err := c.system.Root.RequestFuture(c.pid, viewRequest{}, timeout).Result()
	if err != nil {
		return core.View{}, fmt.Errorf("cluster view: %w", err)
	}
	return res.(core.View), nil
}

// Ask delivers an input as Send does and returns the decisions of the
// step it caused, so that the asker learns what became of its own request
// (a Refused, a RolloutStarted) from the step itself. Observers see that
// step before Ask returns.
func (c *Cluster) Ask(ctx context.Context, in core.Input) ([]core.Decision, error) {
	timeout := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	res, err := c.system.Root.RequestFuture(c.pid, askRequest{in}, timeout).Result()
	if err != nil {
		return nil, fmt.Errorf("cluster: %T: %w", in, err)
	}
	return res.([]core.Decision), nil
}

// askRequest is an input whose step's decisions go back to the asker.
type askRequest struct{ in core.Input }

// Shutdown stops the cluster actor itself (after Done, to release it).
func (c *Cluster) Shutdown() { c.system.Root.Stop(c.pid) }

type viewRequest struct{}

// Reconfigure changes the cluster's configuration from the next decision
// on (a re-read config file). Running workers are not touched.
type Reconfigure struct {
	Workers func() int
	Core    core.Config
	Ready   ReadyMode
	Drain   DrainMethod
}

// workerGone follows a worker actor's Terminated through the mailbox, so
// that the worker's last report, queued before it, is handled first.
type workerGone struct{ id core.WorkerID }

type clusterActor struct {
	opts    Options
	core    *core.Cluster
	done    chan struct{}
	workers map[core.WorkerID]*actor.PID
	ids     map[string]core.WorkerID
	timers  *WorkerTimers
}

func (a *clusterActor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		a.step(ctx, core.Start{Target: a.opts.Workers()})
	case core.RestartRequested:
		if msg.Target == 0 {
			msg.Target = a.opts.Workers()
		}
		a.step(ctx, msg)
	case Reconfigure:
		if msg.Workers != nil {
			a.opts.Workers = msg.Workers
		}
		a.opts.Ready, a.opts.Drain = msg.Ready, msg.Drain
		a.step(ctx, core.Reconfigure{Config: msg.Core})
	case core.Input:
		a.step(ctx, msg)
	case askRequest:
		in := msg.in
		if r, ok := in.(core.RestartRequested); ok && r.Target == 0 {
			r.Target = a.opts.Workers() // as for a sent restart
			in = r
		}
		ctx.Respond(a.step(ctx, in))
	case viewRequest:
		ctx.Respond(a.core.View())
	case *actor.Terminated:
		if id, ok := a.ids[msg.Who.Id]; ok {
			delete(a.ids, msg.Who.Id)
			ctx.Send(ctx.Self(), workerGone{id})
		}
	case workerGone:
		a.workerGone(ctx, msg.id)
	}
}

// workerGone handles a worker actor that stopped without reporting its
// process's exit: it failed. Its process may still run, so it is killed,
// and the cluster treats the worker as exited.
func (a *clusterActor) workerGone(ctx actor.Context, id core.WorkerID) {
	delete(a.workers, id)
	if _, ok := a.core.Worker(id); ok {
		a.opts.Runtime.Kill(id)
		a.step(ctx, core.WorkerExited{Worker: id, Reason: fsm.ExitReason{Kind: fsm.ExitHardKill, Detail: "worker actor failed"}})
	}
}

func (a *clusterActor) step(ctx actor.Context, in core.Input) []core.Decision {
	now := a.opts.Clock.Now()
	out := a.core.Step(now, in)
	if a.opts.Observe != nil {
		a.opts.Observe(now, in, out)
	}
	a.timers.Stepped(in)
	for _, d := range out {
		a.execute(ctx, d)
	}
	return out
}

func (a *clusterActor) execute(ctx actor.Context, d core.Decision) {
	log := a.opts.Logger
	switch d := d.(type) {
	case core.Note:
		LogNote(log, d)
	case core.Fork:
		// No pid yet: the process is made after this line.
		log.Info().Int(FieldWorker, int(d.Worker)).Int(FieldSlot, d.Slot).Int(FieldGeneration, d.Generation).
			Str(FieldState, string(fsm.Forking)).Bool("replacement", d.Replacement).Msg("fork")
		a.spawnWorker(ctx, d)
	case core.Drain:
		a.order(ctx, d.Worker, "drain", d.Reason, DrainOrder{d.Reason})
	case core.Kill:
		a.order(ctx, d.Worker, "kill", d.Reason, KillOrder{d.Reason})
	case core.SetTimer:
		self, system := ctx.Self(), ctx.ActorSystem()
		a.timers.Set(d, func(t core.Timer) { system.Root.Send(self, core.TimerFired{Timer: t}) })
	case core.Stopped:
		close(a.done)
	}
}

func (a *clusterActor) order(ctx actor.Context, id core.WorkerID, what, reason string, msg any) {
	e := a.opts.Logger.Info()
	if w, ok := a.core.Worker(id); ok {
		e = withWorker(e, w)
	}
	e.Str(FieldReason, reason).Msg(what)
	if pid, ok := a.workers[id]; ok {
		ctx.Send(pid, msg)
	}
}

func (a *clusterActor) spawnWorker(ctx actor.Context, d core.Fork) {
	spec := WorkerSpec{ID: d.Worker, Slot: d.Slot, Generation: d.Generation}
	log := a.opts.Logger.With().Int(FieldWorker, int(d.Worker)).Int(FieldSlot, d.Slot).Int(FieldGeneration, d.Generation).Logger()
	w := &workerActor{
		machine: NewWorkerMachine(spec, a.opts.Ready, a.opts.Drain, log),
		cluster: ctx.Self(), runtime: a.opts.Runtime, clock: a.opts.Clock,
	}
	pid := ctx.Spawn(actor.PropsFromProducer(func() actor.Actor { return w }, actor.WithSupervisor(stopOnPanic())))
	a.workers[d.Worker] = pid
	if a.ids == nil {
		a.ids = map[string]core.WorkerID{}
	}
	a.ids[pid.Id] = d.Worker
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
