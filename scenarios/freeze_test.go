package scenarios

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"
	"pgregory.net/rapid"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/fsm"
)

// upgradeRun is a cluster actor on the scripted runtime and clock, in a
// synctest bubble, whose steps and runtime calls are logged with their
// time counted from the start without the pause of a handover: a run
// with a handover and one without must log the same.
type upgradeRun struct {
	t      *testing.T
	d      *Driver
	system *actor.ActorSystem

	mu     sync.Mutex
	paused time.Duration
	log    []string
	steps  int
}

// upgradeOptions: two workers, ready by the timer mode 3 s after they
// are spawned, a drain waited on for 10 s before the kill.
func upgradeOptions() actors.Options {
	ready, _ := actors.ParseReadyMode("timer:3s")
	return actors.Options{
		Logger: zerolog.Nop(), Workers: func() int { return 2 }, Ready: ready,
		Core: core.Config{KillTimeout: 10 * time.Second, ReadyTimeout: 30 * time.Second},
	}
}

func (r *upgradeRun) observe(now time.Time, in core.Input, out []core.Decision) {
	r.mu.Lock()
	defer r.mu.Unlock()
	logged := append([]core.Decision(nil), out...)
	shiftDecisions(logged, -r.paused)
	j, _ := json.Marshal(in)
	r.log = append(r.log, fmt.Sprintf("%s %T %s%s", now.Add(-r.paused).Sub(Epoch), in, j, show(logged)))
	r.steps++
}

// calls logs the runtime calls made since the last.
func (r *upgradeRun) calls() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.d.Runtime.takeCalls() {
		r.log = append(r.log, fmt.Sprintf("%s runtime: %s", r.d.Clock.Now().Add(-r.paused).Sub(Epoch), c))
	}
}

func (r *upgradeRun) stepCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.steps
}

func (r *upgradeRun) cluster() *actors.Cluster { return r.d.Host.(*ActorHost).Cluster }

// check fails the test on an invariant violation (replace-before-stop at
// every drain and kill, the view against the processes).
func (r *upgradeRun) check(when string) {
	r.t.Helper()
	r.calls()
	for _, v := range r.d.Check() {
		r.t.Errorf("%s: invariant violated: %s", when, v)
	}
}

func (r *upgradeRun) state(id core.WorkerID) fsm.State {
	for _, w := range r.d.Host.View().Workers {
		if w.ID == id {
			return w.State
		}
	}
	return ""
}

// rollingRestart runs a rolling restart of two workers, calling atCut
// 8 s in (startRollingRestart) and finishing it on the run atCut returns
// (finishRollingRestart).
func rollingRestart(t *testing.T, atCut func(*upgradeRun) *upgradeRun) *upgradeRun {
	r := atCut(startRollingRestart(t))
	r.finishRollingRestart()
	return r
}

// startRollingRestart starts a rolling restart of two workers and stops
// 8 s in, when w1 is draining (ordered at 7 s, its kill due at 17 s), w2
// and w3 listen, and w4, w2's replacement, boots (its ready timer due at
// 10 s). Each worker is ready 3 s after it is spawned; w2 spoke IPC (an
// unknown message), so it is drained over IPC.
func startRollingRestart(t *testing.T) *upgradeRun {
	r := &upgradeRun{t: t, d: NewDriver(), system: actors.NewSystem(zerolog.Nop())}
	opts := upgradeOptions()
	opts.Observe = r.observe
	r.d.Start(opts, func(o actors.Options) Host { return NewActorHost(r.system, o) })
	r.d.Advance(3 * time.Second)
	if err := r.d.Deliver(2, actors.IPC{Line: []byte(`{"event":"hello"}`)}); err != nil {
		t.Fatal(err)
	}
	r.d.Advance(time.Second)
	if err := r.d.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	r.d.Advance(4 * time.Second) // 8 s
	r.check("before the cut")
	if s := r.state(4); s != fsm.Forking {
		t.Fatalf("at the cut w4 is %s, want forking", s)
	}
	return r
}

