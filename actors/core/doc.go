// Package core is the decision logic of the cluster actor, as plain data:
// given the cluster as it is, the time and one input (a signal, a worker's
// report, a timer), Step returns the decisions to carry out (fork, drain,
// kill, set a timer, log, stop) and the facts programs act on (ready, an
// input refused, a rollout begun, joined or ended). It does no I/O and
// keeps no clock, so the same inputs give the same decisions every time;
// the actor that owns it executes them.
//
// A Note is a log line for people; its Message may be reworded freely.
// Outside this package only printers read it (TestNoteMessagesOnlyPrinted).
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
