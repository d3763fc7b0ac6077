// Package journal records what the supervision core saw and decided, and
// replays it: a journal is proof, checked by machine, that the core makes
// the same decisions from the same inputs.
//
// A journal is a file of JSON lines. The first line is a Header: the
// format version, the master's name and pid, when it started, and the
// core's configuration (core.Config, with the policy by name). Every
// other line is one step of the core, in order:
//
//	{"at":"1.503s","input":{"type":"WorkerListening","worker":3},
//	 "decisions":[{"type":"Drain","worker":1,"reason":"replaced by w3"}, ...]}
//
// at is the step's time on the master's monotonic clock, counted from the
// start of the recording; input and each decision carry a "type" tag (the
// Go type's name in package core) and the type's fields. Times inside
// decisions (a worker's ForkedAt and ReadyAt, in Notes) are offsets from
// the same start, so a replay, which runs on a scripted clock, produces
// the same bytes. Durations are written as Go durations ("1.5s"),
// which parse back exactly.
//
// Replay reads a journal, builds core.Cluster with the header's
// configuration, feeds it every input at its recorded time and compares
// the decisions that come out with the recorded ones; the first
// difference is a *Mismatch. The core is deterministic, so a journal of
// any real run replays cleanly unless the core's behaviour changed, or
// the journal was edited.
//
// # Versions
//
// The header's version says which decisions the journal records.
// Version 1 records the orders (Fork, Drain, Kill, SetTimer), the Notes
// and the facts Stopped, TargetChanged, RolloutStarted and RolloutEnded.
// Version 2, written now, adds the facts Ready, Refused and
// RolloutCoalesced, which the core reports so that programs never act on a
// Note's wording. Replay reads both: for a version 1 journal it leaves the
// later facts out of the replayed decisions before comparing (the core
// reached the same points then, it only did not report them), and a
// version 1 journal that holds one of them is a *FormatError. A journal
// recorded by a real master in version 1 stays a valid regression test.
// Version 3, written now, adds the upgrade lines (below); a version 1 or 2
// journal that holds one is a *FormatError.
//
// # Upgrades
//
// A master upgraded in place (dutchmaster ctl upgrade) keeps one journal
// across the exec. The old image writes an upgrade line at the instant
// its core was handed over (Recorder.Upgrade: the old and new binary and
// version, the core state's format) and hands the file's descriptor over
// with a State; the new image takes the descriptor over (Continue), counts
// its times on from the handover's offset plus the pause of the exec, and
// writes a resumed line at the instant its core resumed, with the timers
// the resume set again (Recorder.Resumed):
//
//	{"at":"4s","upgrade":{"from":{"binary":"/usr/bin/dutchmaster","version":"v1.2.0"},
//	 "to":{"binary":"/usr/bin/dutchmaster"},"state_format":1,"handed_at":"…"}}
//	{"at":"4.35s","resumed":{"version":"v1.3.0","timers":[{"type":"SetTimer",…}]}}
//
// An exec that failed is an upgrade_failed line instead of the resumed
// one (Recorder.UpgradeFailed): the old image went on, its core
// untouched. Replay, at a resumed line, hands its own core over at the
// upgrade's instant and resumes it at the resumed line's (the pause cut
// out of the core's time line, as in the master), compares the timers,
// and goes on: every later decision must match. A step between an
// upgrade line and its resumed or upgrade_failed line, a resumed line
// without an upgrade, or an upgrade record that is incomplete or has an
// unknown field is a *FormatError; a journal that ends at an upgrade
// line (the new image did not go on recording) replays, and its Summary
// says so.
//
// The encoding is explicit, type by type (inputs.go, decisions.go): a
// field added to a core type does not reach journals until it is added
// here, and an unknown type tag or field is an error, never ignored.
package journal