// finishRollingRestart goes on from the cut: w4 is ready 2 s later,
// which drains w2, which exits; w1 is killed at its kill timeout, 9 s
// after the cut.
func (r *upgradeRun) finishRollingRestart() {
	t := r.t
	r.d.Advance(1999 * time.Millisecond)
	r.check("w4's ready timer not yet due")
	if s := r.state(4); s != fsm.Forking {
		t.Fatalf("w4 is %s 1.999 s after the cut; its ready timer had 2 s left", s)
	}
	r.d.Advance(time.Millisecond) // 10 s: w4 ready, w2 drained
	r.check("w4 ready")
	if s := r.state(4); s != fsm.Listening {
		t.Fatalf("w4 is %s 2 s after the cut, want listening", s)
	}
	if err := r.d.Deliver(2, actors.Exited{}); err != nil {
		t.Fatal(err)
	}
	r.d.Advance(6999 * time.Millisecond)
	r.check("w1's kill timeout not yet due")
	if s := r.state(1); s != fsm.Draining {
		t.Fatalf("w1 is %q 8.999 s after the cut; its kill timeout had 9 s left", s)
	}
	r.d.Advance(time.Millisecond) // 17 s: w1 killed
	r.d.Advance(time.Minute)      // every ready timeout passes
	r.check("the end")
}

func (r *upgradeRun) close() {
	r.d.Close()
	shutdownInBubble(r.system)
}

// freeze freezes the cluster and checks the snapshot of the cut.
func (r *upgradeRun) freeze() actors.Snapshot {
	r.t.Helper()
	snap, err := r.cluster().Freeze(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	checkCut(r.t, snap)
	if _, err := r.cluster().Freeze(context.Background()); err == nil || !strings.Contains(err.Error(), "already frozen") {
		r.t.Errorf("a second freeze: %v, want it refused", err)
	}
	return snap
}

func checkCut(t *testing.T, snap actors.Snapshot) {
	t.Helper()
	var got []string
	for _, w := range snap.Workers {
		rt := "-"
		if w.ReadyTimer != nil {
			rt = w.ReadyTimer.String()
		}
		got = append(got, fmt.Sprintf("%s %s pid=%d spoke=%v ignored=%d/%d ready=%s timer=%s",
			w.Spec.ID, w.State, w.PID, w.SpokeIPC, w.Ignored, w.Logged, w.Ready, rt))
	}
	want := []string{
		"w1 draining pid=1001 spoke=false ignored=0/0 ready=timer:3s timer=-",
		"w2 listening pid=1002 spoke=true ignored=1/1 ready=timer:3s timer=-",
		"w3 listening pid=1003 spoke=false ignored=0/0 ready=timer:3s timer=-",
		"w4 forking pid=1004 spoke=false ignored=0/0 ready=timer:3s timer=2s",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("snapshot workers:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	timers := map[core.Timer]time.Duration{}
	for _, tm := range snap.Core.Timers {
		timers[tm.Timer] = tm.Due
	}
	if d, ok := timers[core.Timer{Kind: core.KillTimeout, Worker: 1}]; !ok || d != 9*time.Second {
		t.Errorf("w1's kill timeout due in %v (%v), want 9s; timers %+v", d, ok, snap.Core.Timers)
	}
	if d, ok := timers[core.Timer{Kind: core.ReadyTimeout, Worker: 4}]; !ok || d != 29*time.Second {
		t.Errorf("w4's ready timeout due in %v (%v), want 29s", d, ok)
	}
	if ro := snap.Core.Rollout; ro == nil || ro.Generation != 2 || ro.Source != "SIGUSR2" {
		t.Errorf("snapshot rollout %+v, want generation 2 by SIGUSR2", ro)
	}
}

// TestFreezeThaw: frozen in the middle of a rolling restart, the
// cluster's snapshot is the cut (a draining worker with its kill timeout
// left, a booting one with its ready timer left); thawed at once, the
// rollout goes on exactly as if it had not been frozen.
func TestFreezeThaw(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		straight := rollingRestart(t, func(r *upgradeRun) *upgradeRun { return r })
		defer straight.close()
		thawed := rollingRestart(t, func(r *upgradeRun) *upgradeRun {
			r.freeze()
			r.cluster().Thaw()
			r.d.Settle()
			return r
		})
		defer thawed.close()
		sameRun(t, straight, thawed)
	})
}

// TestFrozenKeepsMessages: while frozen, the cluster takes no step and
// its workers do nothing: a worker's ready timer that fires and an input
// sent after it are kept, each by its actor; views are answered. Thawed,
// each is handled: the cluster's own first, then the worker's (its
// report reaches the cluster only then), and the rollout completes with
// replace-before-stop.
func TestFrozenKeepsMessages(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := startRollingRestart(t)
		defer r.close()
		r.freeze()
		steps := r.stepCount()
		before := r.d.Host.View()
		r.d.Advance(3 * time.Second) // w4's ready timer fires
		r.d.Send(core.ScaleTo{Target: 3, Source: "frozen"})
		if n := r.stepCount(); n != steps {
			t.Errorf("%d steps while frozen", n-steps)
		}
		if after := r.d.Host.View(); fmt.Sprint(after.Workers) != fmt.Sprint(before.Workers) || after.Target != 2 {
			t.Errorf("frozen cluster changed:\n%+v\nto\n%+v", before, after)
		}
		if calls := r.d.Runtime.takeCalls(); len(calls) != 0 {
			t.Errorf("runtime calls while frozen: %v", calls)
		}
		r.mu.Lock()
		frozenAt := len(r.log)
		r.mu.Unlock()
		r.cluster().Thaw()
		r.d.Settle()
		r.mu.Lock()
		var thawed []string
		for _, l := range r.log[frozenAt : frozenAt+2] {
			thawed = append(thawed, strings.Fields(l)[1])
		}
		r.mu.Unlock()
		if strings.Join(thawed, " ") != "core.ScaleTo core.WorkerListening" {
			t.Errorf("steps after the thaw: %v, want the cluster's kept ScaleTo, then w4's kept readiness", thawed)
		}
		if v := r.d.Host.View(); v.Target != 3 {
			t.Errorf("after the thaw the target is %d, want the kept ScaleTo's 3", v.Target)
		}
		if s := r.state(4); s != fsm.Listening {
			t.Errorf("after the thaw w4 is %s, want listening by its kept ready timer", s)
		}
		r.check("thawed")
		if err := r.d.Deliver(2, actors.Exited{}); err != nil {
			t.Fatal(err)
		}
		r.d.Advance(time.Minute) // w1 killed, the third slot's worker ready
		r.check("the end")
		if !strings.Contains(strings.Join(r.log, "\n"), `core.RolloutEnded {"Outcome":"complete"`) {
			t.Errorf("the rollout did not complete:\n%s", strings.Join(r.log, "\n"))
		}
		if v := r.d.Host.View(); v.Listening() != 3 || v.Rollout != nil {
			t.Errorf("at the end: %+v", v)
		}
	})
}

