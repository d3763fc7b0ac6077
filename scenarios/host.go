package scenarios

import (
	"context"
	"fmt"
	"testing/synctest"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
)

// Host runs the cluster's logic over the scripted runtime and clock.
// ActorHost is the real actor system; SyncHost runs the same core and
// worker machines on the caller's goroutine, for the bulk of the
// generated sequences, where an actor system per sequence would be slow.
type Host interface {
	// Send delivers an input from outside (a signal, a control command).
	Send(in core.Input)
	// Idle returns once every message sent so far has been handled.
	Idle()
	// View is the cluster's state.
	View() core.View
	// Close releases the host.
	Close()
}

// ActorHost runs a cluster actor on an actor system. Idle relies on
// synctest.Wait, so it must be used inside a synctest bubble.
type ActorHost struct {
	Cluster *actors.Cluster
}

// NewActorHost starts a cluster actor on system.
func NewActorHost(system *actor.ActorSystem, opts actors.Options) *ActorHost {
	return &ActorHost{Cluster: actors.Start(system, opts)}
}

func (h *ActorHost) Send(in core.Input) { h.Cluster.Send(in) }
func (h *ActorHost) Idle()              { synctest.Wait() }
func (h *ActorHost) Close()             { h.Cluster.Shutdown(); synctest.Wait() }

func (h *ActorHost) View() core.View {
	v, err := h.Cluster.View(context.Background())
	if err != nil {
		panic(err) // inside a bubble the cluster actor always answers
	}
	return v
}

// SyncHost hosts core.Cluster and one actors.WorkerMachine per worker the
// way the actors do, with one FIFO queue standing in for the mailboxes.
type SyncHost struct {
	opts     actors.Options
	core     *core.Cluster
	machines map[core.WorkerID]*actors.WorkerMachine
	queue    []envelope
	stopped  bool
	timers   *actors.WorkerTimers
}

type envelope struct {
	to  core.WorkerID // 0: the cluster
	msg any
}

// NewSyncHost starts a cluster on the caller's goroutine.
func NewSyncHost(opts actors.Options) *SyncHost {
	h := &SyncHost{opts: opts, core: core.New(opts.Core), machines: map[core.WorkerID]*actors.WorkerMachine{},
		timers: actors.NewWorkerTimers(opts.Clock)}
	h.Send(core.Start{Target: opts.Workers()})
	return h
}

func (h *SyncHost) Send(in core.Input) { h.queue = append(h.queue, envelope{0, in}) }
func (h *SyncHost) View() core.View    { return h.core.View() }
func (h *SyncHost) Close()             {}

// maxMessages bounds one Idle: a cluster that keeps talking to itself
// without any input is a bug, reported instead of spinning.
const maxMessages = 100000

func (h *SyncHost) Idle() {
	for n := 0; len(h.queue) > 0; n++ {
		if n == maxMessages {
			panic(fmt.Sprintf("SyncHost: %d messages without an input from outside; next: %T %+v", n, h.queue[0].msg, h.queue[0].msg))
		}
		e := h.queue[0]
		h.queue = h.queue[1:]
		if e.to == 0 {
			h.step(e.msg.(core.Input))
			continue
		}
		if m := h.machines[e.to]; m != nil {
			h.workerEffects(m, m.Handle(e.msg))
		}
	}
}

func (h *SyncHost) step(in core.Input) {
	if r, ok := in.(core.RestartRequested); ok && r.Target == 0 {
		r.Target = h.opts.Workers()
		in = r
	}
	now := h.opts.Clock.Now()
	out := h.core.Step(now, in)
	if h.opts.Observe != nil {
		h.opts.Observe(now, in, out)
	}
	h.timers.Stepped(in)
	for _, d := range out {
		switch d := d.(type) {
		case core.Note:
			actors.LogNote(h.opts.Logger, d)
		case core.Drain, core.Kill, core.RolloutStarted, core.RolloutEnded:
			h.opts.Logger.Debug().Str("decision", fmt.Sprintf("%T %+v", d, d)).Msg("decision")
		}
		switch d := d.(type) {
		case core.Fork:
			spec := actors.WorkerSpec{ID: d.Worker, Slot: d.Slot, Generation: d.Generation}
			h.machines[d.Worker] = actors.NewWorkerMachine(spec, h.opts.Ready, h.opts.Drain, h.opts.Logger)
			h.opts.Runtime.Fork(spec, func(msg any) { h.queue = append(h.queue, envelope{d.Worker, msg}) })
		case core.Drain:
			h.queue = append(h.queue, envelope{d.Worker, actors.DrainOrder{Reason: d.Reason}})
		case core.Kill:
			h.queue = append(h.queue, envelope{d.Worker, actors.KillOrder{Reason: d.Reason}})
		case core.SetTimer:
			h.timers.Set(d, func(t core.Timer) { h.Send(core.TimerFired{Timer: t}) })
		case core.Stopped:
			h.stopped = true
		}
	}
}

func (h *SyncHost) workerEffects(m *actors.WorkerMachine, effects []any) {
	id := m.Spec.ID
	for _, e := range effects {
		switch e := e.(type) {
		case core.Input:
			h.Send(e)
		case actors.RuntimeDrain:
			h.opts.Runtime.Drain(id, e.How)
		case actors.RuntimeKill:
			h.opts.Runtime.Kill(id)
		case actors.StartReadyTimer:
			h.opts.Clock.AfterFunc(e.After, func() { h.queue = append(h.queue, envelope{id, actors.ReadyTimerFired{}}) })
		case actors.Finished:
			delete(h.machines, id)
		}
	}
}
