package journal_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"
	"pgregory.net/rapid"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/actors/observers/journal"
	"github.com/dutchmaster/dutchmaster/fsm"
	"github.com/dutchmaster/dutchmaster/scenarios"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var start = journal.Epoch

// TestEveryInputRoundTrips: each input type, with every field set, comes
// back from its journal form equal.
func TestEveryInputRoundTrips(t *testing.T) {
	inputs := []core.Input{
		core.Start{Target: 3},
		core.RestartRequested{Source: "SIGUSR2", Target: 4},
		core.WorkerRestartRequested{Worker: 7},
		core.WorkerRestartRequested{Worker: 8, Reason: core.RecycleRequests},
		core.WorkerHeartbeat{Worker: 2},
		core.WatchdogTriggered{Worker: 2},
		core.ReadyTimeoutExtended{Worker: 5, By: 2500 * time.Millisecond},
		core.UsageSampled{Samples: []core.RSSSample{{Worker: 1, RSS: 600 << 20}, {Worker: 3, RSS: 12345}}},
		core.TimerFired{Timer: core.Timer{Kind: core.WatchdogTime, Worker: 4}},
		core.Reconfigure{Config: core.Config{Watchdog: 10 * time.Second, AbortTimeout: time.Second, Seed: 42,
			Recycle: core.Recycle{MaxMemory: 1 << 30, MemorySamples: 4, MemoryJitter: time.Second, MaxLifetime: time.Hour,
				LifetimeJitter: time.Minute, MaxRequests: 1000, RequestsJitter: 50, Concurrency: 2}}},
		core.ReplaceWorker{Worker: 3, Source: "ctl#1 pid=42"},
		core.StopRequested{Source: "control"},
		core.ScaleBy{Delta: -1, Source: "SIGTTOU"},
		core.ScaleTo{Target: 5, Source: "control"},
		core.Reconfigure{Config: core.Config{MaxSurge: 2, KillTimeout: 5 * time.Second, ReadyTimeout: -1,
			Backoff: core.Backoff{Initial: time.Second, Max: time.Minute, Reset: time.Hour},
			Policy:  core.Canary{Soak: 90 * time.Second, MaxSurge: 2}}},
		core.WorkerSpawned{Worker: 2, PID: 4242},
		core.WorkerListening{Worker: 2},
		core.WorkerDraining{Worker: 2},
		core.WorkerExited{Worker: 2, Reason: fsm.ExitReason{Kind: fsm.ExitSignal, Signal: syscall.SIGSEGV, Detail: "boom\nline 2"}},
		core.WorkerExited{Worker: 3, Reason: fsm.ExitReason{Kind: fsm.ExitCode, Code: 3}},
		core.TimerFired{Timer: core.Timer{Kind: core.PolicyWake, Seq: 9}},
		core.TimerFired{Timer: core.Timer{Kind: core.BackoffEnd, Slot: 2}},
	}
	for _, in := range inputs {
		raw, err := journal.EncodeInput(in)
		if err != nil {
			t.Fatal(err)
		}
		back, err := journal.DecodeInput(raw, nil)
		if err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		if r, ok := back.(core.Reconfigure); ok {
			// WithDefaults is applied on the way in; compare what the core uses.
			want := in.(core.Reconfigure).Config.WithDefaults()
			if !reflect.DeepEqual(r.Config.WithDefaults(), want) {
				t.Errorf("%s: got %+v, want %+v", raw, r.Config, want)
			}
			continue
		}
		if !reflect.DeepEqual(back, in) {
			t.Errorf("%s: got %#v, want %#v", raw, back, in)
		}
		if !strings.HasPrefix(string(raw), `{"type":"`) {
			t.Errorf("%s: the type tag must come first", raw)
		}
	}
}

