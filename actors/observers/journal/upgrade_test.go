package journal_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/actors/observers/journal"
	"github.com/dutchmaster/dutchmaster/fsm"
	"github.com/dutchmaster/dutchmaster/scenarios"
)

// coreRun drives a core on a manual clock as the executor does (the
// timers it sets fire and are stepped, each step recorded), and can hand
// the core over to a "new image": a new core resumed from the state's
// JSON on a new clock, recording through the continued journal.
type coreRun struct {
	t      fataler
	cfg    core.Config
	c      *core.Cluster
	clock  *scenarios.ManualClock
	timers *actors.WorkerTimers
	fired  []core.Timer
	rec    *journal.Recorder
}

func newCoreRun(t fataler, cfg core.Config, w *bytes.Buffer) *coreRun {
	clock := scenarios.NewManualClock()
	rec, err := journal.NewRecorder(w, journal.Header{Name: "test"}, cfg, clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &coreRun{t: t, cfg: cfg, c: core.New(cfg), clock: clock, timers: actors.NewWorkerTimers(clock), rec: rec}
}

func (r *coreRun) step(in core.Input) []core.Decision {
	now := r.clock.Now()
	out := r.c.Step(now, in)
	r.rec.Observe(now, in, out)
	r.timers.Stepped(in)
	for _, d := range out {
		if st, ok := d.(core.SetTimer); ok {
			r.timers.Set(st, func(t core.Timer) { r.fired = append(r.fired, t) })
		}
	}
	return out
}

func (r *coreRun) advance(d time.Duration) {
	r.clock.Advance(d, func() {
		for len(r.fired) > 0 {
			t := r.fired[0]
			r.fired = r.fired[1:]
			r.step(core.TimerFired{Timer: t})
		}
	})
}

var testUpgrade = journal.UpgradeRecord{
	From:        journal.Image{Binary: "/opt/old/dutchmaster", Version: "v1.2.0"},
	To:          journal.Image{Binary: "/opt/new/dutchmaster", Version: "v1.3.0"},
	StateFormat: core.StateFormat,
}

// upgrade hands the core over at the clock's now and resumes it pause
// later on a new clock and a new core, as the new image does: the
// recording continues on w through ContinueWriter, and the old timers
// are gone with the old image (the resume sets those that were pending).
func (r *coreRun) upgrade(w *bytes.Buffer, pause time.Duration) {
	r.t.Helper()
	handedAt := r.clock.Now()
	jst, err := r.rec.Upgrade(handedAt, testUpgrade)
	if err != nil {
		r.t.Fatal(err)
	}
	st, err := r.c.Handover(handedAt)
	if err != nil {
		r.t.Fatal(err)
	}
	handed, err := json.Marshal(struct {
		Core    core.State    `json:"core"`
		Journal journal.State `json:"journal"`
	}{st, jst})
	if err != nil {
		r.t.Fatal(err)
	}

	// The new image: its own clock, which reads the wall clock pause later.
	var got struct {
		Core    json.RawMessage `json:"core"`
		Journal journal.State   `json:"journal"`
	}
	if err := json.Unmarshal(handed, &got); err != nil {
		r.t.Fatal(err)
	}
	clock := scenarios.NewManualClock()
	clock.Advance(handedAt.Sub(clock.Now())+pause, func() {})
	rec, err := journal.ContinueWriter(w, got.Journal, clock.Now())
	if err != nil {
		r.t.Fatal(err)
	}
	cst, err := core.DecodeState(got.Core)
	if err != nil {
		r.t.Fatal(err)
	}
	c, rearm, err := core.Resume(r.cfg, cst, clock.Now())
	if err != nil {
		r.t.Fatal(err)
	}
	if err := rec.Resumed(clock.Now(), "v1.3.0", rearm); err != nil {
		r.t.Fatal(err)
	}
	r.c, r.clock, r.rec, r.fired = c, clock, rec, nil
	r.timers = actors.NewWorkerTimers(clock)
	for _, d := range rearm {
		r.timers.Set(d.(core.SetTimer), func(t core.Timer) { r.fired = append(r.fired, t) })
	}
}

// recordUpgradeDuringRollout records a rolling restart of three workers
// with an upgrade in its middle, while a replacement boots and a crashed
// slot backs off (the same run as the core's own handover test), five
// minutes of pause; the rollout then completes and the master stops.
// Without the upgrade (pause < 0), the same run on one core.
func recordUpgradeDuringRollout(t fataler, pause time.Duration) []byte {
	var buf bytes.Buffer
	cfg := core.Config{ReadyTimeout: 10 * time.Second, Backoff: core.Backoff{Initial: 2 * time.Second}}
	r := newCoreRun(t, cfg, &buf)
	r.step(core.Start{Target: 3}) // w1..w3
	r.advance(time.Second)
	for id := core.WorkerID(1); id <= 3; id++ {
		r.step(core.WorkerSpawned{Worker: id, PID: 100 + int(id)})
		r.step(core.WorkerListening{Worker: id})
	}
	r.advance(time.Second)
	r.step(core.RestartRequested{Source: "SIGUSR2"}) // w4 replaces w1
	r.step(core.WorkerSpawned{Worker: 4, PID: 104})
	r.advance(500 * time.Millisecond)
	r.step(core.WorkerExited{Worker: 2, Reason: fsm.ExitReason{Kind: fsm.ExitCode, Code: 1}}) // w5 at once
	r.advance(500 * time.Millisecond)
	r.step(core.WorkerExited{Worker: 5, Reason: fsm.ExitReason{Kind: fsm.ExitCode, Code: 1}}) // slot 1 backs off 2 s
	r.advance(time.Second)
	if pause >= 0 {
		r.upgrade(&buf, pause)
	}
	r.advance(time.Second) // the backoff ends: w6 fills slot 1
	r.step(core.WorkerSpawned{Worker: 6, PID: 106})
	r.advance(time.Second)
	r.step(core.WorkerListening{Worker: 6})
	r.step(core.WorkerListening{Worker: 4}) // drains w1, forks w7 for slot 2
	r.step(core.WorkerExited{Worker: 1, Reason: fsm.ExitReason{Kind: fsm.ExitClean}})
	r.advance(time.Second)
	for _, w := range r.c.View().Workers {
		if w.State == fsm.Forking {
			r.step(core.WorkerSpawned{Worker: w.ID, PID: 100 + int(w.ID)})
			r.step(core.WorkerListening{Worker: w.ID})
		}
	}
	for _, w := range r.c.View().Workers {
		if w.State == fsm.Draining {
			r.step(core.WorkerExited{Worker: w.ID, Reason: fsm.ExitReason{Kind: fsm.ExitClean}})
		}
	}
	r.advance(30 * time.Second)
	r.step(core.StopRequested{Source: "SIGTERM"})
	for _, w := range r.c.View().Workers {
		r.step(core.WorkerExited{Worker: w.ID, Reason: fsm.ExitReason{Kind: fsm.ExitClean}})
	}
	r.advance(time.Minute)
	if err := r.rec.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestReplayAcrossUpgrade: a journal recorded across an upgrade (the old
// image's upgrade line, the new image's resumed line and its steps
// counted on from the handover plus the pause) replays with every
// decision the same, the timers set again at the resume included; the
// rollout went on after the upgrade. Moving the resumed instant by a
// second (a replay that would not cut the same pause) is a mismatch.
func TestReplayAcrossUpgrade(t *testing.T) {
	j := recordUpgradeDuringRollout(t, 5*time.Minute)
	sum, err := journal.Replay(bytes.NewReader(j), journal.ReplayOptions{})
	if err != nil {
		t.Fatalf("%v\njournal:\n%s", err, j)
	}
	if sum.Upgrades != 1 || sum.UpgradeUnfinished || sum.FailedUpgrades != 0 {
		t.Fatalf("summary %+v", sum)
	}
	lines := strings.Split(strings.TrimSpace(string(j)), "\n")
	up, res := -1, -1
	for i, l := range lines {
		switch {
		case strings.HasPrefix(l, `{"at":"4s","upgrade":{"from":{"binary":"/opt/old/dutchmaster","version":"v1.2.0"},"to":{"binary":"/opt/new/dutchmaster","version":"v1.3.0"},"state_format":1,`):
			up = i
		case strings.HasPrefix(l, `{"at":"5m4s","resumed":{"version":"v1.3.0","timers":[{"type":"SetTimer"`):
			res = i
		}
	}
	if up < 0 || res != up+1 {
		t.Fatalf("upgrade line %d, resumed line %d (want the one after):\n%s", up, res, j)
	}
	// After the resume, the slot backing off is re-forked 1 s after the
	// resume (as it had 1 s left) and the rollout completes.
	after := strings.Join(lines[res+1:], "\n")
	for _, want := range []string{
		`{"at":"5m5s","input":{"type":"TimerFired","timer":{"kind":"backoff","slot":1}},"decisions":[{"type":"Fork","worker":6,"slot":1,`,
		`"type":"RolloutEnded","outcome":"complete"`,
	} {
		if !strings.Contains(after, want) {
			t.Errorf("no %s after the resume:\n%s", want, after)
		}
	}

	// The decisions after the resume count from the same start: moved by
	// a second, the resume is no longer the one the master made.
	moved := append([]string(nil), lines...)
	moved[res] = strings.Replace(moved[res], `{"at":"5m4s",`, `{"at":"5m5s",`, 1)
	_, err = journal.Replay(strings.NewReader(strings.Join(moved, "\n")), journal.ReplayOptions{})
	var m *journal.Mismatch
	if !errors.As(err, &m) || m.Line <= res+1 {
		t.Fatalf("resumed a second later: got %v, want a mismatch after line %d", err, res+1)
	}
}

// TestReplayUpgradeSameAsWithout: the journal across an upgrade has the
// same steps and decisions as the run without one, each after the
// upgrade the pause later.
func TestReplayUpgradeSameAsWithout(t *testing.T) {
	with, err := journal.Replay(bytes.NewReader(recordUpgradeDuringRollout(t, 5*time.Minute)), journal.ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	without, err := journal.Replay(bytes.NewReader(recordUpgradeDuringRollout(t, -1)), journal.ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The resume's timers are decisions compared too.
	if with.Steps != without.Steps || with.Decisions <= without.Decisions {
		t.Fatalf("with the upgrade %+v, without %+v", with, without)
	}
}

// TestReplayFailedUpgrade: an exec that failed is recorded; the old
// image's core goes on untouched and the journal replays.
func TestReplayFailedUpgrade(t *testing.T) {
	var buf bytes.Buffer
	r := newCoreRun(t, core.Config{}, &buf)
	r.step(core.Start{Target: 2})
	r.advance(time.Second)
	if _, err := r.rec.Upgrade(r.clock.Now(), testUpgrade); err != nil {
		t.Fatal(err)
	}
	r.advance(time.Second)
	if err := r.rec.UpgradeFailed(r.clock.Now(), errors.New("exec /opt/new/dutchmaster: permission denied")); err != nil {
		t.Fatal(err)
	}
	for id := core.WorkerID(1); id <= 2; id++ {
		r.step(core.WorkerSpawned{Worker: id, PID: 100 + int(id)})
		r.step(core.WorkerListening{Worker: id})
	}
	r.advance(time.Minute)
	sum, err := journal.Replay(bytes.NewReader(buf.Bytes()), journal.ReplayOptions{})
	if err != nil || sum.FailedUpgrades != 1 || sum.Upgrades != 0 || sum.UpgradeUnfinished {
		t.Fatalf("summary %+v, err %v\n%s", sum, err, buf.Bytes())
	}
	if !strings.Contains(buf.String(), `{"at":"2s","upgrade_failed":{"error":"exec /opt/new/dutchmaster: permission denied"}}`) {
		t.Fatalf("no upgrade_failed line:\n%s", buf.Bytes())
	}
	// A journal that ends at the upgrade (the new image never wrote) is
	// whole, and says so.
	cut := buf.String()[:strings.Index(buf.String(), `{"at":"2s","upgrade_failed"`)]
	sum, err = journal.Replay(strings.NewReader(cut), journal.ReplayOptions{})
	if err != nil || !sum.UpgradeUnfinished {
		t.Fatalf("summary %+v, err %v", sum, err)
	}
}

// TestReplayUpgradeFormatErrors: a damaged upgrade record, or upgrade
// lines out of their order, is a *FormatError at its line.
func TestReplayUpgradeFormatErrors(t *testing.T) {
	j := string(recordUpgradeDuringRollout(t, time.Minute))
	lines := strings.Split(strings.TrimSpace(j), "\n")
	up := -1
	for i, l := range lines {
		if strings.Contains(l, `"upgrade":`) {
			up = i
		}
	}
	if up < 0 {
		t.Fatalf("no upgrade line:\n%s", j)
	}
	edit := func(i int, from, to string) string {
		cp := append([]string(nil), lines...)
		if !strings.Contains(cp[i], from) {
			t.Fatalf("line %d has no %s: %s", i+1, from, cp[i])
		}
		cp[i] = strings.Replace(cp[i], from, to, 1)
		return strings.Join(cp, "\n")
	}
	swap := func(i int) string { // line i after line i+1
		cp := append([]string(nil), lines...)
		cp[i], cp[i+1] = cp[i+1], cp[i]
		return strings.Join(cp, "\n")
	}
	twice := func(i int) string { // line i instead of line i+1
		cp := append([]string(nil), lines...)
		cp[i+1] = cp[i]
		return strings.Join(cp, "\n")
	}
	drop := func(i int) string {
		cp := append(append([]string(nil), lines[:i]...), lines[i+1:]...)
		return strings.Join(cp, "\n")
	}
	cases := []struct {
		name, journal string
		line          int
		want          string
	}{
		{"no new binary", edit(up, `"to":{"binary":"/opt/new/dutchmaster",`, `"to":{`), up + 1, "upgrade: no new binary"},
		{"no state format", edit(up, `"state_format":1,`, ``), up + 1, "upgrade: state format 0"},
		{"unknown field", edit(up, `"state_format":1,`, `"state_format":1,"fd":7,`), up + 1, `upgrade: json: unknown field "fd"`},
		{"not an object", edit(up, lines[up], `{"at":"4s","upgrade":"v1.3.0"}`), up + 1, "upgrade: json: cannot unmarshal string"},
		{"upgrade in version 2", strings.Replace(j, `"version":3`, `"version":2`, 1), up + 1, "an upgrade line in a version 2 journal"},
		{"step and upgrade in one", edit(up, `"upgrade":`, `"input":{"type":"Start","target":1},"upgrade":`), up + 1, "2 kinds of line in one"},
		{"neither", edit(up, `"upgrade":`, `"upgrayed":`), up + 1, "0 kinds of line in one"},
		{"resumed without upgrade", drop(up), up + 1, "resumed without an upgrade line"},
		{"step before the resume", swap(up + 1), up + 2, "a step between the upgrade at line " + itoa(up+1)},
		{"upgrade before the last step", edit(up, `{"at":"4s",`, `{"at":"2s",`), up + 1, "upgrade line at 2s, before the line above it (3s)"},
		{"resumed before upgrade", edit(up+1, `{"at":"1m4s",`, `{"at":"3s",`), up + 2, "before the line above it"},
		{"resumed timer not a timer", edit(up+1, `"timers":[{"type":"SetTimer",`, `"timers":[{"type":"Stopped"},{"type":"SetTimer",`), up + 2, "timer 1: a core.Stopped, not a SetTimer"},
		{"resumed unknown field", edit(up+1, `"resumed":{`, `"resumed":{"pid":1,`), up + 2, `resumed: json: unknown field "pid"`},
		{"two upgrades", twice(up), up + 2, "an upgrade while the one at line " + itoa(up+1)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := journal.Replay(strings.NewReader(c.journal), journal.ReplayOptions{})
			var fe *journal.FormatError
			if !errors.As(err, &fe) || fe.Line != c.line || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want a format error at line %d with %q", err, c.line, c.want)
			}
		})
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

// TestContinueFile: the new image takes the journal file over by its
// descriptor (here a duplicate of the old image's, which is closed, as
// the exec closes the old image's objects but not the descriptor) and
// appends to it: one header, one time line, and the file replays.
func TestContinueFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run.jsonl")
	cfg := core.Config{}
	clock := scenarios.NewManualClock()
	rec, err := journal.Create(path, journal.Header{Name: "test"}, cfg, clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := core.New(cfg)
	step := func(rec *journal.Recorder, now time.Time, in core.Input) {
		rec.Observe(now, in, c.Step(now, in))
	}
	step(rec, clock.Now(), core.Start{Target: 1})
	clock.Advance(time.Second, func() {})
	now := clock.Now()
	st, err := rec.Upgrade(now, testUpgrade)
	if err != nil {
		t.Fatal(err)
	}
	if st.FD < 0 || st.Path != path || st.Version != journal.Version || time.Duration(st.At) != time.Second {
		t.Fatalf("journal state %+v", st)
	}
	cst, err := c.Handover(now)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Dup(st.FD)
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}

	// The recording cannot continue from a descriptor that is not open,
	// nor a version this binary does not write.
	closed := st
	if closed.FD, err = syscall.Dup(fd); err != nil {
		t.Fatal(err)
	}
	syscall.Close(closed.FD)
	if _, err := journal.Continue(closed, now); err == nil || !strings.Contains(err.Error(), "descriptor") {
		t.Fatalf("continue on a closed descriptor: %v", err)
	}
	older := st
	older.Version = 2
	if _, err := journal.Continue(older, now); err == nil || !strings.Contains(err.Error(), "in version 2 and this binary writes version 3") {
		t.Fatalf("continue a version 2 journal: %v", err)
	}

	st.FD = fd
	resumeAt := now.Add(250 * time.Millisecond)
	rec2, err := journal.Continue(st, resumeAt)
	if err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	var rearm []core.Decision
	if c, rearm, err = core.Resume(cfg, cst, resumeAt); err != nil {
		t.Fatal(err)
	}
	if err := rec2.Resumed(resumeAt, "v1.3.0", rearm); err != nil {
		t.Fatal(err)
	}
	step(rec2, resumeAt.Add(time.Second), core.WorkerSpawned{Worker: 1, PID: 42})
	step(rec2, resumeAt.Add(2*time.Second), core.WorkerListening{Worker: 1})
	if err := rec2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := rec2.Close(); err != nil {
		t.Fatal(err)
	}

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), `"journal":"dutchmaster"`); n != 1 {
		t.Fatalf("%d headers:\n%s", n, data)
	}
	if !strings.Contains(string(data), `{"at":"1.25s","resumed":{"version":"v1.3.0","timers":[`) ||
		!strings.Contains(string(data), `{"at":"3.25s","input":{"type":"WorkerListening","worker":1}`) {
		t.Fatalf("the new image's times do not go on from the handover plus the pause:\n%s", data)
	}
	sum, err := journal.ReplayFile(path, journal.ReplayOptions{})
	if err != nil || sum.Upgrades != 1 || sum.Steps != 3 {
		t.Fatalf("summary %+v, err %v\n%s", sum, err, data)
	}
}
