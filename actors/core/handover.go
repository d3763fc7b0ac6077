package core

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/dutchmaster/dutchmaster/fsm"
)

// The handover of the core to a new master image (docs/upgrade.md): the
// old master takes Handover at one instant, the new one Resumes from it,
// and the cluster goes on as if it had not stopped.

// StateFormat is the version of State this package writes. A reader
// reads every format up to its own and refuses a newer one
// (DecodeState). A change that a reader of the previous format would
// misread (a field renamed, removed or given a new meaning; a new field
// whose absence is not its zero value) takes the next number.
const StateFormat = 1

// State is everything the core needs to continue exactly as if it had
// not stopped, as plain JSON (format StateFormat, field by field below).
//
// Time: every instant is an offset from the instant of the handover (the
// now given to Handover), negative for the past, and Resume puts it back
// relative to its own now. So a timer due 3 s after the handover is due
// 3 s after the resume, however long the exec took, and so is everything
// else timed (a backoff's end, a canary's soak, a worker's lifetime, the
// age of its last heartbeat): the pause of the exec is cut out of the
// cluster's time line, which is what makes the resumed cluster decide as
// the old one would have. The pause is short (an exec and a re-read of
// the state); a hung worker is found the pause's length later.
//
// Offsets and durations are integer nanoseconds (JSON numbers); an
// instant that was never set (a worker not yet listening has no ready
// time) is absent.
type State struct {
	// Format is StateFormat of the writer.
	Format int `json:"format"`
	// Config is the configuration in force (defaults filled, after any
	// reconfiguration). Resume refuses a configuration that differs.
	Config StateConfig `json:"config"`
	// LastStep is when the core last stepped (the view's Now).
	LastStep *time.Duration `json:"last_step,omitempty"`
	// Started, Ready, Stopping, Killing, Stopped: the cluster's phase.
	// Started: Start was stepped. Ready: the first generation listened
	// (Ready is not decided again). Stopping: a stop was asked.
	// Killing: a second stop killed the workers. Stopped: every worker
	// is gone after a stop.
	Started  bool `json:"started,omitempty"`
	Ready    bool `json:"ready,omitempty"`
	Stopping bool `json:"stopping,omitempty"`
	Killing  bool `json:"killing,omitempty"`
	Stopped  bool `json:"stopped,omitempty"`
	// Generation is the newest generation.
	Generation int `json:"generation"`
	// NextWorker is the ID the next fork gets.
	NextWorker WorkerID `json:"next_worker"`
	// Slots are every slot ever used, by index, retired ones included
	// (their numbers stay stable); the active ones make the target.
	Slots []StateSlot `json:"slots,omitempty"`
	// Workers are the workers not yet gone, by ID.
	Workers []StateWorker `json:"workers,omitempty"`
	// Rollout is the rollout in progress, if one runs.
	Rollout *StateRollout `json:"rollout,omitempty"`
	// PolicyWake is when the pending policy wake-up is due, if one is,
	// and WakeSeq the number of the latest one (Timer.Seq).
	PolicyWake *time.Duration `json:"policy_wake,omitempty"`
	WakeSeq    int            `json:"wake_seq,omitempty"`
	// Refused are the policy proposals refused at the last consultation
	// (each logged once while it keeps being refused).
	Refused []string `json:"refused,omitempty"`
	// Random is the state of the recycles' jitter generator (a PCG, as
	// its MarshalBinary writes it; base64 in JSON).
	Random []byte `json:"random"`
	// Timers are the timers set and not yet fired, earliest first (ties in
	// the order they were set). Resume sets them again, each due at its
	// offset from the resume.
	Timers []StateTimer `json:"timers,omitempty"`
}

// StateConfig is Config as data: every field, defaults filled. The
// policy is named; a custom one (not a built-in) only by its name, and
// the resuming master must bring a policy of that name.
type StateConfig struct {
	MaxSurge     int           `json:"max_surge"`
	KillTimeout  time.Duration `json:"kill_timeout"`
	ReadyTimeout time.Duration `json:"ready_timeout"`
	Backoff      Backoff       `json:"backoff"`
	Watchdog     time.Duration `json:"watchdog"`
	AbortTimeout time.Duration `json:"abort_timeout"`
	Recycle      Recycle       `json:"recycle"`
	Seed         uint64        `json:"seed"`
	Policy       StatePolicy   `json:"policy"`
}

