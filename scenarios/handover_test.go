package scenarios

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/fsm"
)

// TestHandoverRoundTrip: a random sequence of inputs runs on a cluster,
// its timers kept as the executor keeps them; the timers the core holds
// as pending must always be those of the executor's clock. At a random
// point its state is handed over (JSON encoded and decoded) and a second
// cluster resumes from it after a random pause. From then on both get
// the same inputs (the resumed one on a clock shifted by the pause):
// every step must give the same decisions and facts, the same view and
// the same state, and the resume must set again exactly the timers that
// were pending. 500 sequences.
func TestHandoverRoundTrip(t *testing.T) {
	withChecks(t, 500, func() {
		rapid.Check(t, func(rt *rapid.T) {
			cfg := core.Config{
				MaxSurge:     rapid.IntRange(1, 3).Draw(rt, "max-surge"),
				KillTimeout:  time.Duration(rapid.IntRange(1, 30).Draw(rt, "kill-timeout-s")) * time.Second,
				ReadyTimeout: time.Duration(rapid.IntRange(-1, 60).Draw(rt, "ready-timeout-s")) * time.Second,
				Backoff:      core.Backoff{Initial: time.Duration(rapid.IntRange(1, 5000).Draw(rt, "backoff-ms")) * time.Millisecond},
			}
			cfg.Policy = drawBuiltinPolicy(rt, cfg.MaxSurge)
			drawHealth(rt, &cfg)
			// The old cluster's timers run as the executor runs them
			// (actors.WorkerTimers on a ManualClock): time passes between
			// inputs, each timer that comes due is stepped, and the
			// timers the core says are pending must be the clock's.
			clock := NewManualClock()
			timers := actors.NewWorkerTimers(clock)
			var fired []core.Timer
			old := core.New(cfg)
			var resumed *core.Cluster
			var pause time.Duration
			stepBoth := func(in core.Input, what string) {
				now := clock.Now()
				out := old.Step(now, in)
				timers.Stepped(in)
				for _, d := range out {
					if set, ok := d.(core.SetTimer); ok {
						timers.Set(set, func(t core.Timer) { fired = append(fired, t) })
					}
				}
				sameTimers(rt, old, clock, what)
				if resumed == nil {
					return
				}
				got := resumed.Step(now.Add(pause), in)
				shiftDecisions(got, -pause)
				if a, b := show(out), show(got); a != b {
					rt.Fatalf("%s (%T %+v): decisions differ after the handover:\n old     %s\n resumed %s", what, in, in, a, b)
				}
				sameState(rt, old, resumed, now, pause, fmt.Sprintf("%s (%T)", what, in))
			}
			stepBoth(core.Start{Target: rapid.IntRange(1, 5).Draw(rt, "workers")}, "start")
			steps := rapid.IntRange(1, 60).Draw(rt, "steps")
			handoverAt := rapid.IntRange(0, steps-1).Draw(rt, "handover-at")
			for i := range steps {
				if i == handoverAt {
					pause = time.Duration(rapid.IntRange(0, 600000).Draw(rt, "pause-ms")) * time.Millisecond
					resumed = handOver(rt, old, cfg, clock.Now(), pause)
				}
				wait, in := drawInput(rt, old, clock, &cfg)
				clock.Advance(wait, func() {
					for len(fired) > 0 {
						t := fired[0]
						fired = fired[1:]
						stepBoth(core.TimerFired{Timer: t}, fmt.Sprintf("step %d, a timer", i))
					}
				})
				if in != nil {
					stepBoth(in, fmt.Sprintf("step %d", i))
				}
			}
		})
	})
}