// TestResumeInNewCluster: frozen in the middle of a rolling restart, the
// cluster is handed over (its snapshot through JSON) to a new actor
// system on a new runtime that knows the same processes, five minutes
// later. The new cluster reattaches every worker, its pending timers
// (w1's kill timeout, w4's ready timer and ready timeout) fire after the
// time they had left, orders reach the reattached workers (w2 drained
// over IPC, as it spoke IPC to the old master; w1 killed), and every
// step and runtime call is the one of a cluster that was never handed
// over, at the same time counted without the pause.
func TestResumeInNewCluster(t *testing.T) {
	const pause = 5 * time.Minute
	synctest.Test(t, func(t *testing.T) {
		straight := rollingRestart(t, func(r *upgradeRun) *upgradeRun { return r })
		defer straight.close()
		resumed := rollingRestart(t, func(old *upgradeRun) *upgradeRun {
			snap := old.freeze()
			data, err := json.Marshal(snap)
			if err != nil {
				t.Fatal(err)
			}
			var read actors.Snapshot
			if err := json.Unmarshal(data, &read); err != nil {
				t.Fatal(err)
			}
			checkCut(t, read)
			old.d.Host.Close() // the old image is gone
			shutdownInBubble(old.system)

			r := old
			r.system = actors.NewSystem(zerolog.Nop())
			r.mu.Lock()
			r.paused = pause
			r.mu.Unlock()
			err = r.d.HandOver(read, pause, func(o actors.Options) (Host, error) {
				return NewResumedActorHost(r.system, o)
			})
			if err != nil {
				t.Fatal(err)
			}
			rt := r.d.Runtime
			if calls := rt.takeCalls(); strings.Join(calls, ",") != "reattach w1,reattach w2,reattach w3,reattach w4" {
				t.Errorf("resumed runtime calls %v, want every worker reattached", calls)
			}
			if v := r.d.Host.View(); len(v.Workers) != 4 || v.Rollout == nil {
				t.Fatalf("resumed view %+v", v)
			}
			return r
		})
		defer resumed.close()
		sameRun(t, straight, resumed)
	})
}

// sameRun compares two runs' logs, and checks that the rollout
// completed and drained w1 and w2 (replace-before-stop is checked at
// each drain by the guard).
func sameRun(t *testing.T, straight, other *upgradeRun) {
	t.Helper()
	a, b := strings.Join(straight.log, "\n"), strings.Join(other.log, "\n")
	if a != b {
		t.Errorf("the runs differ:\nwithout a handover:\n%s\nwith one:\n%s", a, b)
	}
	for _, want := range []string{
		`core.RolloutEnded {"Outcome":"complete"`,
		"runtime: drain w1 via=signal",
		"runtime: drain w2 via=ipc",
		"runtime: kill w1",
	} {
		if !strings.Contains(b, want) {
			t.Errorf("no %q in:\n%s", want, b)
		}
	}
	v := other.d.Host.View()
	if v.Rollout != nil || v.Listening() != 2 || v.Generation != 2 || len(v.Workers) != 2 {
		t.Errorf("after the rollout: %+v", v)
	}
}