// StatePolicy names a policy: a built-in one with its parameters, or a
// custom one (Custom) by Name.
type StatePolicy struct {
	Name     string        `json:"name"`
	MaxSurge int           `json:"max_surge,omitempty"`
	Soak     time.Duration `json:"soak,omitempty"`
	Custom   bool          `json:"custom,omitempty"`
}

// StateSlot is one slot: whether it is active, its consecutive failures
// (three or more: flapping) and the end of its backoff, if one was set.
type StateSlot struct {
	Active    bool           `json:"active,omitempty"`
	Failures  int            `json:"failures,omitempty"`
	NotBefore *time.Duration `json:"not_before,omitempty"`
}

// StateWorker is one worker, as Worker says, plus what the core keeps to
// itself: the deadline of its ready timeout (pushed back by
// extensions) and its memory samples since it listens (how many, and how
// many of the last ones in a row were over the limit).
type StateWorker struct {
	ID               WorkerID       `json:"id"`
	Slot             int            `json:"slot"`
	Generation       int            `json:"generation"`
	State            fsm.State      `json:"state"`
	PID              int            `json:"pid,omitempty"`
	ForkedAt         *time.Duration `json:"forked_at,omitempty"`
	ReadyAt          *time.Duration `json:"ready_at,omitempty"`
	Replacement      bool           `json:"replacement,omitempty"`
	RestartRequested bool           `json:"restart_requested,omitempty"`
	Hung             bool           `json:"hung,omitempty"`
	LastHeartbeat    *time.Duration `json:"last_heartbeat,omitempty"`
	RSS              int64          `json:"rss,omitempty"`
	MaxRequests      int            `json:"max_requests,omitempty"`
	LifetimeEnd      *time.Duration `json:"lifetime_end,omitempty"`
	RecycleCause     string         `json:"recycle_cause,omitempty"`
	RecycleAt        *time.Duration `json:"recycle_at,omitempty"`
	Recycling        bool           `json:"recycling,omitempty"`
	ReadyDeadline    *time.Duration `json:"ready_deadline,omitempty"`
	Samples          int            `json:"samples,omitempty"`
	OverLimit        int            `json:"over_limit,omitempty"`
}

// StateRollout is the rollout in progress, as Rollout says.
type StateRollout struct {
	Generation   int            `json:"generation"`
	Baseline     int            `json:"baseline"`
	Started      *time.Duration `json:"started,omitempty"`
	Source       string         `json:"source,omitempty"`
	First        WorkerID       `json:"first,omitempty"`
	FirstReadyAt *time.Duration `json:"first_ready_at,omitempty"`
	FirstDiedAt  *time.Duration `json:"first_died_at,omitempty"`
}

// StateTimer is one pending timer and how long after the handover it is
// due (zero or less: due at once).
type StateTimer struct {
	Timer Timer         `json:"timer"`
	Due   time.Duration `json:"due"`
}

// Handover takes the cluster's whole state at now (the instant every
// offset is counted from). The cluster is not changed: should the exec
// fail, it goes on. It refuses a cluster caught inside Step (a policy or
// another goroutine calling back into it), whose state is half made.
func (c *Cluster) Handover(now time.Time) (State, error) {
	if c.stepping {
		return State{}, errors.New("handover refused: the cluster is inside a step; hand over between two steps")
	}
	random, err := c.src.MarshalBinary()
	if err != nil {
		return State{}, fmt.Errorf("handover refused: the jitter generator: %w", err)
	}
	off := func(t time.Time) *time.Duration {
		if t.IsZero() {
			return nil
		}
		d := t.Sub(now)
		return &d
	}
	st := State{
		Format: StateFormat, Config: stateConfig(c.cfg), LastStep: off(c.now),
		Started: c.started, Ready: c.ready, Stopping: c.stopping, Killing: c.killing, Stopped: c.stopped,
		Generation: c.generation, NextWorker: c.nextID, PolicyWake: off(c.wakeAt), WakeSeq: c.wakeSeq,
		Random: random,
	}
	for _, s := range c.slots {
		st.Slots = append(st.Slots, StateSlot{Active: s.active, Failures: s.failures, NotBefore: off(s.notBefore)})
	}
	for _, w := range c.workers {
		st.Workers = append(st.Workers, StateWorker{
			ID: w.ID, Slot: w.Slot, Generation: w.Generation, State: w.State, PID: w.PID,
			ForkedAt: off(w.ForkedAt), ReadyAt: off(w.ReadyAt), Replacement: w.Replacement,
			RestartRequested: w.RestartRequested, Hung: w.Hung, LastHeartbeat: off(w.LastHeartbeat),
			RSS: w.RSS, MaxRequests: w.MaxRequests, LifetimeEnd: off(w.LifetimeEnd),
			RecycleCause: w.RecycleCause, RecycleAt: off(w.RecycleAt), Recycling: w.Recycling,
			ReadyDeadline: off(w.readyDeadline), Samples: w.samples, OverLimit: w.overLimit,
		})
	}
	if r := c.rollout; r != nil {
		st.Rollout = &StateRollout{Generation: r.Generation, Baseline: r.Baseline, Started: off(r.Started),
			Source: r.Source, First: r.First, FirstReadyAt: off(r.FirstReadyAt), FirstDiedAt: off(r.FirstDiedAt)}
	}
	for k := range c.refused {
		st.Refused = append(st.Refused, k)
	}
	slices.Sort(st.Refused)
	for _, p := range c.timers.ordered() {
		st.Timers = append(st.Timers, StateTimer{Timer: p.timer, Due: p.due.Sub(now)})
	}
	return st, nil
}

