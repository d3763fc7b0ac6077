package core

import (
	"time"

	"github.com/rs/zerolog"
)

// Decision is something the cluster actor must do, or a fact it reports.
//
// Notes are for people: their messages may be reworded at any time.
// Whatever a program acts on (a control reply, systemd's readiness, a
// metric) is a typed fact instead: Ready, Refused, RolloutStarted,
// RolloutCoalesced, RolloutEnded, TargetChanged, Stopped, WatchdogMissed,
// Recycled. The cluster
// actor executes the orders and passes every decision to its observers.
type Decision interface{ isDecision() }

// Fork starts a new worker.
type Fork struct {
	Worker      WorkerID
	Slot        int
	Generation  int
	Replacement bool
	// MaxRequests is the worker's request limit (DUTCHMASTER_MAX_REQUESTS),
	// jitter included; 0: none.
	MaxRequests int
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

// Abort ends a hung worker: SIGABRT to its process (a Go or Node.js
// worker writes its stacks and dies), then Kill once the abort timeout
// passes.
type Abort struct {
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
	WatchdogTime TimerKind = "watchdog"     // has the worker sent a heartbeat lately?
	AbortTimeout TimerKind = "abort-timeout"
	LifetimeEnd  TimerKind = "lifetime"    // max-lifetime reached
	RecycleDue   TimerKind = "recycle-due" // a recycle's jitter has passed
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

// RolloutCoalesced: a restart asked for during a rollout joined it; the
// rollout now replaces every worker older than Generation, and its end
// (RolloutEnded) answers this restart too.
type RolloutCoalesced struct {
	Generation int
	Source     string
}

// Ready: for the first time, at least the target count of workers listen
// (the service is up: systemd's READY=1). It comes once per cluster.
type Ready struct {
	Generation int
	Workers    int
}

// Refused: an input asked for something the cluster will not do now, and
// it changed nothing. Input is the input as stepped (its Source, if it has
// one, says who asked); Reason says why, in words fit for the asker.
//
// The refused inputs are Start (already started), RestartRequested and
// ScaleBy/ScaleTo (the cluster stops or has not started) and
// WorkerRestartRequested and ReplaceWorker (the worker does not listen, or
// the cluster stops; ReplaceWorker also when the worker is unknown).
type Refused struct {
	Input  Input
	Reason string
}

// WatchdogMissed: a worker missed its watchdog (or triggered it) and is
// hung from now on.
type WatchdogMissed struct {
	Worker WorkerID
	Reason string
}

// Recycled: a worker's recycle began (Cause: RecycleMemory,
// RecycleLifetime, RecycleRequests); its replacement is forked next.
type Recycled struct {
	Worker WorkerID
	Cause  string
}

// Rollout outcomes.
const (
	OutcomeComplete  = "complete"
	OutcomeAborted   = "aborted"
	OutcomeCancelled = "cancelled"
)

func (Fork) isDecision()             {}
func (Drain) isDecision()            {}
func (Kill) isDecision()             {}
func (SetTimer) isDecision()         {}
func (Note) isDecision()             {}
func (Stopped) isDecision()          {}
func (TargetChanged) isDecision()    {}
func (RolloutStarted) isDecision()   {}
func (RolloutEnded) isDecision()     {}
func (RolloutCoalesced) isDecision() {}
func (Ready) isDecision()            {}
func (Refused) isDecision()          {}
func (Abort) isDecision()            {}
func (WatchdogMissed) isDecision()   {}
func (Recycled) isDecision()         {}
