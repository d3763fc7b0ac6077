// Package actors runs the supervision core as an actor system: one cluster
// actor that makes every decision, and one worker actor per worker process.
//
// The guarantee this package exists for: no worker is stopped before its
// replacement is listening. Outside a graceful stop, a listening worker is
// drained only when the workers that are listening and not draining would
// still number at least the target count without it. The rule is written
// once, in package core (drainAllowed), and the cluster actor is the only
// caller of core, through the Executor: signals, control commands, worker
// reports and timers all reach it as messages, one at a time.
//
// Worker actors own one process each through its fsm.Lifecycle. They turn
// runtime events (spawned, IPC and notify messages, exit) and their own
// timers into lifecycle events, report every change to the cluster actor,
// and carry out its drain and kill orders through the Runtime. The OS is
// behind two ports, Runtime and Clock; tests replace both (package
// scenarios), production uses the real ones.
package actors
