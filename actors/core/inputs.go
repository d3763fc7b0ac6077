package core

import (
	"time"

	"github.com/dutchmaster/dutchmaster/fsm"
)

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

// WorkerRestartRequested: a worker asked for its own replacement. Reason
// "max-requests" (RecycleRequests) makes it a recycle, paced as the
// others; any other is replaced at once.
type WorkerRestartRequested struct {
	Worker WorkerID
	Reason string
}

// WorkerHeartbeat: the worker proved it is alive (WATCHDOG=1 on the
// notify socket, {"event":"heartbeat"} on its IPC channel).
type WorkerHeartbeat struct{ Worker WorkerID }

// WatchdogTriggered: the worker said it is broken (WATCHDOG=trigger):
// it is treated as one that missed its watchdog.
type WatchdogTriggered struct{ Worker WorkerID }

// ReadyTimeoutExtended: a booting worker asked for more time
// (EXTEND_TIMEOUT_USEC): its ready timeout ends no sooner than By from
// now, and never before the configured one.
type ReadyTimeoutExtended struct {
	Worker WorkerID
	By     time.Duration
}

// UsageSampled: the resident memory of the workers' processes, sampled
// at once.
type UsageSampled struct{ Samples []RSSSample }

// RSSSample is one worker's resident memory, bytes.
type RSSSample struct {
	Worker WorkerID
	RSS    int64
}

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
func (WorkerHeartbeat) isInput()        {}
func (WatchdogTriggered) isInput()      {}
func (ReadyTimeoutExtended) isInput()   {}
func (UsageSampled) isInput()           {}
