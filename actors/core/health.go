package core

import (
	"fmt"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/fsm"
)

// Worker health: the watchdog that finds hung workers, and the recycling
// of workers that grew too big or too old. Both replace a worker the way
// everything else does: its successor listens before it is stopped; a
// hung worker, which serves nothing, merely stops counting as serving.

// forkHealth gives a new worker its limits, jitter drawn here so that
// workers forked together do not reach them together.
func (c *Cluster) forkHealth(w *Worker) {
	r := c.cfg.Recycle
	if r.MaxRequests > 0 {
		w.MaxRequests = r.MaxRequests + c.jitterInt(r.RequestsJitter)
	}
	if r.MaxLifetime > 0 {
		w.LifetimeEnd = c.now.Add(r.MaxLifetime + c.jitter(r.LifetimeJitter))
	}
}

// jitter is a random duration in [0, d].
func (c *Cluster) jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(c.rng.Int64N(int64(d) + 1)).Round(time.Millisecond)
}

// jitterInt is a random count in [0, n].
func (c *Cluster) jitterInt(n int) int {
	if n <= 0 {
		return 0
	}
	return c.rng.IntN(n + 1)
}

// listeningHealth starts watching a worker that just began to listen.
func (c *Cluster) listeningHealth(w *Worker) {
	if c.cfg.Watchdog > 0 {
		c.emit(SetTimer{Timer: Timer{Kind: WatchdogTime, Worker: w.ID}, After: c.cfg.Watchdog})
	}
}

// abortServedHung ends each hung worker whose slot another worker serves
// now: its successor, or an older worker still there (blue-green keeps
// one until the new generation is complete).
func (c *Cluster) abortServedHung() {
	for _, x := range c.workers {
		if !x.Hung || x.State != fsm.Listening {
			continue
		}
		for _, by := range c.workers {
			if by.Slot == x.Slot && by.Serves() {
				c.drain(x, "hung; "+by.ID.String()+" serves its slot")
				break
			}
		}
	}
}

// watchdogCheck runs when a worker's watchdog timer fires: a worker that
// sent no heartbeat for Watchdog (counted from its readiness) is hung;
// one that did is checked again when its last heartbeat gets that old.
func (c *Cluster) watchdogCheck(id WorkerID) {
	w := c.worker(id)
	if w == nil || w.State != fsm.Listening || w.Hung || c.stopping || c.cfg.Watchdog <= 0 {
		return
	}
	last := w.ReadyAt
	if w.LastHeartbeat.After(last) {
		last = w.LastHeartbeat
	}
	if wait := last.Add(c.cfg.Watchdog).Sub(c.now); wait > 0 {
		c.emit(SetTimer{Timer: Timer{Kind: WatchdogTime, Worker: w.ID}, After: wait})
		return
	}
	c.hung(w, fmt.Sprintf("no heartbeat for %s", c.now.Sub(last)))
}

func (c *Cluster) watchdogTriggered(in WatchdogTriggered) {
	w := c.worker(in.Worker)
	switch {
	case w == nil || c.stopping || w.Hung:
	case w.State == fsm.Listening:
		c.hung(w, "the worker triggered its watchdog")
	case w.State == fsm.Forking:
		c.note(zerolog.ErrorLevel, "worker triggered its watchdog while starting", w)
		c.kill(w, "watchdog triggered")
		c.failedBeforeReady(w, "watchdog triggered before ready")
	}
}

// hung takes w out of service: it no longer counts as serving, its slot
// gets a successor (after the slot's backoff: a hang is a failure, as a
// crash is), and w gets SIGABRT once the successor listens, or at once
// when none will come (a retired slot; a stop aborts every hung worker).
func (c *Cluster) hung(w *Worker, why string) {
	w.Hung = true
	w.RestartRequested, w.Recycling = false, false
	c.note(zerolog.ErrorLevel, "worker hung: forking its successor, then aborting it", w, Field{"reason", why})
	c.emit(WatchdogMissed{Worker: w.ID, Reason: why})
	if s := c.slotOf(w); s == nil || !s.active {
		c.drain(w, "hung in a retired slot")
		return
	}
	c.slotFailed(w.Slot)
	// reconcile forks its successor, or aborts it at once when another
	// worker serves its slot already (abortServedHung).
}

// abortHung ends a hung worker: SIGABRT, and SIGKILL after AbortTimeout.
// Every drain of a hung worker comes here: it would not drain.
func (c *Cluster) abortHung(w *Worker, why string) {
	c.toDraining(w)
	c.emit(Abort{Worker: w.ID, Reason: why})
	c.emit(SetTimer{Timer: Timer{Kind: AbortTimeout, Worker: w.ID}, After: c.cfg.AbortTimeout})
}