// TestFreezeReachesCut: Freeze is called while a worker's report is
// still on its way (the runtime was paused after delivering it, nothing
// settled): w3's ready message makes the cluster drain w1 and fork w4,
// and w1's actor handle the drain. The cut is reached only once all of
// that is done; it is refused while w4's fork has not reported its pid,
// and taken once it has, the core and the workers agreeing in it.
func TestFreezeReachesCut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &upgradeRun{t: t, d: NewDriver(), system: actors.NewSystem(zerolog.Nop())}
		defer r.close()
		opts := actors.Options{Logger: zerolog.Nop(), Workers: func() int { return 2 }, Observe: r.observe}
		r.d.Start(opts, func(o actors.Options) Host { return NewActorHost(r.system, o) })
		if err := r.d.SettleWorkers(); err != nil {
			t.Fatal(err)
		}
		if err := r.d.Signal(syscall.SIGUSR2); err != nil {
			t.Fatal(err)
		}
		// w3 is spawned; its ready message reaches its mailbox, unsettled.
		if err := r.d.Runtime.deliver(3, ReadyMessage(actors.ReadyIPC), r.d.Opts.Ready); err != nil {
			t.Fatal(err)
		}
		_, err := r.cluster().Freeze(context.Background())
		if err == nil || !strings.Contains(err.Error(), "worker w4 is being forked") {
			t.Fatalf("freeze with w4's fork under way: %v, want it refused", err)
		}
		r.d.Settle() // w4 spawned
		snap, err := r.cluster().Freeze(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, w := range snap.Workers {
			got = append(got, fmt.Sprintf("%s %s", w.Spec.ID, w.State))
		}
		var core []string
		for _, w := range snap.Core.Workers {
			core = append(core, fmt.Sprintf("%s %s", w.ID, w.State))
		}
		want := "w1 draining,w2 listening,w3 listening,w4 forking"
		if strings.Join(got, ",") != want || strings.Join(core, ",") != want {
			t.Errorf("at the cut the workers are %v, the core has %v; want %s", got, core, want)
		}
		if calls := r.d.Runtime.takeCalls(); strings.Join(calls, ",") != "drain w1 via=ipc" {
			t.Errorf("runtime calls before the cut: %v, want w1's drain", calls)
		}
		r.cluster().Thaw()
		r.d.Settle()
		if err := r.d.SettleWorkers(); err != nil {
			t.Fatal(err)
		}
		r.check("the end")
		if v := r.d.Host.View(); v.Rollout != nil || v.Listening() != 2 || v.Generation != 2 {
			t.Errorf("after the rollout: %+v", v)
		}
	})
}

// TestGeneratedHandoverActors: generated sequences through the real
// actors (as TestGeneratedSequencesActors) in which, after any step, the
// cluster may be frozen and then thawed (the exec failed) or handed over
// through JSON to a new cluster actor on a runtime that adopts the
// processes, after a pause (handOverSometimes). The invariant and the
// agreement of the view with the processes hold after every step, and
// the cluster converges. 200 sequences.
func TestGeneratedHandoverActors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		system := actors.NewSystem(discard)
		defer shutdownInBubble(system)
		freeze := func(h Host) (actors.Snapshot, func(), error) {
			c := h.(*ActorHost).Cluster
			snap, err := c.Freeze(context.Background())
			return snap, c.Thaw, err
		}
		resume := func(o actors.Options) (Host, error) { return NewResumedActorHost(system, o) }
		withChecks(t, 200, func() {
			rapid.Check(noDeadline{t}, func(rt *rapid.T) {
				d := NewDriver()
				defer func() { d.Close() }()
				runSequenceWith(rt, d, func(o actors.Options) Host { return NewActorHost(system, o) }, handOverTurns(freeze, resume))
			})
		})
	})
}

