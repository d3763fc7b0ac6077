// Package core is the decision logic of the cluster actor, as plain data:
// given the cluster as it is, the time and one input (a signal, a worker's
// report, a timer), Step returns the decisions to carry out (fork, drain,
// kill, set a timer, log, stop). It does no I/O and keeps no clock, so the
// same inputs give the same decisions every time; the actor that owns it
// executes them.
//
// The replace-before-stop invariant lives here, in drainAllowed: outside a
// stop, a listening worker is drained only when the workers that are
// listening and not draining would still number at least the target count
// without it (or at least as many as were listening when the rollout began,
// if fewer). Every path that drains a listening worker goes through it.
//
// A worker's state in the cluster's view changes only through the
// lifecycle table (fsm.Next), in one function, move.
package core
