package actors

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
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
	// Resume, if set, is the cluster handed over by the previous master
	// image (Cluster.Freeze): StartResumed restores it instead of forking
	// a first generation. Core must be the configuration handed over,
	// and Runtime a Reattacher that knows every handed-over worker.
	Resume *Snapshot
	// Resumed, if set, is told the instant the core resumed at and the
	// timers its resume set again (for the journal), before any step.
	Resumed func(now time.Time, timers []core.Decision)
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
	system  *actor.ActorSystem
	pid     *actor.PID
	done    chan struct{}
	freezes atomic.Uint64 // numbers each Freeze, so that a late cancel names its own
}

// Start spawns the cluster actor, which forks the first generation. A
// cluster handed over (Options.Resume) is started by StartResumed, which
// can refuse it; Start panics if Resume is set.
func Start(system *actor.ActorSystem, opts Options) *Cluster {
	if opts.Resume != nil {
		panic("actors.Start: Options.Resume is set; StartResumed restores a handed-over cluster")
	}
	return spawnCluster(system, NewExecutor(opts))
}

// StartResumed spawns the cluster actor of a cluster handed over by the
// previous master image (Options.Resume): the core resumed from the
// snapshot, its pending timers set again, and one worker actor per
// handed-over worker, which reattaches its process (Reattacher) instead
// of forking one. It refuses, before spawning anything, a snapshot that
// NewResumedExecutor refuses.
func StartResumed(system *actor.ActorSystem, opts Options) (*Cluster, error) {
	exec, err := NewResumedExecutor(opts)
	if err != nil {
		return nil, err
	}
	return spawnCluster(system, exec), nil
}

func spawnCluster(system *actor.ActorSystem, exec *Executor) *Cluster {
	c := &Cluster{system: system, done: make(chan struct{})}
	props := actor.PropsFromProducer(func() actor.Actor {
		return &clusterActor{exec: exec, done: c.done, workers: map[core.WorkerID]*actor.PID{}}
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
	res, err := c.system.Root.RequestFuture(c.pid, viewRequest{}, timeoutOf(ctx)).Result()
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
	res, err := c.system.Root.RequestFuture(c.pid, askRequest{in}, timeoutOf(ctx)).Result()
	if err != nil {
		return nil, fmt.Errorf("cluster: %T: %w", in, err)
	}
	return res.([]core.Decision), nil
}

// timeoutOf is how long a request to the cluster actor may wait: until
// ctx's deadline, or 5 s. A deadline already passed gives 0, which times
// out at once (protoactor waits forever on a negative timeout).
func timeoutOf(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(time.Until(dl), 0)
	}
	return 5 * time.Second
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
	// freezing is the Freeze under way, if one is; frozen is the number
	// of the Freeze that froze the cluster (0: not frozen), and stash
	// the messages kept meanwhile, in order (handover.go).
	freezing *freezing
	rounds   int
	frozen   uint64
	stash    []stashed
}

func (a *clusterActor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		a.exec.Start(a.host(ctx))
	case viewRequest:
		// A view changes nothing: answered even while frozen.
		ctx.Respond(a.exec.View())
	case *actor.Terminated:
		if id, ok := a.ids[msg.Who.Id]; ok {
			delete(a.ids, msg.Who.Id)
			ctx.Send(ctx.Self(), workerGone{id})
		}
	case freezeRequest:
		a.freeze(ctx, msg.id)
	case flushed:
		a.flushed(ctx, msg)
	case freezeCancel:
		a.cancelFreeze(ctx, msg.id)
	case thawRequest:
		a.thaw(ctx)
	default:
		if a.frozen != 0 && !isLifecycle(msg) {
			a.stash = append(a.stash, stashed{msg, ctx.Sender()})
			return
		}
		a.handle(ctx, msg, ctx.Sender())
	}
}

// handle handles a message that a frozen cluster keeps (an input, a
// reconfiguration, a worker's end); sender is who sent it.
func (a *clusterActor) handle(ctx actor.Context, msg any, sender *actor.PID) {
	h := a.host(ctx)
	switch msg := msg.(type) {
	case Reconfigure:
		a.exec.Reconfigure(msg, h)
	case core.Input:
		a.exec.Step(msg, h)
	case askRequest:
		// Step fills a restart's target as for a sent one.
		out := a.exec.Step(msg.in, h)
		if sender != nil {
			ctx.Send(sender, out)
		}
	case workerGone:
		a.workerGone(h, msg.id)
		a.freezeWorkerGone(ctx, msg.id)
	}
}

func (a *clusterActor) host(ctx actor.Context) actorHost {
	return actorHost{a: a, ctx: ctx, self: ctx.Self(), system: ctx.ActorSystem()}
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

func (h actorHost) StartWorker(m *WorkerMachine) { h.spawnWorker(m, false) }

func (h actorHost) ResumeWorker(m *WorkerMachine) { h.spawnWorker(m, true) }

func (h actorHost) spawnWorker(m *WorkerMachine, handedOver bool) {
	opts := h.a.exec.Options()
	w := &workerActor{machine: m, cluster: h.ctx.Self(), runtime: opts.Runtime, clock: opts.Clock, handedOver: handedOver}
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