// extendReadyTimeout pushes a booting worker's ready timeout back, as
// systemd's EXTEND_TIMEOUT_USEC does a start timeout: never before the
// configured bound, and by no more than asked, from now.
func (c *Cluster) extendReadyTimeout(in ReadyTimeoutExtended) {
	w := c.worker(in.Worker)
	if w == nil || w.State != fsm.Forking || c.cfg.ReadyTimeout <= 0 || in.By <= 0 {
		return
	}
	if at := c.now.Add(in.By); at.After(w.readyDeadline) {
		w.readyDeadline = at
		c.note(zerolog.DebugLevel, "ready timeout extended", w, Field{"by", in.By})
		c.emit(SetTimer{Timer: Timer{Kind: ReadyTimeout, Worker: w.ID}, After: in.By})
	}
}

// sampled takes a round of memory samples. A worker over MaxMemory for
// MemorySamples samples in a row is due for recycling, after a random
// wait up to MemoryJitter. One that was over the limit from its first
// sample on would be replaced by another just like it: that counts as a
// failure of its slot, whose backoff then spaces the recycles.
func (c *Cluster) sampled(in UsageSampled) {
	r := c.cfg.Recycle
	for _, s := range in.Samples {
		w := c.worker(s.Worker)
		if w == nil {
			continue
		}
		w.RSS = s.RSS
		if r.MaxMemory <= 0 || !w.Serves() || w.Recycling || w.RecycleCause != "" || c.due(w) {
			// Nothing to watch, or its replacement is on the way already.
			continue
		}
		w.samples++
		if s.RSS <= r.MaxMemory {
			w.overLimit = 0
			continue
		}
		if w.overLimit++; w.overLimit < r.MemorySamples {
			continue
		}
		c.wantRecycle(w, RecycleMemory, c.jitter(r.MemoryJitter), Field{"rss", s.RSS}, Field{"limit", r.MaxMemory})
		if w.samples == w.overLimit {
			c.note(zerolog.WarnLevel, "worker over its memory limit from its start: its recycles back off", w,
				Field{"rss", s.RSS}, Field{"limit", r.MaxMemory})
			c.slotFailed(w.Slot)
		}
	}
}

// wantRecycle marks w to be recycled for cause once delay has passed;
// startRecycles begins it when its turn comes.
func (c *Cluster) wantRecycle(w *Worker, cause string, delay time.Duration, fields ...Field) {
	w.RecycleCause, w.RecycleAt = cause, c.now.Add(delay)
	fields = append([]Field{{"cause", cause}}, fields...)
	if delay > 0 {
		fields = append(fields, Field{"jitter", delay})
		c.emit(SetTimer{Timer: Timer{Kind: RecycleDue, Worker: w.ID}, After: delay})
	}
	c.note(zerolog.InfoLevel, "worker due for recycling", w, fields...)
}

// recycleCause is why w must be recycled now, or "".
func (c *Cluster) recycleCause(w *Worker) string {
	switch {
	case w.RecycleCause != "" && !c.now.Before(w.RecycleAt):
		return w.RecycleCause
	case !w.LifetimeEnd.IsZero() && !c.now.Before(w.LifetimeEnd):
		return RecycleLifetime
	}
	return ""
}

// startRecycles begins the recycles that are due, while fewer than
// Recycle.Concurrency run: a recycle runs from its mark until its worker
// is gone (its replacement listens, then it drains and exits). A worker already due for a rollout
// is left to it (the rollout replaces it anyway), and so is a slot that
// backs off. The earliest due goes first. It reports whether it began one.
func (c *Cluster) startRecycles() bool {
	running := 0
	var due []*Worker
	for _, w := range c.workers {
		switch {
		case w.Recycling:
			running++ // until it is gone
		case w.Serves() && !w.Recycling && !c.due(w) && c.recycleCause(w) != "":
			if s := c.slotOf(w); s != nil && s.active && !c.now.Before(s.notBefore) {
				due = append(due, w)
			}
		}
	}
	slices.SortStableFunc(due, func(a, b *Worker) int { return c.recycleSince(a).Compare(c.recycleSince(b)) })
	began := false
	for _, w := range due {
		if running >= c.cfg.Recycle.Concurrency {
			break
		}
		running++
		began = true
		cause := c.recycleCause(w)
		w.Recycling, w.RecycleCause = true, cause
		c.note(zerolog.InfoLevel, "recycling worker", w, Field{"cause", cause})
		c.emit(Recycled{Worker: w.ID, Cause: cause})
		if c.rollout != nil {
			w.RestartRequested = true // joins the rollout, paced by its policy
			continue
		}
		c.markForReplacement(w, "recycle "+cause)
	}
	return began
}

// recycleSince is when w became due for recycling.
func (c *Cluster) recycleSince(w *Worker) time.Time {
	if w.RecycleCause != "" && (w.LifetimeEnd.IsZero() || w.RecycleAt.Before(w.LifetimeEnd)) {
		return w.RecycleAt
	}
	return w.LifetimeEnd
}
