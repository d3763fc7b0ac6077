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
	// Watchdog is how long a listening worker may go without a heartbeat
	// (WorkerHeartbeat) before it counts as hung: it no longer serves,
	// a successor is forked into its slot, and once that one listens the
	// hung worker gets SIGABRT (Abort), then SIGKILL after AbortTimeout.
	// Zero: no watchdog.
	Watchdog time.Duration
	// AbortTimeout bounds the time from a hung worker's SIGABRT to its
	// SIGKILL. Default 5 s.
	AbortTimeout time.Duration
	// Recycle replaces workers that grew too big or too old.
	Recycle Recycle
	// Seed seeds the jitter of recycling: the same seed and inputs give
	// the same decisions. The master draws one at start; the journal
	// records it.
	Seed uint64
}

// Recycle says when a healthy worker is replaced all the same, through
// the rollout's path (its replacement listens before it drains). Each
// limit is off at zero. Recycles start one at a time (Concurrency), each
// with a random delay (jitter), so workers started together are not
// recycled together.
type Recycle struct {
	// MaxMemory is the resident memory (bytes) of a worker's processes
	// above which it is recycled, once MemorySamples samples in a row
	// (UsageSampled) were over it, after a random wait up to MemoryJitter.
	MaxMemory     int64
	MemorySamples int           // default 3
	MemoryJitter  time.Duration // default 0: at once
	// MaxLifetime recycles a worker this long after its fork, plus a
	// random part up to LifetimeJitter (default a tenth of MaxLifetime).
	MaxLifetime    time.Duration
	LifetimeJitter time.Duration
	// MaxRequests is given to each worker (Fork.MaxRequests), plus a
	// random part up to RequestsJitter (default a tenth of MaxRequests);
	// the worker asks for its recycle (WorkerRestartRequested with
	// Reason "max-requests") when it has served that many.
	MaxRequests    int
	RequestsJitter int
	// Concurrency is how many recycles may run at once (a recycle runs
	// from the moment its worker is marked until it is gone). Default 1.
	Concurrency int
}

// The causes of a recycle, in Recycled and the metrics.
const (
	RecycleMemory   = "memory"
	RecycleLifetime = "lifetime"
	RecycleRequests = "max-requests"
)

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
	if c.Watchdog < 0 {
		c.Watchdog = 0
	}
	if c.AbortTimeout <= 0 {
		c.AbortTimeout = 5 * time.Second
	}
	r := &c.Recycle
	if r.MemorySamples <= 0 {
		r.MemorySamples = 3
	}
	if r.LifetimeJitter <= 0 {
		r.LifetimeJitter = r.MaxLifetime / 10
	}
	if r.RequestsJitter <= 0 {
		r.RequestsJitter = r.MaxRequests / 10
	}
	if r.Concurrency <= 0 {
		r.Concurrency = 1
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

	// Health (docs/reliability.md, "Hung and leaky workers").

	// Hung: the worker missed its watchdog (or triggered it). It no
	// longer counts as serving; its successor is on the way, and it gets
	// SIGABRT once that one listens.
	Hung bool
	// LastHeartbeat is when the worker last proved it is alive; zero
	// before its first heartbeat.
	LastHeartbeat time.Time
	// RSS is the last sample of its processes' resident memory, bytes.
	RSS int64
	// MaxRequests is the limit it was given (jitter included); 0: none.
	MaxRequests int
	// LifetimeEnd is when max-lifetime recycles it (jitter included);
	// zero: never.
	LifetimeEnd time.Time
	// RecycleCause is why the worker must be recycled (RecycleMemory,
	// RecycleRequests), from RecycleAt on; "" when it need not be.
	RecycleCause string
	RecycleAt    time.Time
	// Recycling: its recycle began; it is due for replacement.
	Recycling bool

	readyDeadline time.Time // the ready timeout, pushed back by ReadyTimeoutExtended
	samples       int       // memory samples since it listens
	overLimit     int       // of which the last ones in a row over MaxMemory
}

// Serves reports whether w counts toward the invariant: it listens and
// is not hung.
func (w Worker) Serves() bool { return w.State == fsm.Listening && !w.Hung }

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

// Listening counts the workers that serve: listening, not draining, not
// hung.
func (v View) Listening() int { return v.index().listening }