// TestEveryDecisionRoundTrips: each decision type comes back equal,
// including a Note's worker times and typed fields.
func TestEveryDecisionRoundTrips(t *testing.T) {
	w := core.Worker{ID: 3, Slot: 1, Generation: 2, State: fsm.Listening, PID: 99,
		ForkedAt: start.Add(1500 * time.Millisecond), ReadyAt: start.Add(1700*time.Millisecond + 3), Replacement: true, Due: true}
	decisions := []core.Decision{
		core.Fork{Worker: 4, Slot: 0, Generation: 2, Replacement: true},
		core.Fork{Worker: 5, Slot: 1, Generation: 2, MaxRequests: 1042},
		core.Abort{Worker: 2, Reason: "replaced by w5"},
		core.WatchdogMissed{Worker: 2, Reason: "no heartbeat for 10s"},
		core.Recycled{Worker: 3, Cause: core.RecycleMemory},
		core.Drain{Worker: 1, Reason: "replaced by w4"},
		core.Kill{Worker: 1, Reason: "kill timeout"},
		core.SetTimer{Timer: core.Timer{Kind: core.ReadyTimeout, Worker: 4}, After: time.Minute},
		core.Note{Level: zerolog.WarnLevel, Message: "worker exited", Worker: &w, Fields: []core.Field{
			{Key: "reason", Value: "code 1"}, {Key: "slot", Value: 0}, {Key: "boot", Value: 123 * time.Microsecond}}},
		core.Note{Level: zerolog.InfoLevel, Message: "cluster ready"},
		core.Stopped{},
		core.TargetChanged{Target: 3},
		core.RolloutStarted{Generation: 2, Baseline: 2, Source: "SIGUSR2"},
		core.RolloutEnded{Outcome: core.OutcomeAborted, Reason: "exited before ready: code 1"},
		core.RolloutCoalesced{Generation: 3, Source: "ctl#2 pid=7"},
		core.Ready{Generation: 1, Workers: 2},
		core.Refused{Input: core.RestartRequested{Source: "SIGUSR2", Target: 2}, Reason: "stopping"},
		core.Refused{Input: core.ScaleBy{Delta: -1, Source: "SIGTTOU"}, Reason: "not started"},
		core.Refused{Input: core.WorkerRestartRequested{Worker: 4}, Reason: "worker is forking"},
		core.Refused{Input: core.ReplaceWorker{Worker: 999, Source: "ctl#3 pid=8"}, Reason: "no worker w999"},
		core.Refused{Input: core.Start{Target: 2}, Reason: "already started"},
	}
	for _, d := range decisions {
		raw, err := journal.EncodeDecision(d, start)
		if err != nil {
			t.Fatal(err)
		}
		back, err := journal.DecodeDecision(raw, start)
		if err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		if !reflect.DeepEqual(back, d) {
			t.Errorf("%s:\n got %#v\nwant %#v", raw, back, d)
		}
	}
}

// TestDurationsRoundTrip: any duration survives its text form exactly.
func TestDurationsRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		d := journal.Duration(rapid.Int64().Draw(t, "ns"))
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		var back journal.Duration
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if back != d {
			t.Fatalf("%s: got %d, want %d", b, back, d)
		}
	})
}

