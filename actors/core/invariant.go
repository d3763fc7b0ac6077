package core

// drainAllowed is the replace-before-stop invariant (docs/architecture.md,
// "Where the invariant lives"), the one rule every drain outside a stop
// must pass: a worker that does not serve (not listening, or hung) may
// always be drained; a serving one only if the serving workers would
// still number at least `required` without it.
func drainAllowed(w Worker, serving, required int) bool {
	return !w.Serves() || serving-1 >= required
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
