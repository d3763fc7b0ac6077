package scenarios

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/actors/observers/journal"
	"github.com/dutchmaster/dutchmaster/fsm"
)

// TestJournals replays every journal under testdata/journals (recorded
// from real runs with --record; TestScenarios replays them too, through
// RunDir), and checks that each one would catch a change in the core: the
// same journal with its first drain moved to another worker is rejected
// at that line.
func TestJournals(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("testdata", "journals", "*"+JournalExt))
	if err != nil {
		t.Fatal(err)
	}
	fromBinary := 0
	for _, path := range paths {
		t.Run(strings.TrimSuffix(filepath.Base(path), JournalExt), func(t *testing.T) {
			sum, err := CheckJournal(path)
			if err != nil {
				t.Fatal(err)
			}
			if sum.Header.PID != 0 && len(sum.Header.Command) > 0 {
				fromBinary++
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(string(data), "\n")
			drain := regexp.MustCompile(`\{"type":"Drain","worker":\d+`)
			for i, l := range lines {
				if loc := drain.FindStringIndex(l); loc != nil {
					lines[i] = l[:loc[0]] + `{"type":"Drain","worker":9999` + l[loc[1]:]
					edited := filepath.Join(t.TempDir(), "edited"+JournalExt)
					if err := os.WriteFile(edited, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
						t.Fatal(err)
					}
					_, err := CheckJournal(edited)
					var m *journal.Mismatch
					if !errors.As(err, &m) || m.Line != i+1 {
						t.Fatalf("a drain moved to another worker at line %d: got %v", i+1, err)
					}
					return
				}
			}
			t.Fatal("a journal without a drain tests little")
		})
	}
	if fromBinary == 0 {
		t.Fatal("no journal recorded by the dutchmaster binary under testdata/journals")
	}
}

// TestJournalInvariant: the check run after every replayed step refuses
// a step that drains a listening worker below what the invariant keeps,
// and one that starts more replacements than max-surge.
func TestJournalInvariant(t *testing.T) {
	w := func(id core.WorkerID, state fsm.State, replacement bool) core.Worker {
		return core.Worker{ID: id, State: state, Replacement: replacement}
	}
	cfg := core.Config{}.WithDefaults()
	two := core.View{Target: 2, Workers: []core.Worker{w(1, fsm.Listening, false), w(2, fsm.Listening, false)}}
	after := core.View{Target: 2, Workers: []core.Worker{w(1, fsm.Draining, false), w(2, fsm.Listening, false)}}
	bad := journal.Step{Before: two, After: after, Config: cfg, Decisions: []core.Decision{core.Drain{Worker: 1}}}
	if err := checkStep(bad); err == nil || !strings.Contains(err.Error(), "left 1 listening, 2 required") {
		t.Fatalf("a drain below the target: %v", err)
	}
	bad.After.Stopping = true
	if err := checkStep(bad); err != nil {
		t.Fatalf("a drain during a stop: %v", err)
	}
	rollout := &core.Rollout{Generation: 2, Baseline: 1}
	ok := journal.Step{Before: two, After: after, Config: cfg, Decisions: []core.Decision{core.Drain{Worker: 1}}}
	ok.Before.Rollout, ok.After.Rollout = rollout, rollout
	if err := checkStep(ok); err != nil {
		t.Fatalf("a drain down to a rollout's baseline: %v", err)
	}
	surge := journal.Step{Before: two, Config: cfg, After: core.View{Target: 2, Rollout: rollout,
		Workers: append(two.Workers, w(3, fsm.Forking, true), w(4, fsm.Forking, true))}}
	if err := checkStep(surge); err == nil || !strings.Contains(err.Error(), "2 replacements starting at once, max-surge is 1") {
		t.Fatalf("two replacements with max-surge 1: %v", err)
	}
}
