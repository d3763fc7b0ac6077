package scenarios

import (
	"fmt"
	"sort"
	"sync"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/sockets/wire"
)

// ScriptedRuntime stands in for the OS: it records what the worker actors
// ask of it and delivers only the events the scenario scripts. It also
// keeps the truth about each process (has it said ready, was it asked to
// stop), which the invariant is checked against.
type ScriptedRuntime struct {
	mu        sync.Mutex
	procs     map[core.WorkerID]*Process
	calls     []string
	failForks []string // reasons for the next forks to fail, in order
	pending   []pendingEvent
	check     func(p *Process, what string) // called on every drain or kill of a process, under mu
	onServing func()                        // called when a process starts serving, under mu
}

// Process is the scripted truth about one worker process.
type Process struct {
	Spec     actors.WorkerSpec
	PID      int
	Ready    bool // it said ready in a way the ready mode accepts
	Stopping bool // it was asked to drain or was killed
	Exited   bool
	// Hung: the cluster found it hung (its watchdog); it serves no more.
	Hung   bool
	events func(any)
}

// Serving reports whether the process accepts connections: ready and not
// asked to stop.
func (p *Process) Serving() bool { return p.Ready && !p.Stopping && !p.Exited && !p.Hung }

type pendingEvent struct {
	id  core.WorkerID
	msg any
}

// NewScriptedRuntime returns an empty runtime.
func NewScriptedRuntime() *ScriptedRuntime {
	return &ScriptedRuntime{procs: map[core.WorkerID]*Process{}}
}

// PIDBase is added to a worker's ID to make its scripted pid.
const PIDBase = 1000

// Fork records the worker; its Spawned (or ForkFailed) is delivered by
// the harness, in worker order, once the actors are idle.
func (r *ScriptedRuntime) Fork(spec actors.WorkerSpec, events func(any)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := &Process{Spec: spec, events: events}
	r.procs[spec.ID] = p
	if len(r.failForks) > 0 {
		reason := r.failForks[0]
		r.failForks = r.failForks[1:]
		p.Exited = true
		r.pending = append(r.pending, pendingEvent{spec.ID, actors.ForkFailed{Err: reason}})
		return
	}
	p.PID = PIDBase + int(spec.ID)
	r.pending = append(r.pending, pendingEvent{spec.ID, actors.Spawned{PID: p.PID}})
}

// Adopt makes the runtime know the processes another runtime ran, as a
// new master image's runtime takes over those of the image it replaced:
// every process not exited, with no one to report to until Reattach.
func (r *ScriptedRuntime) Adopt(procs []Process) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range procs {
		if !p.Exited {
			p.events = nil
			r.procs[p.Spec.ID] = &p
		}
	}
}

// Reattach records the call; the adopted process reports to events from
// then on (actors.Reattacher).
func (r *ScriptedRuntime) Reattach(id core.WorkerID, events func(any)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.procs[id]
	if p == nil {
		r.calls = append(r.calls, fmt.Sprintf("reattach %s: unknown", id))
		return
	}
	r.calls = append(r.calls, fmt.Sprintf("reattach %s", id))
	p.events = events
}

// Drain records the order; the process exits only when the scenario says.
func (r *ScriptedRuntime) Drain(id core.WorkerID, how actors.DrainMethod) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf("drain %s via=%s", id, how))
	r.stopping(id, "drain")
}

// Kill records the order; the process's exit by SIGKILL is delivered by
// the harness once the actors are idle.
func (r *ScriptedRuntime) Kill(id core.WorkerID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf("kill %s", id))
	r.stopping(id, "kill")
	if p := r.procs[id]; p != nil && !p.Exited {
		r.pending = append(r.pending, pendingEvent{id, actors.Exited{Signal: 9, Killed: true}})
	}
}

func (r *ScriptedRuntime) stopping(id core.WorkerID, what string) {
	p := r.procs[id]
	if p == nil {
		return
	}
	if r.check != nil {
		r.check(p, what)
	}
	p.Stopping = true
}

// Abort records the order; the process exits only when the scenario
// says (with signal=SIGABRT, say), or is killed at the abort timeout.
func (r *ScriptedRuntime) Abort(id core.WorkerID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf("abort %s", id))
	r.stopping(id, "abort")
}

// takePending returns the events the runtime owes the actors, in worker
// order, and forgets them.
func (r *ScriptedRuntime) takePending() []pendingEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.pending
	r.pending = nil
	sort.SliceStable(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// takeCalls returns the recorded drain and kill calls, sorted so that
// calls made by different worker actors at once print in a stable order.
func (r *ScriptedRuntime) takeCalls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.calls
	r.calls = nil
	sort.Strings(out)
	return out
}

// deliver sends msg to the worker's actor and applies it to the truth.
func (r *ScriptedRuntime) deliver(id core.WorkerID, msg any, mode actors.ReadyMode) error {
	r.mu.Lock()
	p := r.procs[id]
	if p == nil {
		r.mu.Unlock()
		return fmt.Errorf("no worker %s", id)
	}
	if p.events == nil {
		r.mu.Unlock()
		return fmt.Errorf("worker %s: adopted, not reattached", id)
	}
	switch m := msg.(type) {
	case actors.Exited:
		if p.Exited {
			r.mu.Unlock()
			return fmt.Errorf("worker %s has already exited", id)
		}
		p.Exited = true
	case actors.IPC:
		if wire.Classify(m.Line).Kind == wire.KindReady && mode.Accepts(actors.ReadyIPC) {
			r.markServing(p)
		}
	case actors.Notify:
		if wire.ParseNotify(m.Payload).Ready() && mode.Accepts(actors.ReadyNotify) {
			r.markServing(p)
		}
	}
	events := p.events
	r.mu.Unlock()
	events(msg)
	return nil
}

// markReady records timer readiness, which no message carries.
func (r *ScriptedRuntime) markReady(id core.WorkerID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.procs[id]; p != nil && !p.Exited {
		r.markServing(p)
	}
}

func (r *ScriptedRuntime) markServing(p *Process) {
	p.Ready = true
	if r.onServing != nil {
		r.onServing()
	}
}

// Processes returns a copy of the truth, in worker order.
func (r *ScriptedRuntime) Processes() []Process {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Process
	for _, p := range r.procs {
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Spec.ID < out[j].Spec.ID })
	return out
}

func (r *ScriptedRuntime) servingLocked() int {
	n := 0
	for _, p := range r.procs {
		if p.Serving() {
			n++
		}
	}
	return n
}
