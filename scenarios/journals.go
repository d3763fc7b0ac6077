package scenarios

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/actors/observers/journal"
	"github.com/dutchmaster/dutchmaster/fsm"
)

// JournalExt is the extension of journals (written with --record) among
// the scenario files: RunDir replays them with RunJournal.
const JournalExt = ".jsonl"

// RunJournal replays a journal recorded from a real run (dutchmaster
// --record FILE) through the core, and fails the test at the first
// decision that differs from the recorded one, or the first step that
// breaks the invariant. Drop a journal under testdata/journals/ and it
// becomes a regression test (docs/operations.md).
func RunJournal(t *testing.T, path string, opts ...Options) {
	t.Helper()
	sum, err := CheckJournal(path, opts...)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if sum.Steps == 0 {
		t.Fatalf("%s: a journal without a single step", path)
	}
	t.Logf("%s: %d steps, %d decisions, the same as recorded", filepath.Base(path), sum.Steps, sum.Decisions)
}

// CheckJournal is RunJournal without a test: the journal replays to the
// same decisions, and every step keeps the invariant.
func CheckJournal(path string, opts ...Options) (journal.Summary, error) {
	ro := journal.ReplayOptions{Policies: map[string]core.Policy{}, AfterStep: checkStep}
	for _, o := range opts {
		for name, p := range o.Policies {
			ro.Policies[name] = p
		}
	}
	return journal.ReplayFile(path, ro)
}

// checkStep is the invariant (docs/architecture.md) on the core's own
// views, since a journal has no processes to check against (Guard does,
// for scenario files): outside a stop, a step that drains or kills a
// listening worker leaves at least the target listening, or during a
// rollout at least min(target, the rollout's baseline); and no more
// replacements are starting than the policy's max-surge.
func checkStep(s journal.Step) error {
	if s.After.Stopping {
		return nil
	}
	listening := map[core.WorkerID]bool{}
	for _, w := range s.Before.Workers {
		if w.State == fsm.Listening {
			listening[w.ID] = true
		}
	}
	stopped := []core.WorkerID{}
	for _, d := range s.Decisions {
		switch d := d.(type) {
		case core.Drain:
			if listening[d.Worker] {
				stopped = append(stopped, d.Worker)
			}
		case core.Kill:
			if listening[d.Worker] {
				stopped = append(stopped, d.Worker)
			}
		}
	}
	if len(stopped) > 0 {
		required := s.After.Target
		r := s.After.Rollout
		if r == nil {
			r = s.Before.Rollout // the step ended it, after its drains
		}
		if r != nil {
			required = min(required, r.Baseline)
		}
		if left := s.After.Listening(); left < required {
			return fmt.Errorf("invariant violated: stopping listening %v left %d listening, %d required", stopped, left, required)
		}
	}
	starting, limit := s.After.Starting(), surgeLimit(s.After, s.Config)
	if starting > limit {
		return fmt.Errorf("%d replacements starting at once, max-surge is %d", starting, limit)
	}
	return nil
}