// Resume rebuilds a cluster from a handed-over state at now, with cfg
// the configuration in force, which must be the one handed over
// (cfg brings the policy itself: a custom one must have the name the
// state gives). It returns the cluster and the timers to set again
// (SetTimer decisions, earliest first), for the executor to carry out
// before the next step. st must be of this package's format (DecodeState
// reads every format it knows into it).
func Resume(cfg Config, st State, now time.Time) (*Cluster, []Decision, error) {
	if st.Format != StateFormat {
		return nil, nil, fmt.Errorf("resume: state format %d, want %d (read it with DecodeState)", st.Format, StateFormat)
	}
	if err := st.validate(); err != nil {
		return nil, nil, fmt.Errorf("resume: %w", err)
	}
	cfg = cfg.WithDefaults()
	if given := stateConfig(cfg); given != st.Config {
		a, _ := json.Marshal(st.Config)
		b, _ := json.Marshal(given)
		return nil, nil, fmt.Errorf("resume: the configuration differs from the one handed over: handed over %s, given %s", a, b)
	}
	src := &rand.PCG{}
	if err := src.UnmarshalBinary(st.Random); err != nil {
		return nil, nil, fmt.Errorf("resume: random: %w", err)
	}
	at := func(d *time.Duration) time.Time {
		if d == nil {
			return time.Time{}
		}
		return now.Add(*d)
	}
	c := &Cluster{
		cfg: cfg, generation: st.Generation, nextID: st.NextWorker, started: st.Started, ready: st.Ready,
		stopping: st.Stopping, killing: st.Killing, stopped: st.Stopped, wakeAt: at(st.PolicyWake), wakeSeq: st.WakeSeq,
		rng: rand.New(src), src: src, now: at(st.LastStep),
	}
	for _, s := range st.Slots {
		c.slots = append(c.slots, slot{active: s.Active, failures: s.Failures, notBefore: at(s.NotBefore)})
	}
	for _, w := range st.Workers {
		c.workers = append(c.workers, &Worker{
			ID: w.ID, Slot: w.Slot, Generation: w.Generation, State: w.State, PID: w.PID,
			ForkedAt: at(w.ForkedAt), ReadyAt: at(w.ReadyAt), Replacement: w.Replacement,
			RestartRequested: w.RestartRequested, Hung: w.Hung, LastHeartbeat: at(w.LastHeartbeat),
			RSS: w.RSS, MaxRequests: w.MaxRequests, LifetimeEnd: at(w.LifetimeEnd),
			RecycleCause: w.RecycleCause, RecycleAt: at(w.RecycleAt), Recycling: w.Recycling,
			readyDeadline: at(w.ReadyDeadline), samples: w.Samples, overLimit: w.OverLimit,
		})
	}
	if r := st.Rollout; r != nil {
		c.rollout = &Rollout{Generation: r.Generation, Baseline: r.Baseline, Started: at(r.Started), Source: r.Source,
			First: r.First, FirstReadyAt: at(r.FirstReadyAt), FirstDiedAt: at(r.FirstDiedAt)}
	}
	if len(st.Refused) > 0 {
		c.refused = map[string]bool{}
		for _, k := range st.Refused {
			c.refused[k] = true
		}
	}
	var rearm []Decision
	for _, t := range st.Timers {
		c.timers.set(t.Timer, now.Add(t.Due))
		rearm = append(rearm, SetTimer{Timer: t.Timer, After: max(t.Due, 0)})
	}
	return c, rearm, nil
}