// TestGeneratedHandoverSync does the same on the synchronous host, whose
// cut is wherever it is idle: 500 sequences.
func TestGeneratedHandoverSync(t *testing.T) {
	freeze := func(h Host) (actors.Snapshot, func(), error) {
		snap, err := h.(*SyncHost).Snapshot()
		return snap, func() {}, err
	}
	resume := func(o actors.Options) (Host, error) { return NewResumedSyncHost(o) }
	withChecks(t, 500, func() {
		rapid.Check(t, func(rt *rapid.T) {
			d := NewDriver()
			defer func() { d.Close() }()
			runSequenceWith(rt, d, func(o actors.Options) Host { return NewSyncHost(o) }, handOverTurns(freeze, resume))
		})
	})
}

// handOverTurns extend a generated sequence: many of them run in the
// timer ready mode (the workers' ready timers are handed over too); after
// each step, one time in eight, the cluster's snapshot is taken (freeze,
// which also returns how to undo it) and either undone (the exec failed)
// or handed over through JSON to a host that resume starts from it,
// after a pause; the resumed cluster must be the one handed over
// (resumedAsHanded).
func handOverTurns(freeze func(Host) (actors.Snapshot, func(), error), resume func(actors.Options) (Host, error)) sequenceTurns {
	var turns sequenceTurns
	turns.configure = func(rt *rapid.T, o *actors.Options) {
		// Not with the random policy (the replacements it starts would
		// still boot when the sequence switches to rolling to converge,
		// more than its max-surge), nor with lifetimes so short that the
		// recycles of booting workers would never end.
		_, chaos := o.Core.Policy.(*chaosPolicy)
		if l := o.Core.Recycle.MaxLifetime; chaos || l > 0 && l < 10*time.Second || !rapid.Bool().Draw(rt, "ready-timer") {
			return
		}
		// Well within the ready timeout, or no worker would ever be ready.
		most := max(min(o.Core.ReadyTimeout/2, time.Second), 100*time.Millisecond)
		o.Ready = actors.ReadyMode{Source: actors.ReadyTimer,
			After: time.Duration(rapid.Int64Range(int64(100*time.Millisecond), int64(most)).Draw(rt, "ready-after"))}
	}
	turns.between = func(rt *rapid.T, d *Driver) string {
		if rapid.IntRange(0, 7).Draw(rt, "upgrade") != 0 {
			return "no upgrade"
		}
		snap, thaw, err := freeze(d.Host)
		if err != nil {
			rt.Fatalf("freeze: %v", err)
		}
		if rapid.Bool().Draw(rt, "exec-fails") {
			thaw()
			d.Settle()
			return "freeze, thaw"
		}
		data, err := json.Marshal(snap)
		if err != nil {
			rt.Fatal(err)
		}
		read, err := actors.DecodeSnapshot(data)
		if err != nil {
			rt.Fatal(err)
		}
		d.Host.Close()
		pause := time.Duration(rapid.IntRange(0, 600).Draw(rt, "pause-s")) * time.Second
		if err := d.HandOver(read, pause, resume); err != nil {
			rt.Fatalf("resume: %v", err)
		}
		again, thaw, err := freeze(d.Host)
		if err != nil {
			rt.Fatalf("freeze after the resume: %v", err)
		}
		resumedAsHanded(rt, d, data, again)
		thaw()
		d.Settle()
		return fmt.Sprintf("handover, %s pause", pause)
	}
	return turns
}

// resumedAsHanded requires a cluster just resumed (no time passed since)
// to be the one handed over (data, the snapshot's JSON): its snapshot
// taken at once (again) is the same, and its clock holds exactly the
// timers the snapshot says are pending, the core's and the workers'
// ready timers, each due after the time it had left.
func resumedAsHanded(t *rapid.T, d *Driver, data []byte, again actors.Snapshot) {
	// Taken at its own instant: the rest must be the same.
	var handed actors.Snapshot
	if err := json.Unmarshal(data, &handed); err != nil {
		t.Fatal(err)
	}
	again.At = handed.At
	if got, _ := json.Marshal(again); string(got) != string(data) {
		t.Fatalf("the resumed cluster's snapshot differs:\nhanded over %s\nresumed     %s", data, got)
	}
	var want, clocked []time.Duration
	for _, tm := range again.Core.Timers {
		want = append(want, max(tm.Due, 0))
	}
	for _, w := range again.Workers {
		if w.ReadyTimer != nil {
			want = append(want, *w.ReadyTimer)
		}
	}
	d.Clock.mu.Lock()
	for _, tm := range d.Clock.timers {
		clocked = append(clocked, tm.due.Sub(d.Clock.now))
	}
	d.Clock.mu.Unlock()
	slices.Sort(want)
	slices.Sort(clocked)
	if !slices.Equal(want, clocked) {
		t.Fatalf("the resumed cluster's clock holds timers due in %v, the snapshot says %v", clocked, want)
	}
}
