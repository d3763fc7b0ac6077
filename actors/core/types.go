package core

import (
	"fmt"
	"time"

	"github.com/dutchmaster/dutchmaster/fsm"
)

// WorkerID names one worker process for the life of the master. IDs
// increase; a replacement always has a higher ID than the worker it
// replaces.
type WorkerID int

func (id WorkerID) String() string { return fmt.Sprintf("w%d", int(id)) }

// Config holds the knobs of the decision logic. Zero values take the
// defaults listed on each field.
type Config struct {
	// MaxSurge is how many replacements may be starting (forked, not yet
	// listening) at once during a rollout. Default 1.
	MaxSurge int
	// KillTimeout is how long a draining worker may take to exit before it
	// gets SIGKILL, counted from the start of its drain. Default 30 s.
	KillTimeout time.Duration
	// ReadyTimeout bounds the time from fork to ready; a worker that misses
	// it is killed (a replacement's miss aborts the rollout). Default 60 s;
	// negative means no bound.
	ReadyTimeout time.Duration
	// Backoff spaces the re-forks of a slot whose workers keep failing.
	Backoff Backoff
	// Policy decides the steps of rollouts. Default Rolling{MaxSurge}.
	Policy Policy
}

// Backoff is the crash-loop policy of a slot. The first failure is
// replaced at once; each further consecutive failure waits twice as long
// as the one before, from Initial up to Max. A worker that stayed
// listening for Reset clears the count, and so does a worker replaced by
// a rollout once its replacement listens.
type Backoff struct {
	Initial time.Duration // default 500 ms
	Max     time.Duration // default 30 s
	Reset   time.Duration // default 60 s
}

// WithDefaults fills the zero fields.
func (c Config) WithDefaults() Config {
	if c.MaxSurge <= 0 {
		c.MaxSurge = 1
	}
	if c.KillTimeout <= 0 {
		c.KillTimeout = 30 * time.Second
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 60 * time.Second
	}
	if c.Backoff.Initial <= 0 {
		c.Backoff.Initial = 500 * time.Millisecond
	}
	if c.Backoff.Max <= 0 {
		c.Backoff.Max = 30 * time.Second
	}
	if c.Backoff.Reset <= 0 {
		c.Backoff.Reset = 60 * time.Second
	}
	if c.Policy == nil {
		c.Policy = Rolling{MaxSurge: c.MaxSurge}
	}
	return c
}

// delay is the wait before re-forking a slot after its n-th consecutive
// failure (n >= 1).
func (b Backoff) delay(n int) time.Duration {
	if n <= 1 {
		return 0
	}
	d := b.Initial
	for i := 2; i < n && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// Worker is the cluster's view of one worker.
type Worker struct {
	ID         WorkerID
	Slot       int
	Generation int
	State      fsm.State
	PID        int
	ForkedAt   time.Time
	ReadyAt    time.Time // zero until listening
	// Replacement is true when the worker was forked to replace a worker
	// due for restart: its failure before ready aborts the rollout. A
	// worker forked to fill an empty slot is not a replacement.
	Replacement bool
	// RestartRequested is set when the worker asked for its own
	// replacement, or a policy marked it.
	RestartRequested bool
	// Due: the running rollout must replace this worker.
	Due bool
}

// Rollout is a restart in progress.
type Rollout struct {
	// Generation: workers of an older generation are due for replacement.
	// A rollout started by a worker's own request has the generation 0:
	// only the workers that asked are due.
	Generation int
	// Baseline is the most workers listening at once since the rollout
	// began (at least as many as when it began). The invariant keeps
	// min(target, Baseline) listening until the rollout ends.
	Baseline int
	Started  time.Time
	Source   string
	// First is the rollout's first replacement (the canary, for the
	// canary policy), with when it became ready and when it died, if it
	// did. A coalesced request starts over with a new first replacement.
	First        WorkerID
	FirstReadyAt time.Time
	FirstDiedAt  time.Time
}

// View is a read-only copy of the cluster, for status, tests and policies.
type View struct {
	Now        time.Time
	Target     int
	Generation int
	Policy     string
	Workers    []Worker // live, draining; ordered by ID
	Slots      []Slot   // the active slots, in order
	Rollout    *Rollout // nil when none runs
	Ready      bool     // the first generation has listened
	Stopping   bool
	Stopped    bool

	idx *viewIndex // built with the view; see index
}

// Slot is a position that one serving worker fills; a replacement takes
// over its predecessor's slot. Workers see it as DUTCHMASTER_SLOT.
type Slot struct {
	Index     int
	Failures  int       // consecutive failures of its workers
	Flapping  bool      // failing again and again; forks are backing off
	NotBefore time.Time // no fork before this (backoff)
}

// Listening counts the workers that serve: listening and not draining.
func (v View) Listening() int { return v.index().listening }
