// Package fsm is the lifecycle of one worker process, as one transition
// table:
//
//	forking ──ready──▶ listening ──drain──▶ draining ──exit──▶ killed
//	   │                   │                                    ▲
//	   └──drain────────────┼──────────────▶ draining            │
//	   └──exit─────────────┴────────────────────────────────────┘
//
// A worker is forking from the moment it is asked for until it reports
// ready; listening while it serves; draining from the moment it is asked to
// stop (gracefully or not) until its process is gone; killed once the
// process has exited, whatever ended it. killed is terminal and keeps the
// reason. Events that the table does not allow in the current state are
// returned as errors; nothing here panics.
package fsm

import (
	"context"
	"errors"
	"fmt"

	lfsm "github.com/looplab/fsm"
)

// State is where a worker is in its life.
type State string

// The states of a worker, in the order a worker passes through them.
const (
	Forking   State = "forking"
	Listening State = "listening"
	Draining  State = "draining"
	Killed    State = "killed"
)

// Event moves a worker from one state to the next.
type Event string

// The events of the table.
const (
	// Ready: the worker reported that it accepts connections.
	Ready Event = "ready"
	// Drain: the worker was asked to stop (gracefully or by force).
	Drain Event = "drain"
	// Exit: the worker's process is gone.
	Exit Event = "exit"
)

// Transitions is the whole lifecycle. It is the only place where the
// allowed moves are written down; docs/architecture.md shows it as a
// picture generated from this table.
var Transitions = lfsm.Events{
	{Name: string(Ready), Src: []string{string(Forking)}, Dst: string(Listening)},
	{Name: string(Drain), Src: []string{string(Forking), string(Listening)}, Dst: string(Draining)},
	{Name: string(Exit), Src: []string{string(Forking), string(Listening), string(Draining)}, Dst: string(Killed)},
}

// moves is Transitions as a lookup, for Next: the state each event leads
// to from each state it is allowed in.
var moves = func() map[State]map[Event]State {
	m := map[State]map[Event]State{}
	for _, t := range Transitions {
		for _, src := range t.Src {
			if m[State(src)] == nil {
				m[State(src)] = map[Event]State{}
			}
			m[State(src)][Event(t.Name)] = State(t.Dst)
		}
	}
	return m
}()

// Next is the state that e leads to from a worker in state from, by the
// table; an error wrapping ErrInvalidEvent when the table does not allow
// e there. It is the check for code that keeps a worker's state as a
// plain value (the core's view of the cluster) rather than in a
// Lifecycle: every change of such a state goes through Next.
func Next(from State, e Event) (State, error) {
	to, ok := moves[from][e]
	if !ok {
		return from, fmt.Errorf("%w: %s in %s", ErrInvalidEvent, e, from)
	}
	return to, nil
}

// Reachable reports whether the table leads from one state to another in
// one or more moves. Observers that see a worker's state only now and
// then (a view after each step) check its changes with it.
func Reachable(from, to State) bool {
	seen := map[State]bool{from: true}
	next := []State{from}
	for len(next) > 0 {
		s := next[0]
		next = next[1:]
		for _, dst := range moves[s] {
			if dst == to {
				return true
			}
			if !seen[dst] {
				seen[dst] = true
				next = append(next, dst)
			}
		}
	}
	return false
}

// ErrInvalidEvent is wrapped by every error for an event that the table
// does not allow in the current state.
var ErrInvalidEvent = errors.New("fsm: event not allowed in this state")

// Lifecycle is one worker's state machine. It is not safe for concurrent
// use: the worker actor that owns it is its only user.
type Lifecycle struct {
	machine *lfsm.FSM
	reason  ExitReason
}

// New returns a lifecycle in the forking state.
func New() *Lifecycle {
	return &Lifecycle{machine: newMachine(Forking)}
}

// Restore returns a lifecycle in state s, as a worker handed over by
// another master image left it, without any event: the moves from s are
// still the table's. It refuses a state the table has no move from
// (killed, which would lose its exit reason, or a name it does not
// know): a handed-over worker is one that still runs.
func Restore(s State) (*Lifecycle, error) {
	if len(moves[s]) == 0 {
		return nil, fmt.Errorf("fsm: cannot restore a worker in state %q: not a state a running worker is in", s)
	}
	return &Lifecycle{machine: newMachine(s)}, nil
}

func newMachine(initial State) *lfsm.FSM {
	// No callbacks: effects are computed by the caller from the returned
	// transition, which keeps the table free of hidden behaviour.
	return lfsm.NewFSM(string(initial), Transitions, nil)
}

// State is the current state.
func (l *Lifecycle) State() State { return State(l.machine.Current()) }

// Reason says why the worker is killed; zero until it is.
func (l *Lifecycle) Reason() ExitReason { return l.reason }

// Transition is one move of the table.
type Transition struct {
	From, To State
	Event    Event
}

func (t Transition) String() string {
	return fmt.Sprintf("%s -%s-> %s", t.From, t.Event, t.To)
}

// Ready marks the worker as accepting connections.
func (l *Lifecycle) Ready() (Transition, error) { return l.fire(Ready) }

// Drain marks the worker as asked to stop.
func (l *Lifecycle) Drain() (Transition, error) { return l.fire(Drain) }

// Exit marks the worker's process as gone, keeping why.
func (l *Lifecycle) Exit(reason ExitReason) (Transition, error) {
	t, err := l.fire(Exit)
	if err == nil {
		l.reason = reason
	}
	return t, err
}

func (l *Lifecycle) fire(e Event) (Transition, error) {
	from := l.State()
	if err := l.machine.Event(context.Background(), string(e)); err != nil {
		return Transition{}, fmt.Errorf("%w: %s in %s (%v)", ErrInvalidEvent, e, from, err)
	}
	return Transition{From: from, To: l.State(), Event: e}, nil
}

// Can reports whether e is allowed in the current state.
func (l *Lifecycle) Can(e Event) bool { return l.machine.Can(string(e)) }

// Live reports whether the state is one in which the worker serves or is
// about to: forking or listening, not on its way out.
func (s State) Live() bool { return s == Forking || s == Listening }
