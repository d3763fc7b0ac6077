// Package scenarios replays scenario files against the real actor system
// with a scripted runtime and a scripted clock, and checks the
// replace-before-stop invariant after every step.
//
// A scenario file reads as a story, in the format of
// github.com/cockroachdb/datadriven: a directive with arguments, the line
// "----", then the expected log lines and runtime calls. `go test
// ./scenarios -rewrite` regenerates the expectations. The directives:
//
//	start workers=N [max-surge=1] [kill-timeout=30s] [ready-timeout=60s]
//	      [ready=auto|ipc|notify|timer:DUR] [drain=auto|ipc|signal|both]
//	      [restart-signal=SIGUSR2] [backoff=500ms] [backoff-max=30s] [backoff-reset=60s]
//	    starts the cluster; the first generation is forked.
//	signal SIGUSR2 [SIGTERM ...]
//	    delivers each signal in turn, as the master's signal handler would.
//	ready w1 [w2 ...] [via=ipc|notify]
//	    the workers say they are ready ({"event":"listening"} or READY=1).
//	message w1
//	<one IPC line per input line>
//	    the worker writes these lines on its IPC channel.
//	exit w1 [code=N] [signal=SIGSEGV]
//	    the worker's process ends on its own.
//	fail-forks [n=1] [reason=TEXT]
//	    the next n forks fail.
//	advance DURATION
//	    time passes; due timers fire one at a time, in order.
//	settle
//	    every forking worker says ready and every draining worker exits,
//	    repeatedly, until nothing changes (time does not pass).
//	status
//	    prints the cluster's view of its workers.
//
// Forks are answered with Spawned (pid 1000+ID) and kills with an exit by
// SIGKILL automatically, in worker order, once the actors are idle.
//
// Journals: a file ending in .jsonl is a journal recorded from a real run
// (dutchmaster --record FILE); RunDir replays it with RunJournal, which
// checks that the core makes the recorded decisions and keeps the
// invariant at every step. testdata/journals holds the ones of this
// repository (docs/operations.md says how to add one).
//
// Determinism: each file runs inside testing/synctest, where
// synctest.Wait is an exact "every actor is idle" barrier; it runs after
// every event the harness delivers, so the output of a file is the same on
// every run.
package scenarios
