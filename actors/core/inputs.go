package core

import "github.com/dutchmaster/dutchmaster/fsm"

// Input is anything that can happen to the cluster. Every input is a
// plain value, so a sequence of them can be recorded and replayed.
type Input interface{ isInput() }

// Start forks the first generation.
type Start struct{ Target int }

// RestartRequested asks for a rolling restart of every worker (the restart
// signal, a control command). Target, when positive, is the worker count
// re-evaluated for this rollout.
type RestartRequested struct {
	Source string
	Target int
}

// WorkerRestartRequested: a worker asked for its own replacement.
type WorkerRestartRequested struct{ Worker WorkerID }

// ReplaceWorker asks for the replacement of one worker (`ctl restart w3`),
// under the rollout's invariant, as the worker's own request would. It
// is refused when the worker is unknown or does not listen, or the
// cluster stops. Source says who asked.
type ReplaceWorker struct {
	Worker WorkerID
	Source string
}

// StopRequested asks for a graceful stop; a second one kills.
type StopRequested struct{ Source string }

// ScaleBy adds (positive) or removes (negative) workers at runtime;
// removing drains the oldest.
type ScaleBy struct {
	Delta  int
	Source string
}

// ScaleTo sets the worker count at runtime.
type ScaleTo struct {
	Target int
	Source string
}

// Reconfigure replaces the configuration (a re-read config file); it
// applies from the next decision on.
type Reconfigure struct{ Config Config }

// WorkerSpawned: the worker's process exists.
type WorkerSpawned struct {
	Worker WorkerID
	PID    int
}

// WorkerListening: the worker reported ready.
type WorkerListening struct{ Worker WorkerID }

// WorkerDraining: the worker acknowledged a drain or kill order.
type WorkerDraining struct{ Worker WorkerID }

// WorkerExited: the worker's process is gone (or never started).
type WorkerExited struct {
	Worker WorkerID
	Reason fsm.ExitReason
}

// TimerFired: a timer set by a SetTimer decision went off.
type TimerFired struct{ Timer Timer }

func (Start) isInput()                  {}
func (RestartRequested) isInput()       {}
func (WorkerRestartRequested) isInput() {}
func (ReplaceWorker) isInput()          {}
func (StopRequested) isInput()          {}
func (ScaleBy) isInput()                {}
func (ScaleTo) isInput()                {}
func (Reconfigure) isInput()            {}
func (WorkerSpawned) isInput()          {}
func (WorkerListening) isInput()        {}
func (WorkerDraining) isInput()         {}
func (WorkerExited) isInput()           {}
func (TimerFired) isInput()             {}
