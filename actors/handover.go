package actors

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/fsm"
)

// The handover of the actors to a new master image (docs/upgrade.md):
// Freeze brings the cluster and its workers to a consistent cut and takes
// a Snapshot; the new image starts from it with StartResumed; Thaw lets
// the old one go on should its exec fail.

// Snapshot is the cluster handed over: the core's whole state and every
// worker actor's machine, at one consistent cut (Cluster.Freeze). Plain
// JSON; decoding it (DecodeSnapshot, or json.Unmarshal, which calls it)
// reads the core's part with core.DecodeState, so a state of a newer
// format is refused.
type Snapshot struct {
	Core    core.State    `json:"core"`
	Workers []WorkerState `json:"workers"` // every worker actor alive, by ID
	// At is the instant the core was handed over at (its offsets count
	// from it): what the journal records. Its monotonic reading, if any,
	// does not survive JSON.
	At time.Time `json:"at"`
}

// WorkerState is one worker actor's machine: its lifecycle state and
// what it remembers of its process.
type WorkerState struct {
	Spec  WorkerSpec `json:"spec"`
	State fsm.State  `json:"state"`
	// PID is the process's pid, 0 before Spawned.
	PID int `json:"pid,omitempty"`
	// SpokeIPC: the worker wrote on its IPC channel (--drain auto
	// drains it over IPC). Killed: the master's SIGKILL was sent.
	SpokeIPC bool `json:"spoke_ipc,omitempty"`
	Killed   bool `json:"killed,omitempty"`
	// Ignored IPC lines, and the count at the last line that said so.
	Ignored int `json:"ignored,omitempty"`
	Logged  int `json:"logged,omitempty"`
	// Ready and Drain are the worker's ready mode and drain method (a
	// reload changes them for the workers forked after it only).
	Ready string      `json:"ready"`
	Drain DrainMethod `json:"drain"`
	// ReadyTimer is the time left of the ready mode's timer, counted from
	// the snapshot's instant (that of the core's handover); nil when none
	// is pending.
	ReadyTimer *time.Duration `json:"ready_timer,omitempty"`
}

// Reattacher is a Runtime that can take over the processes of a master
// image that handed them over: the runtime a resumed cluster runs on.
type Reattacher interface {
	// Reattach starts reporting on the handed-over worker id's process to
	// events, as Fork's events would after Spawned: IPC, Online and
	// Notify messages, then Exited.
	Reattach(id core.WorkerID, events func(msg any))
}