// record runs a scripted cluster on the scenario driver and records it.
func record(t fataler, cfg core.Config, script func(d *scenarios.Driver)) []byte {
	var buf bytes.Buffer
	rec, err := journal.NewRecorder(&buf, journal.Header{Name: "test"}, cfg, scenarios.Epoch)
	if err != nil {
		t.Fatal(err)
	}
	d := scenarios.NewDriver()
	defer d.Close()
	d.Start(actors.Options{Logger: zerolog.Nop(), Core: cfg, Observe: rec.Observe, Workers: func() int { return 2 }},
		func(o actors.Options) scenarios.Host { return scenarios.NewSyncHost(o) })
	script(d)
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rollingRestart: start, ready, a restart, a crash, a stop.
func rollingRestart(t fataler) func(d *scenarios.Driver) {
	return func(d *scenarios.Driver) {
		must(t, d.SettleWorkers())
		must(t, d.Signal(syscall.SIGUSR2))
		d.Advance(1500 * time.Millisecond)
		must(t, d.SettleWorkers())
		v := d.Host.View()
		must(t, d.Deliver(v.Workers[0].ID, actors.Exited{Code: 1}))
		d.Advance(time.Second)
		must(t, d.SettleWorkers())
		must(t, d.Signal(syscall.SIGTERM))
		must(t, d.SettleWorkers())
	}
}

// fataler is what both *testing.T and *rapid.T offer.
type fataler interface {
	Helper()
	Fatal(args ...any)
}

func must(t fataler, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestReplaySameDecisions: a recorded run replays with the same decisions.
func TestReplaySameDecisions(t *testing.T) {
	j := record(t, core.Config{}, rollingRestart(t))
	sum, err := journal.Replay(bytes.NewReader(j), journal.ReplayOptions{})
	if err != nil {
		t.Fatalf("%v\njournal:\n%s", err, j)
	}
	lines := strings.Count(string(j), "\n")
	if sum.Steps != lines-1 || sum.Decisions == 0 || sum.Truncated {
		t.Fatalf("summary %+v for %d lines", sum, lines)
	}
	if sum.Header.Name != "test" || sum.Header.Config.Policy.Name != "rolling" {
		t.Fatalf("header %+v", sum.Header)
	}
	for _, want := range []string{`"type":"RolloutEnded","outcome":"complete"`, `"type":"Stopped"`, `"type":"WorkerExited"`} {
		if !strings.Contains(string(j), want) {
			t.Errorf("journal lacks %s", want)
		}
	}
}

// TestReplayRejectsEdits: a changed decision, a changed input and a
// missing decision are each reported at their line, with both sides.
func TestReplayRejectsEdits(t *testing.T) {
	j := string(record(t, core.Config{}, rollingRestart(t)))
	lines := strings.Split(j, "\n")
	find := func(substr string) int {
		for i, l := range lines {
			if strings.Contains(l, substr) {
				return i
			}
		}
		t.Fatalf("no line with %s", substr)
		return -1
	}
	edit := func(i int, from, to string) string {
		cp := append([]string(nil), lines...)
		if !strings.Contains(cp[i], from) {
			t.Fatalf("line %d has no %s", i+1, from)
		}
		cp[i] = strings.Replace(cp[i], from, to, 1)
		return strings.Join(cp, "\n")
	}
	fork := find(`"replacement":true`)
	cases := []struct {
		name    string
		journal string
		line    int
		want    string
	}{
		{"decision changed", edit(fork, `"replacement":true`, `"replacement":false`), fork + 1, `"replacement":false`},
		{"input changed", edit(find(`"type":"WorkerListening","worker":3`), `"worker":3`, `"worker":4`), find(`"type":"WorkerListening","worker":3`) + 1, "(none)"},
		{"decision dropped", edit(fork, `{"type":"Fork"`, `{"type":"Stopped"},{"type":"Fork"`), fork + 1, `{"type":"Stopped"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := journal.Replay(strings.NewReader(c.journal), journal.ReplayOptions{})
			var m *journal.Mismatch
			if !errors.As(err, &m) {
				t.Fatalf("got %v, want a mismatch", err)
			}
			if m.Line != c.line || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("mismatch at line %d (want %d), want %q in:\n%v", m.Line, c.line, c.want, err)
			}
		})
	}
}

// TestReplayFormatErrors: what is not a journal is said so, with the line.
func TestReplayFormatErrors(t *testing.T) {
	j := string(record(t, core.Config{}, rollingRestart(t)))
	header, rest, _ := strings.Cut(j, "\n")
	cases := []struct{ name, journal, want string }{
		{"empty", "", "empty file"},
		{"not a journal", `{"hello":1}` + "\n", "not a dutchmaster journal"},
		{"other version", strings.Replace(header, `"version":3`, `"version":9`, 1) + "\n", "journal version 9"},
		{"fact in version 1", strings.Replace(header, `"version":3`, `"version":1`, 1) + "\n" +
			`{"at":"0s","input":{"type":"Start","target":1},"decisions":[{"type":"Ready","generation":1,"workers":1}]}` + "\n",
			"line 2: decision 1: a core.Ready in a version 1 journal"},
		{"unknown input", header + "\n" + `{"at":"0s","input":{"type":"Nope"}}` + "\n", "line 2: input: unknown input type"},
		{"misspelt field", header + "\n" + `{"at":"0s","input":{"type":"Start","targte":2}}` + "\n", `unknown field "targte"`},
		{"custom policy", strings.Replace(header, `"policy":{"name":"rolling","max_surge":1}`, `"policy":{"name":"mine","custom":true}`, 1) + "\n" + rest, `custom policy`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := journal.Replay(strings.NewReader(c.journal), journal.ReplayOptions{})
			var fe *journal.FormatError
			if !errors.As(err, &fe) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want a format error with %q", err, c.want)
			}
		})
	}
}

// TestReplayCustomPolicy: a journal recorded with a custom policy replays
// when the policy is given by name.
func TestReplayCustomPolicy(t *testing.T) {
	j := record(t, core.Config{Policy: mine{}}, rollingRestart(t))
	if _, err := journal.Replay(bytes.NewReader(j), journal.ReplayOptions{Policies: map[string]core.Policy{"mine": mine{}}}); err != nil {
		t.Fatal(err)
	}
}

type mine struct{}

func (mine) Name() string               { return "mine" }
func (mine) Next(v core.View) core.Step { return core.Rolling{MaxSurge: 2}.Next(v) }

// TestReplayTruncated: a last line cut short (the master died while
// writing it) is reported and ignored.
func TestReplayTruncated(t *testing.T) {
	j := record(t, core.Config{}, rollingRestart(t))
	cut := j[:len(j)-10]
	sum, err := journal.Replay(bytes.NewReader(cut), journal.ReplayOptions{})
	if err != nil || !sum.Truncated {
		t.Fatalf("summary %+v, err %v: want truncated and no error", sum, err)
	}
}

// TestGeneratedRunsReplay: random runs (restarts, crashes, scaling,
// timers, stops, under every policy) replay to the same decisions, so
// nothing the core decides is lost in the journal form.
func TestGeneratedRunsReplay(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		policies := []core.Policy{core.Rolling{MaxSurge: 1}, core.Rolling{MaxSurge: 3}, core.BlueGreen{}, core.Canary{Soak: 5 * time.Second, MaxSurge: 1}}
		cfg := core.Config{Policy: rapid.SampledFrom(policies).Draw(rt, "policy"), KillTimeout: 10 * time.Second, ReadyTimeout: 20 * time.Second}
		j := record(rt, cfg, func(d *scenarios.Driver) {
			for i := range rapid.IntRange(1, 40).Draw(rt, "steps") {
				_ = i
				v := d.Host.View()
				switch rapid.IntRange(0, 7).Draw(rt, "action") {
				case 0:
					_ = d.Signal(syscall.SIGUSR2)
				case 1:
					_ = d.SettleWorkers()
				case 2, 3:
					if len(v.Workers) > 0 {
						w := rapid.SampledFrom(v.Workers).Draw(rt, "worker")
						_ = d.Deliver(w.ID, actors.Exited{Code: rapid.IntRange(0, 2).Draw(rt, "code")})
					}
				case 4:
					d.Advance(time.Duration(rapid.IntRange(1, 40).Draw(rt, "seconds")) * time.Second)
				case 5:
					_ = d.Signal(rapid.SampledFrom([]syscall.Signal{syscall.SIGTTIN, syscall.SIGTTOU}).Draw(rt, "scale"))
				case 6:
					if len(v.Workers) > 0 {
						w := rapid.SampledFrom(v.Workers).Draw(rt, "asker")
						_ = d.Deliver(w.ID, actors.IPC{Line: []byte(`{"event":"request-restart"}`)})
					}
				case 7:
					if rapid.IntRange(0, 4).Draw(rt, "stop") == 0 {
						_ = d.Signal(syscall.SIGTERM)
					}
				}
			}
		})
		if _, err := journal.Replay(bytes.NewReader(j), journal.ReplayOptions{}); err != nil {
			rt.Fatalf("%v\njournal:\n%s", err, j)
		}
	})
}

// withFacts: start, ready, a restart, a second one that joins it, the
// end of the rollout, a stop and a restart refused because of it.
func withFacts(t fataler) func(d *scenarios.Driver) {
	return func(d *scenarios.Driver) {
		must(t, d.SettleWorkers())
		must(t, d.Signal(syscall.SIGUSR2))
		must(t, d.Signal(syscall.SIGUSR2))
		must(t, d.SettleWorkers())
		must(t, d.Signal(syscall.SIGTERM))
		must(t, d.Signal(syscall.SIGUSR2))
		must(t, d.SettleWorkers())
	}
}

var factTags = []string{
	`{"type":"Ready","generation":1,"workers":2}`,
	`{"type":"RolloutCoalesced","generation":3,"source":"SIGUSR2"}`,
	`{"type":"Refused","input":{"type":"RestartRequested","source":"SIGUSR2","target":2},"reason":"stopping"}`,
}

// TestReplayFacts: a journal records the facts (Ready, RolloutCoalesced,
// Refused) and replays with them; an edited fact is a mismatch at its line.
func TestReplayFacts(t *testing.T) {
	j := string(record(t, core.Config{}, withFacts(t)))
	if !strings.HasPrefix(j, `{"journal":"dutchmaster","version":3,`) {
		t.Fatalf("header: %s", j[:strings.Index(j, "\n")])
	}
	for _, want := range factTags {
		if !strings.Contains(j, want) {
			t.Errorf("journal lacks %s:\n%s", want, j)
		}
	}
	if _, err := journal.Replay(strings.NewReader(j), journal.ReplayOptions{}); err != nil {
		t.Fatalf("%v\njournal:\n%s", err, j)
	}
	lines := strings.Split(j, "\n")
	for _, c := range []struct{ from, to string }{
		{`{"type":"Ready","generation":1,"workers":2}`, `{"type":"Ready","generation":1,"workers":3}`},
		{`"reason":"stopping"}`, `"reason":"not started"}`},
		{`{"type":"RolloutCoalesced","generation":3,`, `{"type":"RolloutCoalesced","generation":2,`},
	} {
		t.Run(c.from, func(t *testing.T) {
			line := -1
			for i, l := range lines {
				if strings.Contains(l, c.from) {
					line = i
					break
				}
			}
			if line < 0 {
				t.Fatalf("no line with %s", c.from)
			}
			cp := append([]string(nil), lines...)
			cp[line] = strings.Replace(cp[line], c.from, c.to, 1)
			_, err := journal.Replay(strings.NewReader(strings.Join(cp, "\n")), journal.ReplayOptions{})
			var m *journal.Mismatch
			if !errors.As(err, &m) || m.Line != line+1 || !strings.Contains(m.Recorded, c.to) {
				t.Fatalf("got %v, want a mismatch at line %d recording %s", err, line+1, c.to)
			}
		})
	}
}

// TestReplayVersion1: a version 1 journal (the same run without the facts
// version 2 added) replays: the replayed facts are left out before
// comparing, and the summary counts the decisions compared. A version 2
// journal (version 3 added only the upgrade lines) replays as written.
func TestReplayVersion1(t *testing.T) {
	v3 := string(record(t, core.Config{}, withFacts(t)))
	v2 := strings.Replace(v3, `"version":3`, `"version":2`, 1)
	v1 := strings.Replace(v3, `"version":3`, `"version":1`, 1)
	for _, fact := range factTags {
		for _, sep := range []string{fact + ",", "," + fact, fact} {
			v1 = strings.ReplaceAll(v1, sep, "")
		}
	}
	v1 = strings.ReplaceAll(v1, `,"decisions":[]`, "")
	if strings.Contains(v1, `"type":"Ready"`) || strings.Contains(v1, `"type":"Refused"`) || strings.Contains(v1, `"type":"RolloutCoalesced"`) {
		t.Fatalf("facts left in the version 1 journal:\n%s", v1)
	}
	sum1, err := journal.Replay(strings.NewReader(v1), journal.ReplayOptions{})
	if err != nil {
		t.Fatalf("%v\njournal:\n%s", err, v1)
	}
	sum2, err := journal.Replay(strings.NewReader(v2), journal.ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sum1.Steps != sum2.Steps || sum1.Decisions != sum2.Decisions-len(factTags) {
		t.Fatalf("version 1: %d steps, %d decisions; version 2: %d steps, %d decisions", sum1.Steps, sum1.Decisions, sum2.Steps, sum2.Decisions)
	}
}
