// Package maxage is an example of a custom restart policy: it replaces,
// one at a time, workers that have been up longer than a maximum age, and
// otherwise rolls like the built-in rolling policy. docs/policies.md walks
// through it.
package maxage

import (
	"time"

	"github.com/dutchmaster/dutchmaster"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/fsm"
)

// Policy replaces the oldest worker once it has listened for Age.
type Policy struct{ Age time.Duration }

// Name is used in logs and status.
func (p Policy) Name() string { return "max-age" }

// Next rolls as the rolling policy does; when no rollout runs, it marks
// the oldest worker for replacement once it is too old, or asks to be
// woken when it will be.
func (p Policy) Next(v dutchmaster.ClusterView) dutchmaster.PolicyStep {
	step := dutchmaster.Rolling{MaxSurge: 1}.Next(v)
	if v.Rollout != nil {
		return step // one thing at a time: let the running rollout finish
	}
	var oldest *core.Worker
	for i, w := range v.Workers {
		if w.State == fsm.Listening && (oldest == nil || w.ReadyAt.Before(oldest.ReadyAt)) {
			oldest = &v.Workers[i]
		}
	}
	if oldest == nil {
		return step
	}
	if age := v.Now.Sub(oldest.ReadyAt); age >= p.Age {
		step.Replace = []core.WorkerID{oldest.ID}
	} else {
		step.Wait = p.Age - age
	}
	return step
}
