package scenarios

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/fsm"
)

// handoverRun drives a core on a ManualClock the way the executor does
// (its timers kept by actors.WorkerTimers, each fired timer stepped), checks the
// replace-before-stop rule at each drain or kill, and logs every step's
// decisions with its time counted from the start, without the pause of a
// handover: a run with a handover and one without must log the same.
type handoverRun struct {
	t       *testing.T
	c       *core.Cluster
	clock   *ManualClock
	timers  *actors.WorkerTimers
	paused  time.Duration // the handover's pause, cut out of the log's times
	fired   []core.Timer
	log     []string
	drained map[core.WorkerID]bool
	drains  []core.WorkerID // in order
}

func newHandoverRun(t *testing.T, cfg core.Config) *handoverRun {
	clock := NewManualClock()
	return &handoverRun{t: t, c: core.New(cfg), clock: clock, timers: actors.NewWorkerTimers(clock), drained: map[core.WorkerID]bool{}}
}

func (r *handoverRun) step(in core.Input) []core.Decision {
	r.t.Helper()
	before := r.c.View()
	out := r.c.Step(r.clock.Now(), in)
	// The rule: outside a stop, once a step drained a serving worker,
	// the workers still serving number at least the target (during a
	// rollout, at least its baseline, if fewer).
	required := before.Target
	if ro := before.Rollout; ro != nil {
		required = min(required, ro.Baseline)
	}
	after := r.c.View()
	r.timers.Stepped(in)
	for _, d := range out {
		var id core.WorkerID
		switch d := d.(type) {
		case core.SetTimer:
			r.arm(d)
		case core.Drain:
			id = d.Worker
		case core.Kill:
			id = d.Worker
		}
		if id != 0 && !r.drained[id] {
			r.drained[id] = true
			if viewWorker(before, id).Serves() && !after.Stopping && after.Listening() < required {
				r.t.Fatalf("%s drained leaving %d serving, %d required", id, after.Listening(), required)
			}
			r.drains = append(r.drains, id)
		}
	}
	logged := append([]core.Decision(nil), out...)
	shiftDecisions(logged, -r.paused)
	r.log = append(r.log, fmt.Sprintf("%s %T%s", r.clock.Now().Add(-r.paused).Sub(Epoch), in, show(logged)))
	return out
}

func viewWorker(v core.View, id core.WorkerID) core.Worker {
	for _, w := range v.Workers {
		if w.ID == id {
			return w
		}
	}
	return core.Worker{}
}

func (r *handoverRun) arm(d core.SetTimer) {
	r.timers.Set(d, func(t core.Timer) { r.fired = append(r.fired, t) })
}

// advance moves the clock, stepping each timer as it fires.
func (r *handoverRun) advance(d time.Duration) {
	r.clock.Advance(d, func() {
		for len(r.fired) > 0 {
			t := r.fired[0]
			r.fired = r.fired[1:]
			r.step(core.TimerFired{Timer: t})
		}
	})
}

// handOver hands the cluster over through JSON and resumes it pause
// later on a new clock: the old timers are gone with the old image, the
// resume sets those that were pending.
func (r *handoverRun) handOver(cfg core.Config, pause time.Duration) core.State {
	st, err := r.c.Handover(r.clock.Now())
	if err != nil {
		r.t.Fatal(err)
	}
	data, err := json.Marshal(st)
	if err != nil {
		r.t.Fatal(err)
	}
	read, err := core.DecodeState(data)
	if err != nil {
		r.t.Fatal(err)
	}
	r.clock = &ManualClock{now: r.clock.Now().Add(pause)}
	r.timers = actors.NewWorkerTimers(r.clock)
	r.paused += pause
	c, rearm, err := core.Resume(cfg, read, r.clock.Now())
	if err != nil {
		r.t.Fatal(err)
	}
	r.c = c
	for _, d := range rearm {
		r.arm(d.(core.SetTimer))
	}
	return st
}

// forks lists the workers forked by out.
func forks(out []core.Decision) []core.WorkerID {
	var ids []core.WorkerID
	for _, d := range out {
		if f, ok := d.(core.Fork); ok {
			ids = append(ids, f.Worker)
		}
	}
	return ids
}