// DecodeSnapshot reads a snapshot strictly (an unknown field is a
// damaged state), the core's part through core.DecodeState.
func DecodeSnapshot(data []byte) (Snapshot, error) {
	var raw struct {
		Core    json.RawMessage `json:"core"`
		Workers []WorkerState   `json:"workers"`
		At      time.Time       `json:"at"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return Snapshot{}, fmt.Errorf("handover snapshot: %w", err)
	}
	if raw.Core == nil {
		return Snapshot{}, errors.New("handover snapshot: no core state")
	}
	st, err := core.DecodeState(raw.Core)
	if err != nil {
		return Snapshot{}, err
	}
	return Snapshot{Core: st, Workers: raw.Workers, At: raw.At}, nil
}

// UnmarshalJSON is DecodeSnapshot, so that a snapshot inside a larger
// state is read as strictly.
func (s *Snapshot) UnmarshalJSON(data []byte) error {
	snap, err := DecodeSnapshot(data)
	if err != nil {
		return err
	}
	*s = snap
	return nil
}

// Freeze brings the cluster to a consistent cut and returns its
// snapshot; from then on the cluster and its workers take no step: every
// message (inputs, timers, worker reports, orders, ready timers) is kept,
// in order, until Thaw. The caller pauses the runtime first, so that no
// runtime event arrives any more; events already delivered may still sit
// in the worker actors' mailboxes, and are handled before the cut.
//
// The cut is reached in rounds: the cluster asks every worker actor for a
// copy of its machine, behind whatever its mailbox holds; a round in
// which the cluster took no step (no report, no timer, no input) is the
// cut: every message a worker had was handled and its reports handled by
// the cluster, and every order the cluster sent was handled by its
// worker. Meanwhile everything is handled as usual. Views are answered
// even while frozen.
//
// Freeze waits until ctx's deadline (5 s without one); a Freeze that
// times out is undone (the cluster thaws, or stops asking). It refuses
// a cluster already frozen or freezing, and a cut with a worker being
// forked (no pid yet: a step during the rounds forked it), which leaves
// the cluster running: the caller resumes the runtime and retries.
func (c *Cluster) Freeze(ctx context.Context) (Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return Snapshot{}, fmt.Errorf("cluster freeze: %w", err)
	}
	id := c.freezes.Add(1)
	res, err := c.system.Root.RequestFuture(c.pid, freezeRequest{id}, timeoutOf(ctx)).Result()
	if err != nil {
		c.system.Root.Send(c.pid, freezeCancel{id})
		return Snapshot{}, fmt.Errorf("cluster freeze: %w", err)
	}
	r := res.(frozenReply)
	return r.snap, r.err
}

// Thaw undoes a Freeze (the exec failed): the cluster and its workers
// handle the messages they kept, in order, and go on. It does nothing to
// a cluster that is not frozen.
func (c *Cluster) Thaw() { c.system.Root.Send(c.pid, thawRequest{}) }

// Messages of the freeze.
type (
	freezeRequest struct{ id uint64 }
	freezeCancel  struct{ id uint64 }
	thawRequest   struct{}
	frozenReply   struct {
		snap Snapshot
		err  error
	}
	// flush asks a worker actor for a copy of its machine, once it has
	// handled what its mailbox held before.
	flush struct{ round int }
	// flushed is its answer: the machine's state at the worker's now.
	flushed struct {
		round int
		id    core.WorkerID
		at    time.Time
		state WorkerState
	}
	// freezeWorker and thawWorker start and end a worker's frozen mode.
	freezeWorker struct{}
	thawWorker   struct{}
)

// freezing is a Freeze under way.
type freezing struct {
	id      uint64
	asker   *actor.PID
	round   int
	steps   int // the executor's steps when the round began
	waiting map[core.WorkerID]bool
	states  map[core.WorkerID]flushed
}

// stashed is a message a frozen cluster keeps, and who sent it.
type stashed struct {
	msg    any
	sender *actor.PID
}

func (a *clusterActor) freeze(ctx actor.Context, id uint64) {
	switch {
	case a.frozen != 0:
		ctx.Respond(frozenReply{err: errors.New("cluster freeze: already frozen")})
		return
	case a.freezing != nil:
		ctx.Respond(frozenReply{err: errors.New("cluster freeze: a freeze is under way")})
		return
	}
	a.freezing = &freezing{id: id, asker: ctx.Sender()}
	a.flushRound(ctx)
}

// flushRound asks every worker actor for its machine.
func (a *clusterActor) flushRound(ctx actor.Context) {
	f := a.freezing
	a.rounds++ // numbered across freezes: an answer to a round given up is never taken
	f.round = a.rounds
	f.steps = a.exec.steps
	f.waiting = map[core.WorkerID]bool{}
	f.states = map[core.WorkerID]flushed{}
	for id, pid := range a.workers {
		f.waiting[id] = true
		ctx.Send(pid, flush{round: f.round})
	}
	a.roundDone(ctx)
}

func (a *clusterActor) flushed(ctx actor.Context, m flushed) {
	f := a.freezing
	if f == nil || m.round != f.round || !f.waiting[m.id] {
		return // an answer to a round given up
	}
	delete(f.waiting, m.id)
	f.states[m.id] = m
	a.roundDone(ctx)
}

// freezeWorkerGone: a worker actor that ended answers no more.
func (a *clusterActor) freezeWorkerGone(ctx actor.Context, id core.WorkerID) {
	if f := a.freezing; f != nil && f.waiting[id] {
		delete(f.waiting, id)
		a.roundDone(ctx)
	}
}

// roundDone, once every worker answered, starts another round if the
// cluster stepped during this one, or else takes the snapshot and
// freezes.
func (a *clusterActor) roundDone(ctx actor.Context) {
	f := a.freezing
	if len(f.waiting) > 0 {
		return
	}
	if a.exec.steps != f.steps {
		a.flushRound(ctx)
		return
	}
	a.freezing = nil
	snap, err := a.snapshot(f.states)
	if err != nil {
		ctx.Send(f.asker, frozenReply{err: err})
		return
	}
	a.frozen = f.id
	for _, pid := range a.workers {
		ctx.Send(pid, freezeWorker{})
	}
	ctx.Send(f.asker, frozenReply{snap: snap})
}

// snapshot takes the core's handover at the clock's now and the workers'
// machines, their ready timers counted from that now. The two must name
// the same workers: at a cut, a worker the core still has has an actor,
// and one whose exit the core handled has ended.
func (a *clusterActor) snapshot(states map[core.WorkerID]flushed) (Snapshot, error) {
	now := a.exec.Options().Clock.Now()
	cs, err := a.exec.Handover(now)
	if err != nil {
		return Snapshot{}, fmt.Errorf("cluster freeze: %w", err)
	}
	snap := Snapshot{Core: cs, At: now}
	for _, f := range states {
		st := f.state
		if st.PID == 0 {
			// A step during the rounds forked it (after a worker's exit,
			// say): its process is not the runtime's to hand over yet.
			return Snapshot{}, fmt.Errorf("cluster freeze: worker %s is being forked (no pid yet); retry once it runs", st.Spec.ID)
		}
		if st.ReadyTimer != nil {
			left := max(*st.ReadyTimer-now.Sub(f.at), 0)
			st.ReadyTimer = &left
		}
		snap.Workers = append(snap.Workers, st)
	}
	slices.SortFunc(snap.Workers, func(x, y WorkerState) int { return int(x.Spec.ID - y.Spec.ID) })
	if err := snap.agree(); err != nil {
		return Snapshot{}, fmt.Errorf("cluster freeze: %w", err)
	}
	return snap, nil
}

func (a *clusterActor) cancelFreeze(ctx actor.Context, id uint64) {
	switch {
	case a.freezing != nil && a.freezing.id == id:
		a.freezing = nil // late answers are ignored
	case a.frozen == id:
		a.thaw(ctx)
	}
}

// thaw leaves the frozen mode: the workers first handle what they kept,
// then the cluster handles its own, in order (an order it sends now
// reaches a worker after the worker's kept messages).
func (a *clusterActor) thaw(ctx actor.Context) {
	if a.frozen == 0 {
		return
	}
	a.frozen = 0
	for _, pid := range a.workers {
		ctx.Send(pid, thawWorker{})
	}
	stash := a.stash
	a.stash = nil
	for _, s := range stash {
		a.handle(ctx, s.msg, s.sender)
	}
}

// agree checks that the core's state and the workers' machines name the
// same workers, of the same slots and generations.
func (s Snapshot) agree() error {
	machines := map[core.WorkerID]WorkerState{}
	for _, w := range s.Workers {
		if _, dup := machines[w.Spec.ID]; dup {
			return fmt.Errorf("worker %s has two worker states", w.Spec.ID)
		}
		machines[w.Spec.ID] = w
	}
	for _, w := range s.Core.Workers {
		m, ok := machines[w.ID]
		switch {
		case !ok:
			return fmt.Errorf("worker %s is in the core's state but has no worker state", w.ID)
		case m.Spec.Slot != w.Slot || m.Spec.Generation != w.Generation:
			return fmt.Errorf("worker %s: the core has it in slot %d of generation %d, its worker state in slot %d of generation %d",
				w.ID, w.Slot, w.Generation, m.Spec.Slot, m.Spec.Generation)
		}
		delete(machines, w.ID)
	}
	for id := range machines {
		return fmt.Errorf("worker %s has a worker state but is not in the core's state", id)
	}
	return nil
}

// handedOver is what a resumed executor carries out at Start.
type handedOver struct {
	machines []*WorkerMachine
	timers   []core.Decision // SetTimer, earliest first
}

// NewResumedExecutor returns an executor for the cluster handed over in
// opts.Resume: the core resumed at the clock's now (core.Resume, which
// refuses a configuration other than the one handed over), and a machine
// per handed-over worker, restored at its state. Its Start hands the
// machines to the host (ClusterHost.ResumeWorker) and sets the pending
// timers. It refuses a runtime that is no Reattacher, and a snapshot
// whose core and workers disagree.
func NewResumedExecutor(opts Options) (*Executor, error) {
	snap := opts.Resume
	if snap == nil {
		return nil, errors.New("resume: no snapshot (Options.Resume)")
	}
	e := NewExecutor(opts)
	if _, ok := e.opts.Runtime.(Reattacher); !ok {
		return nil, fmt.Errorf("resume: the runtime (%T) cannot reattach handed-over workers", e.opts.Runtime)
	}
	if err := snap.agree(); err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	now := e.opts.Clock.Now()
	c, timers, err := core.Resume(e.opts.Core, snap.Core, now)
	if err != nil {
		return nil, err
	}
	if e.opts.Resumed != nil {
		e.opts.Resumed(now, timers)
	}
	e.core = c
	e.handed = &handedOver{timers: timers}
	for _, st := range snap.Workers {
		m, err := restoreMachine(st, e.workerLog(st.Spec))
		if err != nil {
			return nil, fmt.Errorf("resume: worker %s: %w", st.Spec.ID, err)
		}
		e.handed.machines = append(e.handed.machines, m)
	}
	return e, nil
}

// Handover is the machine's state for a new master image, its ready
// timer's time left counted from now.
func (m *WorkerMachine) Handover(now time.Time) WorkerState {
	drain := m.drain
	if drain == "" {
		drain = DrainAuto // as it resolves
	}
	st := WorkerState{
		Spec: m.Spec, State: m.State(), PID: m.pid, SpokeIPC: m.spokeIPC, Killed: m.killed,
		Ignored: m.ignored, Logged: m.logged, Ready: m.ready.String(), Drain: drain,
	}
	if !m.readyDue.IsZero() {
		left := max(m.readyDue.Sub(now), 0)
		st.ReadyTimer = &left
	}
	return st
}

// restoreMachine rebuilds a handed-over worker's machine; log is the
// machine's logger without the pid, which is added.
func restoreMachine(st WorkerState, log zerolog.Logger) (*WorkerMachine, error) {
	life, err := fsm.Restore(st.State)
	if err != nil {
		return nil, err
	}
	ready, err := ParseReadyMode(st.Ready)
	if err != nil {
		return nil, err
	}
	drain, err := ParseDrainMethod(string(st.Drain))
	if err != nil {
		return nil, err
	}
	if st.Ignored < 0 || st.Logged < 0 || st.Logged > st.Ignored {
		return nil, fmt.Errorf("ignored lines %d, logged %d", st.Ignored, st.Logged)
	}
	if st.PID <= 0 {
		return nil, fmt.Errorf("pid %d: a worker handed over runs", st.PID)
	}
	log = log.With().Int(FieldPID, st.PID).Logger()
	m := &WorkerMachine{
		Spec: st.Spec, life: life, log: log, ready: ready, drain: drain, spokeIPC: st.SpokeIPC, killed: st.Killed,
		pid: st.PID, ignored: st.Ignored, logged: st.Logged,
	}
	if st.ReadyTimer != nil {
		left := max(*st.ReadyTimer, 0)
		m.readyLeft = &left
	}
	return m, nil
}
