package core

import (
	"time"

	"github.com/rs/zerolog"
)

// Decision is something the cluster actor must do.
type Decision interface{ isDecision() }

// Fork starts a new worker.
type Fork struct {
	Worker      WorkerID
	Slot        int
	Generation  int
	Replacement bool
}

// Drain asks a worker to stop gracefully.
type Drain struct {
	Worker WorkerID
	Reason string
}

// Kill ends a worker at once (SIGKILL).
type Kill struct {
	Worker WorkerID
	Reason string
}

// TimerKind says what a timer is for.
type TimerKind string

// The timers of the cluster.
const (
	ReadyTimeout TimerKind = "ready-timeout"
	KillTimeout  TimerKind = "kill-timeout"
	BackoffEnd   TimerKind = "backoff"
	StableCheck  TimerKind = "stable-check" // has a flapping slot's worker stayed up?
	PolicyWake   TimerKind = "policy-wake"  // a policy asked to be consulted again
)

// Timer identifies one timer. Timers are never cancelled: one that fires
// when it no longer applies is ignored.
type Timer struct {
	Kind   TimerKind
	Worker WorkerID // ready and kill timeouts
	Slot   int      // backoff, stable check
	Seq    int      // policy wake: only the latest one counts
}

// SetTimer asks for TimerFired{Timer} after the duration.
type SetTimer struct {
	Timer Timer
	After time.Duration
}

// Note is a log event: something an operator wants to read.
type Note struct {
	Level   zerolog.Level
	Message string
	Worker  *Worker // the worker it is about, if any
	Fields  []Field
}

// Field is one key/value of a Note, in a fixed order.
type Field struct {
	Key   string
	Value any
}

// Stopped: every worker is gone after a stop; the master may exit.
type Stopped struct{}

// TargetChanged: the worker count the cluster aims at is now Target.
type TargetChanged struct{ Target int }

// RolloutStarted: a rollout began, with this many workers listening.
type RolloutStarted struct {
	Generation int
	Baseline   int
	Source     string
}

// RolloutEnded: the rollout finished, was aborted or cancelled by a stop.
type RolloutEnded struct {
	Outcome string // complete, aborted, cancelled
	Reason  string
}

// Rollout outcomes.
const (
	OutcomeComplete  = "complete"
	OutcomeAborted   = "aborted"
	OutcomeCancelled = "cancelled"
)

func (Fork) isDecision()           {}
func (Drain) isDecision()          {}
func (Kill) isDecision()           {}
func (SetTimer) isDecision()       {}
func (Note) isDecision()           {}
func (Stopped) isDecision()        {}
func (TargetChanged) isDecision()  {}
func (RolloutStarted) isDecision() {}
func (RolloutEnded) isDecision()   {}