// TestHandoverDuringRollingRestart: a master hands its core over in the
// middle of a rolling restart of three workers, while a replacement
// boots and a crashed slot backs off, and takes five minutes to resume.
// The resumed core keeps the remaining times (the slot is re-forked 1 s
// after the resume, not before), the rollout completes with the
// replace-before-stop rule held at every drain, and every decision is
// the one a master that never stopped makes, at the same time counted
// without the pause.
func TestHandoverDuringRollingRestart(t *testing.T) {
	cfg := core.Config{ReadyTimeout: 10 * time.Second, Backoff: core.Backoff{Initial: 2 * time.Second}}
	run := func(handover bool) *handoverRun {
		r := newHandoverRun(t, cfg)
		r.step(core.Start{Target: 3}) // w1..w3
		r.advance(time.Second)
		for id := core.WorkerID(1); id <= 3; id++ {
			r.step(core.WorkerListening{Worker: id})
		}
		r.advance(time.Second) // 2 s
		if got := forks(r.step(core.RestartRequested{Source: "SIGUSR2"})); len(got) != 1 || got[0] != 4 {
			t.Fatalf("restart forked %v, want w4 (replacing w1)", got)
		}
		r.advance(500 * time.Millisecond)
		r.step(core.WorkerExited{Worker: 2, Reason: fsm.ExitReason{Kind: fsm.ExitCode, Code: 1}}) // w5 at once
		r.advance(500 * time.Millisecond)                                                         // 3 s
		r.step(core.WorkerExited{Worker: 5, Reason: fsm.ExitReason{Kind: fsm.ExitCode, Code: 1}}) // slot 1 backs off 2 s
		r.advance(time.Second)                                                                    // 4 s

		if handover {
			st := r.handOver(cfg, 5*time.Minute)
			want := map[core.Timer]time.Duration{
				{Kind: core.BackoffEnd, Slot: 1}:     time.Second,     // due at 5 s
				{Kind: core.ReadyTimeout, Worker: 4}: 8 * time.Second, // due at 12 s
				{Kind: core.PolicyWake}:              -1,              // absent
				{Kind: core.ReadyTimeout, Worker: 5}: -1,              // w5 exited
			}
			got := map[core.Timer]time.Duration{}
			for _, tm := range st.Timers {
				got[tm.Timer] = tm.Due
			}
			for k, due := range want {
				if d, ok := got[k]; due < 0 && ok || due >= 0 && (!ok || d != due) {
					t.Errorf("handed over timer %+v due in %v (pending %v), want %v", k, d, ok, due)
				}
			}
			if st.Rollout == nil || st.Rollout.Generation != 2 || st.Rollout.Source != "SIGUSR2" || st.Slots[1].Failures != 2 {
				t.Errorf("handed over rollout %+v, slots %+v", st.Rollout, st.Slots)
			}
		}

		r.advance(999 * time.Millisecond)
		if v := r.c.View(); len(v.Workers) != 3 {
			t.Fatalf("slot 1 re-forked before its backoff ended: %+v", v.Workers)
		}
		r.advance(time.Millisecond) // 5 s: the backoff ends, w6 fills slot 1
		if _, ok := r.c.Worker(6); !ok {
			t.Fatalf("slot 1 not re-forked when its backoff ended: %+v", r.c.View().Workers)
		}
		r.advance(time.Second)
		r.step(core.WorkerListening{Worker: 6})
		r.step(core.WorkerListening{Worker: 4}) // drains w1, forks w7 for slot 2
		r.step(core.WorkerExited{Worker: 1})
		r.advance(time.Second)
		r.step(core.WorkerListening{Worker: 7}) // drains w3: complete
		r.step(core.WorkerExited{Worker: 3})
		r.advance(20 * time.Second) // every ready timeout passes
		return r
	}
	straight, resumed := run(false), run(true)
	v := resumed.c.View()
	if v.Rollout != nil || v.Listening() != 3 || v.Generation != 2 {
		t.Fatalf("after the rollout: %+v", v)
	}
	for _, w := range v.Workers {
		if w.Generation != 2 {
			t.Errorf("%s of generation %d left", w.ID, w.Generation)
		}
	}
	if fmt.Sprint(resumed.drains) != "[w1 w3]" {
		t.Errorf("drained %v, want [w1 w3], each once its replacement listened", resumed.drains)
	}
	if !strings.Contains(strings.Join(resumed.log, "\n"), `core.RolloutEnded {"Outcome":"complete"`) {
		t.Errorf("the rollout did not complete:\n%s", strings.Join(resumed.log, "\n"))
	}
	if a, b := strings.Join(straight.log, "\n"), strings.Join(resumed.log, "\n"); a != b {
		t.Errorf("the resumed master decided otherwise:\nwithout a handover:\n%s\nwith one:\n%s", a, b)
	}
}
