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
}

// Backoff is the crash-loop policy of a slot. The first failure is
// replaced at once; each further consecutive failure waits twice as long
// as the one before, from Initial up to Max. A worker that stayed
// listening for Reset clears the count when it dies.
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
	// RestartRequested is set when the worker asked for its own replacement.
	RestartRequested bool
}

// Rollout is a restart in progress.
type Rollout struct {
	// Generation: workers of an older generation are due for replacement.
	// A rollout started by a worker's own request has the generation 0:
	// only the workers that asked are due.
	Generation int
	// Baseline is how many workers were listening when the rollout began.
	Baseline int
	Started  time.Time
	Source   string
}

// View is a read-only copy of the cluster, for status, tests and policies.
type View struct {
	Target     int
	Generation int
	Workers    []Worker // live, draining; ordered by ID
	Rollout    *Rollout // nil when none runs
	Ready      bool     // the first generation has listened
	Stopping   bool
	Stopped    bool
}

// Listening counts the workers that serve: listening and not draining.
func (v View) Listening() int {
	n := 0
	for _, w := range v.Workers {
		if w.State == fsm.Listening {
			n++
		}
	}
	return n
}