// DecodeState reads a handed-over state of any format this package
// knows, and refuses a newer one. Format 1 is read as it is. When format
// 2 comes, the format-1 struct is kept here under its own name
// (stateV1), decoded when the format says 1 and converted field by field
// into State, the new fields given what format 1 meant by their
// absence; StateFormat then says 2, and the new binary reads what the
// old master wrote.
func DecodeState(data []byte) (State, error) {
	var head struct {
		Format *int `json:"format"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return State{}, fmt.Errorf("handover state: not a JSON object: %w", err)
	}
	switch {
	case head.Format == nil:
		return State{}, errors.New("handover state: no format number")
	case *head.Format > StateFormat:
		return State{}, fmt.Errorf("handover state format %d is newer than this binary reads (up to %d): an older binary cannot take over from a newer one", *head.Format, StateFormat)
	case *head.Format < 1:
		return State{}, fmt.Errorf("handover state: format %d does not exist", *head.Format)
	}
	var st State
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields() // a field this format does not have is a damaged state
	if err := dec.Decode(&st); err != nil {
		return State{}, fmt.Errorf("handover state format %d: %w", *head.Format, err)
	}
	if dec.More() {
		return State{}, errors.New("handover state: data after the state")
	}
	if err := st.validate(); err != nil {
		return State{}, fmt.Errorf("handover state: %w", err)
	}
	return st, nil
}

// workerTimerKinds are the timers of one worker, forgotten when it exits.
var workerTimerKinds = []TimerKind{ReadyTimeout, KillTimeout, WatchdogTime, AbortTimeout, LifetimeEnd, RecycleDue}

// slotTimerKinds are the timers of a slot.
var slotTimerKinds = []TimerKind{BackoffEnd, StableCheck}

// validate refuses a state the core could not have made, so that a
// damaged one is not resumed into a cluster that breaks later.
func (st State) validate() error {
	switch {
	case st.NextWorker < 1:
		return fmt.Errorf("next worker %d: want 1 or more", st.NextWorker)
	case st.Generation < 0:
		return fmt.Errorf("generation %d: want 0 or more", st.Generation)
	case len(st.Slots) > MaxWorkers:
		return fmt.Errorf("%d slots: at most %d", len(st.Slots), MaxWorkers)
	case st.Stopped && !st.Stopping || st.Killing && !st.Stopping || st.Ready && !st.Started:
		return errors.New("phase: stopped or killing without stopping, or ready without started")
	case st.WakeSeq < 0:
		return fmt.Errorf("wake seq %d: want 0 or more", st.WakeSeq)
	}
	for i, s := range st.Slots {
		if s.Failures < 0 {
			return fmt.Errorf("slot %d: %d failures", i, s.Failures)
		}
	}
	workers := map[WorkerID]bool{}
	for i, w := range st.Workers {
		switch {
		case w.ID < 1 || w.ID >= st.NextWorker:
			return fmt.Errorf("worker %s: ID out of 1..%d", w.ID, st.NextWorker-1)
		case i > 0 && w.ID <= st.Workers[i-1].ID:
			return fmt.Errorf("worker %s: workers not ordered by ID", w.ID)
		case w.Slot < 0 || w.Slot >= len(st.Slots):
			return fmt.Errorf("worker %s: slot %d does not exist", w.ID, w.Slot)
		case w.Generation < 0 || w.Generation > st.Generation:
			return fmt.Errorf("worker %s: generation %d out of 0..%d", w.ID, w.Generation, st.Generation)
		case w.State != fsm.Forking && w.State != fsm.Listening && w.State != fsm.Draining:
			return fmt.Errorf("worker %s: state %q is not forking, listening or draining", w.ID, w.State)
		case w.Samples < 0 || w.OverLimit < 0 || w.MaxRequests < 0:
			return fmt.Errorf("worker %s: negative counter", w.ID)
		}
		workers[w.ID] = true
	}
	if r := st.Rollout; r != nil {
		switch {
		case r.Generation < 0 || r.Generation > st.Generation:
			return fmt.Errorf("rollout: generation %d out of 0..%d", r.Generation, st.Generation)
		case r.Baseline < 0:
			return fmt.Errorf("rollout: baseline %d", r.Baseline)
		case r.First < 0 || r.First >= st.NextWorker:
			return fmt.Errorf("rollout: first worker %s out of range", r.First)
		}
	}
	seen := map[Timer]bool{}
	for _, t := range st.Timers {
		k := t.Timer
		switch {
		case slices.Contains(workerTimerKinds, k.Kind):
			if !workers[k.Worker] {
				return fmt.Errorf("timer %s of %s: no such worker", k.Kind, k.Worker)
			}
			if seen[k] {
				return fmt.Errorf("timer %s of %s: set twice", k.Kind, k.Worker)
			}
			seen[k] = true
		case slices.Contains(slotTimerKinds, k.Kind):
			if k.Slot < 0 || k.Slot >= len(st.Slots) {
				return fmt.Errorf("timer %s: slot %d does not exist", k.Kind, k.Slot)
			}
		case k.Kind == PolicyWake:
		default:
			return fmt.Errorf("timer kind %q unknown", k.Kind)
		}
	}
	return nil
}

// ConfigOf is cfg as a handed-over state carries it, defaults filled:
// what a new binary compares with the state's before it takes over (a
// configuration that differs is refused by Resume).
func ConfigOf(cfg Config) StateConfig { return stateConfig(cfg.WithDefaults()) }

// stateConfig is cfg as data.
func stateConfig(cfg Config) StateConfig {
	out := StateConfig{
		MaxSurge: cfg.MaxSurge, KillTimeout: cfg.KillTimeout, ReadyTimeout: cfg.ReadyTimeout, Backoff: cfg.Backoff,
		Watchdog: cfg.Watchdog, AbortTimeout: cfg.AbortTimeout, Recycle: cfg.Recycle, Seed: cfg.Seed,
	}
	switch p := cfg.Policy.(type) {
	case Rolling:
		out.Policy = StatePolicy{Name: p.Name(), MaxSurge: p.MaxSurge}
	case BlueGreen:
		out.Policy = StatePolicy{Name: p.Name()}
	case Canary:
		out.Policy = StatePolicy{Name: p.Name(), MaxSurge: p.MaxSurge, Soak: p.Soak}
	default:
		out.Policy = StatePolicy{Name: p.Name(), Custom: true}
	}
	return out
}

// pendingTimers are the timers the cluster set that have not fired, as
// the executor keeps them (actors.WorkerTimers): a worker has at most one
// of each kind (setting it again replaces it: an extended ready
// timeout), its ready timeout is stopped once it listens and all of its
// timers once it exits; the cluster's own timers (backoff, stable
// check, policy wake-up) fire, several of a kind may be pending. So a
// resumed executor sets exactly the timers the old one had.
type pendingTimers struct {
	byWorker map[Timer]pendingTimer // Timer.Worker != 0
	cluster  []pendingTimer
	seq      int
}

type pendingTimer struct {
	timer Timer
	due   time.Time
	seq   int // ties are fired in the order they were set
}

func (ts *pendingTimers) set(t Timer, due time.Time) {
	ts.seq++
	p := pendingTimer{timer: t, due: due, seq: ts.seq}
	if t.Worker == 0 {
		ts.cluster = append(ts.cluster, p)
		return
	}
	if ts.byWorker == nil {
		ts.byWorker = map[Timer]pendingTimer{}
	}
	ts.byWorker[t] = p
}

// stepped forgets what in ends: the timer that fired (of several alike,
// the earliest), a listening worker's ready timeout, an exited worker's
// timers.
func (ts *pendingTimers) stepped(in Input) {
	switch in := in.(type) {
	case TimerFired:
		if in.Timer.Worker != 0 {
			delete(ts.byWorker, in.Timer)
			return
		}
		first := -1
		for i, p := range ts.cluster {
			if p.timer == in.Timer && (first < 0 || before(p, ts.cluster[first])) {
				first = i
			}
		}
		if first >= 0 {
			ts.cluster = slices.Delete(ts.cluster, first, first+1)
		}
	case WorkerListening:
		delete(ts.byWorker, Timer{Kind: ReadyTimeout, Worker: in.Worker})
	case WorkerExited:
		for _, k := range workerTimerKinds {
			delete(ts.byWorker, Timer{Kind: k, Worker: in.Worker})
		}
	}
}

// ordered lists the pending timers, earliest first.
func (ts *pendingTimers) ordered() []pendingTimer {
	out := slices.Clone(ts.cluster)
	for _, p := range ts.byWorker {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b pendingTimer) int {
		if before(a, b) {
			return -1
		}
		if before(b, a) {
			return 1
		}
		return 0
	})
	return out
}

func before(a, b pendingTimer) bool {
	if !a.due.Equal(b.due) {
		return a.due.Before(b.due)
	}
	return a.seq < b.seq
}
