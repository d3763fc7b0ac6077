package core

import "github.com/dutchmaster/dutchmaster/fsm"

// drainAllowed is the replace-before-stop invariant (docs/architecture.md,
// "Where the invariant lives"), the one rule every drain outside a stop
// must pass: a worker that is not listening may always be drained (it
// serves nothing); a listening one only if the listening workers would
// still number at least `required` without it.
func drainAllowed(state fsm.State, listening, required int) bool {
	return state != fsm.Listening || listening-1 >= required
}

// requiredListening is how many workers must keep listening outside a
// stop: the target, or during a rollout that has not had that many
// listening, the most it has had (never fewer than when it began).
func requiredListening(target int, r *Rollout) int {
	if r != nil {
		return min(target, r.Baseline)
	}
	return target
}