// handOver takes old's state at now through JSON and resumes it pause later.
func handOver(t *rapid.T, old *core.Cluster, cfg core.Config, now time.Time, pause time.Duration) *core.Cluster {
	st, err := old.Handover(now)
	if err != nil {
		t.Fatalf("handover: %v", err)
	}
	data, err := json.Marshal(st)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	read, err := core.DecodeState(data)
	if err != nil {
		t.Fatalf("decode: %v\n%s", err, data)
	}
	c, rearm, err := core.Resume(cfg, read, now.Add(pause))
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	if len(rearm) != len(st.Timers) {
		t.Fatalf("resume sets %d timers, %d were pending", len(rearm), len(st.Timers))
	}
	for i, d := range rearm {
		want := st.Timers[i]
		if set := d.(core.SetTimer); set.Timer != want.Timer || set.After != max(want.Due, 0) {
			t.Fatalf("timer %d: resume sets %+v, pending was %+v", i, set, want)
		}
	}
	sameState(t, old, c, now, pause, "the resume")
	return c
}

// sameState requires the same view (times shifted by the pause) and the
// same handed-over state, which holds what the view does not show: the
// pending timers, the jitter generator, the ready deadlines, the counts.
func sameState(t *rapid.T, old, resumed *core.Cluster, now time.Time, pause time.Duration, when string) {
	a, b := old.View(), shiftView(resumed.View(), -pause)
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		t.Fatalf("after %s: views differ:\n old     %s\n resumed %s", when, ja, jb)
	}
	sa, err := old.Handover(now)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := resumed.Handover(now.Add(pause))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(sa, sb) {
		x, _ := json.Marshal(sa)
		y, _ := json.Marshal(sb)
		t.Fatalf("after %s: states differ:\n old     %s\n resumed %s", when, x, y)
	}
}

// drawBuiltinPolicy is one of the built-in policies: a custom policy
// holding state of its own (chaosPolicy) is not handed over by the core.
func drawBuiltinPolicy(t *rapid.T, maxSurge int) core.Policy {
	switch rapid.IntRange(0, 2).Draw(t, "policy") {
	case 0:
		return core.Rolling{MaxSurge: maxSurge}
	case 1:
		return core.BlueGreen{}
	}
	return core.Canary{Soak: time.Duration(rapid.IntRange(0, 60).Draw(t, "soak-s")) * time.Second, MaxSurge: maxSurge}
}

// drawInput picks how long to wait and the input that comes next, from
// what the cluster holds: its workers (and an unknown one), the
// operator's commands, a reconfiguration (cfg follows it), or none but
// a wait until the next timer.
func drawInput(t *rapid.T, c *core.Cluster, clock *ManualClock, cfg *core.Config) (time.Duration, core.Input) {
	wait := time.Duration(rapid.IntRange(0, 20000).Draw(t, "advance-ms")) * time.Millisecond
	v := c.View()
	worker := func() core.WorkerID {
		if len(v.Workers) == 0 || rapid.IntRange(0, 9).Draw(t, "unknown-worker") == 0 {
			return core.WorkerID(rapid.IntRange(1, 100).Draw(t, "any-worker"))
		}
		return v.Workers[rapid.IntRange(0, len(v.Workers)-1).Draw(t, "worker")].ID
	}
	switch rapid.IntRange(0, 21).Draw(t, "input") {
	case 0:
		return wait, core.RestartRequested{Source: "SIGUSR2", Target: rapid.IntRange(0, 5).Draw(t, "restart-target")}
	case 1:
		if rapid.IntRange(0, 3).Draw(t, "really-stop") == 0 {
			return wait, core.StopRequested{Source: "SIGTERM"}
		}
		return wait, core.ScaleBy{Delta: rapid.SampledFrom([]int{-1, 1}).Draw(t, "delta"), Source: "ctl"}
	case 2:
		return wait, core.ScaleTo{Target: rapid.IntRange(0, 6).Draw(t, "scale-to"), Source: "ctl"}
	case 3:
		return wait, core.WorkerSpawned{Worker: worker(), PID: rapid.IntRange(100, 200).Draw(t, "pid")}
	case 4, 5, 6:
		return wait, core.WorkerListening{Worker: worker()}
	case 7, 8:
		reason := rapid.SampledFrom([]fsm.ExitReason{{Kind: fsm.ExitClean}, {Kind: fsm.ExitCode, Code: 1}}).Draw(t, "reason")
		return wait, core.WorkerExited{Worker: worker(), Reason: reason}
	case 9:
		return wait, core.WorkerDraining{Worker: worker()}
	case 10:
		return wait, core.WorkerHeartbeat{Worker: worker()}
	case 11:
		if rapid.Bool().Draw(t, "trigger") {
			return wait, core.WatchdogTriggered{Worker: worker()}
		}
		return wait, core.ReadyTimeoutExtended{Worker: worker(), By: time.Duration(rapid.IntRange(0, 120).Draw(t, "extend-s")) * time.Second}
	case 12, 20, 21:
		var in core.UsageSampled
		for _, w := range v.Workers {
			in.Samples = append(in.Samples, core.RSSSample{Worker: w.ID, RSS: int64(rapid.IntRange(0, 200).Draw(t, "rss"))})
		}
		return wait, in
	case 13:
		reason := rapid.SampledFrom([]string{"", core.RecycleRequests}).Draw(t, "restart-reason")
		return wait, core.WorkerRestartRequested{Worker: worker(), Reason: reason}
	case 14:
		return wait, core.ReplaceWorker{Worker: worker(), Source: "ctl"}
	case 15:
		next := *cfg
		next.Policy = drawBuiltinPolicy(t, next.MaxSurge)
		*cfg = next.WithDefaults()
		return wait, core.Reconfigure{Config: next}
	}
	if next, ok := clock.NextDue(); ok {
		return next, nil
	}
	return wait, core.WorkerHeartbeat{Worker: worker()}
}

