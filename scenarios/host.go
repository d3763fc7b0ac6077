package scenarios

import (
	"context"
	"fmt"
	"maps"
	"slices"
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

// NewResumedActorHost starts a cluster actor handed over in opts.Resume
// (actors.StartResumed).
func NewResumedActorHost(system *actor.ActorSystem, opts actors.Options) (*ActorHost, error) {
	c, err := actors.StartResumed(system, opts)
	if err != nil {
		return nil, err
	}
	return &ActorHost{Cluster: c}, nil
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

// SyncHost runs the cluster's Executor and one actors.WorkerMachine per
// worker the way the actors do, with one FIFO queue standing in for the
// mailboxes. It shares the executor with the cluster actor, so the two
// hosts differ only in how a message reaches its mailbox.
type SyncHost struct {
	exec     *actors.Executor
	opts     actors.Options
	machines map[core.WorkerID]*actors.WorkerMachine
	queue    []envelope
	stopped  bool
}

type envelope struct {
	to  core.WorkerID // 0: the cluster
	msg any
}

// NewSyncHost starts a cluster on the caller's goroutine.
func NewSyncHost(opts actors.Options) *SyncHost {
	exec := actors.NewExecutor(opts)
	h := &SyncHost{exec: exec, opts: exec.Options(), machines: map[core.WorkerID]*actors.WorkerMachine{}}
	exec.Start(h)
	return h
}

// NewResumedSyncHost starts a cluster handed over in opts.Resume
// (actors.NewResumedExecutor) on the caller's goroutine.
func NewResumedSyncHost(opts actors.Options) (*SyncHost, error) {
	exec, err := actors.NewResumedExecutor(opts)
	if err != nil {
		return nil, err
	}
	h := &SyncHost{exec: exec, opts: exec.Options(), machines: map[core.WorkerID]*actors.WorkerMachine{}}
	exec.Start(h)
	return h, nil
}

// Snapshot is the cluster handed over once every queued message is
// handled, which is the synchronous host's cut: the core's state and
// every worker's machine, at the clock's now.
func (h *SyncHost) Snapshot() (actors.Snapshot, error) {
	h.Idle()
	now := h.opts.Clock.Now()
	st, err := h.exec.Handover(now)
	if err != nil {
		return actors.Snapshot{}, err
	}
	snap := actors.Snapshot{Core: st}
	for _, id := range slices.Sorted(maps.Keys(h.machines)) {
		snap.Workers = append(snap.Workers, h.machines[id].Handover(now))
	}
	return snap, nil
}

func (h *SyncHost) Send(in core.Input) { h.queue = append(h.queue, envelope{0, in}) }
func (h *SyncHost) View() core.View    { return h.exec.View() }
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
			h.exec.Step(e.msg.(core.Input), h)
			continue
		}
		if m := h.machines[e.to]; m != nil {
			m.Apply(e.msg, h.opts.Runtime, h.opts.Clock, workerQueue{h, e.to})
		}
	}
}

// The actors.ClusterHost side: every message goes to the queue.

func (h *SyncHost) StartWorker(m *actors.WorkerMachine) {
	id := m.Spec.ID
	h.machines[id] = m
	h.opts.Runtime.Fork(m.Spec, func(msg any) { h.queue = append(h.queue, envelope{id, msg}) })
}

func (h *SyncHost) ResumeWorker(m *actors.WorkerMachine) {
	id := m.Spec.ID
	h.machines[id] = m
	h.opts.Runtime.(actors.Reattacher).Reattach(id, func(msg any) { h.queue = append(h.queue, envelope{id, msg}) })
	m.Apply(actors.Reattached{}, h.opts.Runtime, h.opts.Clock, workerQueue{h, id})
}

func (h *SyncHost) Order(id core.WorkerID, order any) { h.queue = append(h.queue, envelope{id, order}) }
func (h *SyncHost) FireTimer(t core.Timer)            { h.Send(core.TimerFired{Timer: t}) }
func (h *SyncHost) Stopped()                          { h.stopped = true }

// workerQueue is one worker's actors.WorkerHost on the queue.
type workerQueue struct {
	h  *SyncHost
	id core.WorkerID
}

func (q workerQueue) Report(in core.Input) { q.h.Send(in) }
func (q workerQueue) Deliver(msg any)      { q.h.queue = append(q.h.queue, envelope{q.id, msg}) }
func (q workerQueue) Finished()            { delete(q.h.machines, q.id) }
