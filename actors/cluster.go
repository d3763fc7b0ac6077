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
	c := &Cluster{system: system, done: make(chan struct{})}
	props := actor.PropsFromProducer(func() actor.Actor {
		return &clusterActor{exec: NewExecutor(opts), done: c.done, workers: map[core.WorkerID]*actor.PID{}}
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
	exec    *Executor
	done    chan struct{}
	workers map[core.WorkerID]*actor.PID
	ids     map[string]core.WorkerID
}

func (a *clusterActor) Receive(ctx actor.Context) {
	h := actorHost{a: a, ctx: ctx, self: ctx.Self(), system: ctx.ActorSystem()}
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		a.exec.Start(h)
	case Reconfigure:
		a.exec.Reconfigure(msg, h)
	case core.Input:
		a.exec.Step(msg, h)
	case askRequest:
		// Step fills a restart's target as for a sent one.
		ctx.Respond(a.exec.Step(msg.in, h))
	case viewRequest:
		ctx.Respond(a.exec.View())
	case *actor.Terminated:
		if id, ok := a.ids[msg.Who.Id]; ok {
			delete(a.ids, msg.Who.Id)
			ctx.Send(ctx.Self(), workerGone{id})
		}
	case workerGone:
		a.workerGone(h, msg.id)
	}
}

// workerGone handles a worker actor that stopped without reporting its
// process's exit: it failed. Its process may still run, so it is killed,
// and the cluster treats the worker as exited.
func (a *clusterActor) workerGone(h actorHost, id core.WorkerID) {
	delete(a.workers, id)
	if _, ok := a.exec.Worker(id); ok {
		a.exec.Options().Runtime.Kill(id)
		a.exec.Step(core.WorkerExited{Worker: id, Reason: fsm.ExitReason{Kind: fsm.ExitHardKill, Detail: "worker actor failed"}}, h)
	}
}

// actorHost carries the executor's decisions out as actor messages: a
// worker actor per worker, orders to its mailbox, timers to the cluster
// actor's own.
type actorHost struct {
	a   *clusterActor
	ctx actor.Context // valid during the Receive that made the host
	// self and system outlive that Receive: timers fire after it.
	self   *actor.PID
	system *actor.ActorSystem
}

func (h actorHost) StartWorker(m *WorkerMachine) {
	opts := h.a.exec.Options()
	w := &workerActor{machine: m, cluster: h.ctx.Self(), runtime: opts.Runtime, clock: opts.Clock}
	pid := h.ctx.Spawn(actor.PropsFromProducer(func() actor.Actor { return w }, actor.WithSupervisor(stopOnPanic())))
	h.a.workers[m.Spec.ID] = pid
	if h.a.ids == nil {
		h.a.ids = map[string]core.WorkerID{}
	}
	h.a.ids[pid.Id] = m.Spec.ID
}

func (h actorHost) Order(id core.WorkerID, order any) {
	if pid, ok := h.a.workers[id]; ok {
		h.ctx.Send(pid, order)
	}
}

func (h actorHost) FireTimer(t core.Timer) { h.system.Root.Send(h.self, core.TimerFired{Timer: t}) }

func (h actorHost) Stopped() { close(h.a.done) }