// sameTimers requires the timers the core holds as pending to be the
// ones pending on the executor's clock, due at the same instants.
func sameTimers(t *rapid.T, c *core.Cluster, clock *ManualClock, what string) {
	st, err := c.Handover(clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	var held, clocked []time.Duration
	for _, tm := range st.Timers {
		held = append(held, tm.Due)
	}
	clock.mu.Lock()
	for _, tm := range clock.timers {
		clocked = append(clocked, tm.due.Sub(clock.now))
	}
	clock.mu.Unlock()
	slices.Sort(clocked)
	if !slices.Equal(held, clocked) {
		t.Fatalf("after %s: the core holds timers due in %v, the executor's clock %v", what, held, clocked)
	}
}

// shiftView moves every instant of v by d (a zero instant stays zero).
func shiftView(v core.View, d time.Duration) core.View {
	v.Now = shift(v.Now, d)
	for i := range v.Workers {
		shiftWorker(&v.Workers[i], d)
	}
	for i := range v.Slots {
		v.Slots[i].NotBefore = shift(v.Slots[i].NotBefore, d)
	}
	if r := v.Rollout; r != nil {
		r.Started, r.FirstReadyAt, r.FirstDiedAt = shift(r.Started, d), shift(r.FirstReadyAt, d), shift(r.FirstDiedAt, d)
	}
	return v
}

// shiftDecisions moves the instants the decisions carry (the workers of
// notes) by d.
func shiftDecisions(out []core.Decision, d time.Duration) {
	for i, x := range out {
		if n, ok := x.(core.Note); ok && n.Worker != nil {
			w := *n.Worker
			shiftWorker(&w, d)
			n.Worker = &w
			out[i] = n
		}
	}
}

func shiftWorker(w *core.Worker, d time.Duration) {
	w.ForkedAt, w.ReadyAt, w.LastHeartbeat = shift(w.ForkedAt, d), shift(w.ReadyAt, d), shift(w.LastHeartbeat, d)
	w.LifetimeEnd, w.RecycleAt = shift(w.LifetimeEnd, d), shift(w.RecycleAt, d)
}

func shift(t time.Time, d time.Duration) time.Time {
	if t.IsZero() {
		return t
	}
	return t.Add(d)
}

// show writes decisions as their types and JSON, which leaves out what
// a worker's copy keeps to itself (its ready deadline, which a pause
// shifts and shiftWorker cannot reach; the states compare it).
func show(out []core.Decision) string {
	s := ""
	for _, d := range out {
		j, err := json.Marshal(d)
		if err != nil {
			j = []byte(err.Error())
		}
		s += fmt.Sprintf("\n   %T %s", d, j)
	}
	return s
}
