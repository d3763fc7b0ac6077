// Package control is the master's control socket: a unix stream socket,
// mode 0600, on which `dutchmaster ctl` asks for the cluster's status, a
// rolling restart, a stop, a new worker count, the workers' output or an
// in-place upgrade of the master.
//
// Who may connect: the kernel checks the socket file's mode (0600: only
// the master's user can connect), and the server checks each peer's
// credentials (SO_PEERCRED) again: only the master's effective uid and
// root are served; anyone else gets an error reply, and the refusal is
// logged with the peer's uid and pid. The check matters when the file's
// mode was widened, or the socket was passed on.
//
// The protocol is newline-delimited JSON, one Request per line, one Reply
// line each, in order, any number per connection:
//
//	{"command":"status"}            → {"ok":true,"status":{...}}
//	{"command":"restart"}           → when the rollout ends: {"ok":true,"rollout":{"outcome":"complete",...}}
//	{"command":"restart","worker":3} → the same, replacing only worker 3
//	{"command":"restart","progress":true}
//	                                → {"progress":{"event":"fork",...}} lines
//	                                  while the rollout runs, then the reply
//	{"command":"stop"}              → once every worker is gone: {"ok":true}
//	{"command":"scale","workers":3} → {"ok":true,"target":3}
//	{"command":"logs","lines":20}   → {"log":{"worker":3,"pid":4242,"stream":"out","line":"..."}}
//	                                  lines, the last 20 of each worker, then {"ok":true}
//	{"command":"logs","worker":3,"follow":true}
//	                                → worker 3's kept lines, then each new one as
//	                                  it comes, until the client closes the
//	                                  connection or the master exits ({"ok":true})
//	{"command":"upgrade","binary":"/usr/local/bin/dutchmaster"}
//	                                → {"ok":true,"upgrade":{"pid":4242,"version":"v1.2.0","binary":"..."}}
//	                                  once the upgrade is accepted; the master then
//	                                  executes the binary, which ends the connection
//	                                  (status then says how it went: "upgrades")
//	anything else                   → {"ok":false,"error":"..."}
//
// A request line longer than MaxLine (64 KiB by default) is answered with
// an error and the connection is closed. Replies have no bound but the
// client's.
//
// The server talks to the cluster through Supervisor, and learns the
// outcome of what it asked from the cluster's steps (Server.Observe, fed
// by actors.Options.Observe): a restart is answered when its rollout ends
// (complete, aborted or cancelled), a stop when the cluster has stopped.
package control

import (
	"bytes"
	"encoding/json"
	"time"
)

// Commands.
const (
	CommandStatus  = "status"
	CommandRestart = "restart"
	CommandStop    = "stop"
	CommandScale   = "scale"
	CommandLogs    = "logs"
	CommandUpgrade = "upgrade"
)

// MaxLogLines bounds the lines a logs request asks for per worker.
const MaxLogLines = 100000

// DefaultMaxLine bounds a request line.
const DefaultMaxLine = 64 << 10

// Request is one line from the client.
type Request struct {
	Command string `json:"command"`
	// Workers is the new target of a scale command, 1 to 4096.
	Workers int `json:"workers,omitempty"`
	// Worker, for restart, replaces only that worker; for logs, asks for
	// its lines only.
	Worker int `json:"worker,omitempty"`
	// Lines, for logs: how many of the kept lines of each worker to send
	// first (0 to MaxLogLines).
	Lines int `json:"lines,omitempty"`
	// Follow, for logs: then send each new line until the connection
	// closes or the master exits.
	Follow bool `json:"follow,omitempty"`
	// Progress asks a restart for Progress lines before its reply; a
	// client that reads one line per request does not ask.
	Progress bool `json:"progress,omitempty"`
	// Binary, for upgrade: the absolute path of the binary the master
	// executes; "" for its own executable as it is now on disk.
	Binary string `json:"binary,omitempty"`
}

// Progress events, each from one of the cluster's typed steps.
const (
	ProgressStarted   = "started"   // the restart's rollout runs: Total, PIDs
	ProgressFork      = "fork"      // a worker is forked
	ProgressSpawned   = "spawned"   // its process runs: PID
	ProgressListening = "listening" // it listens
	ProgressDrain     = "drain"     // a worker is asked to stop: Reason
	ProgressExit      = "exit"      // a worker's process ended: Reason
)

// Progress is one step of the rollout a restart waits for, sent on a
// line of its own, {"progress":{...}}, before the reply.
type Progress struct {
	Event       string `json:"event"`
	Worker      int    `json:"worker,omitempty"`
	PID         int    `json:"pid,omitempty"`
	Generation  int    `json:"generation,omitempty"`
	Replacement bool   `json:"replacement,omitempty"` // a fork: it replaces an older worker
	Reason      string `json:"reason,omitempty"`
	// Replaced counts the rollout's replacements that listen so far;
	// Total the workers it replaces (as of the restart's step).
	Replaced int `json:"replaced"`
	Total    int `json:"total"`
	// PIDs, on started: the pids of the workers to replace.
	PIDs []int `json:"pids,omitempty"`
}

// ProgressLine is the form of a progress line.
type ProgressLine struct {
	Progress *Progress `json:"progress"`
}

// Output streams of a LogLine.
const (
	StreamOut = "out"
	StreamErr = "err"
)

// LogLine is one line a worker wrote to its stdout or stderr, sent on a
// line of its own, {"log":{...}}, before a logs request's reply.
type LogLine struct {
	Worker     int       `json:"worker"`
	PID        int       `json:"pid"`
	Generation int       `json:"generation"`
	Stream     string    `json:"stream"` // out, err
	At         time.Time `json:"at"`
	Line       string    `json:"line"`
	// Seq numbers the master's kept lines, all workers together, in the
	// order they were written.
	Seq uint64 `json:"seq"`
}

// LogLineMessage is the form of a log line.
type LogLineMessage struct {
	Log *LogLine `json:"log"`
}

// Reply is the answer to one Request.
type Reply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Status answers status.
	Status *Status `json:"status,omitempty"`
	// Rollout answers restart: how the rollout it started (or joined)
	// ended. OK is true only for a complete one.
	Rollout *RolloutResult `json:"rollout,omitempty"`
	// Target answers scale: the worker count now aimed at.
	Target int `json:"target,omitempty"`
	// Upgrade answers an accepted upgrade.
	Upgrade *UpgradeAccepted `json:"upgrade,omitempty"`
}

// UpgradeAccepted is the answer to an upgrade the master accepted: it
// executes Binary next, keeping its pid.
type UpgradeAccepted struct {
	PID     int    `json:"pid"`
	Version string `json:"version"` // the running (old) master's
	Binary  string `json:"binary"`
}

// UpgradeStatus counts the master's in-place upgrades since it started
// (the pid's life: the count goes on across the upgrades).
type UpgradeStatus struct {
	// Count is the upgrades done; Last when the last one was (the new
	// image took over).
	Count int       `json:"count"`
	Last  time.Time `json:"last,omitzero"`
	// Failed is the upgrades accepted whose exec or takeover failed (the
	// master went on as it was); LastError says why the last one failed.
	Failed    int    `json:"failed"`
	LastError string `json:"last_error,omitempty"`
}

// RolloutResult is how a rollout ended.
type RolloutResult struct {
	Outcome    string `json:"outcome"` // complete, aborted, cancelled
	Reason     string `json:"reason,omitempty"`
	Generation int    `json:"generation"` // the generation rolled to
	Source     string `json:"source"`     // the source given to the restart
	// Serving: the pids of the listening workers when it ended.
	Serving []int `json:"serving_pids,omitempty"`
}

// Status is the cluster's state, for `dutchmaster ctl status`.
type Status struct {
	Name       string    `json:"name"`
	PID        int       `json:"pid"` // the master's
	Now        time.Time `json:"now"`
	Target     int       `json:"target"`
	Listening  int       `json:"listening"`
	Generation int       `json:"generation"`
	Policy     string    `json:"policy"`
	// Ready: the first generation has listened.
	Ready    bool           `json:"ready"`
	Stopping bool           `json:"stopping"`
	Rollout  *RolloutStatus `json:"rollout,omitempty"`
	Workers  []WorkerStatus `json:"workers"`
	Slots    []SlotStatus   `json:"slots"`
	// Generation above is the newest asked for; Serving lists the
	// generations of the listening workers, oldest first. After an
	// aborted rollout they differ: the workers serve an older generation.
	Serving []int `json:"serving_generations"`
	// Started is when the master started; Uptime is the time since, in
	// seconds.
	Started time.Time `json:"started"`
	Uptime  float64   `json:"uptime_seconds"`
	// Version is the master's own version (that of its binary).
	Version string `json:"version,omitempty"`
	// Upgrades are the master's in-place upgrades; nil when the master
	// does not report them.
	Upgrades *UpgradeStatus `json:"upgrades,omitempty"`
	// Command is the workers' command line.
	Command   []string         `json:"command,omitempty"`
	Listeners []ListenerStatus `json:"listeners"`
	// LastRollout is how the last rollout that ended ended; nil before
	// any has.
	LastRollout *LastRollout `json:"last_rollout,omitempty"`
}

// ListenerStatus is one socket the workers serve on.
type ListenerStatus struct {
	Name    string `json:"name"`
	Address string `json:"address"` // the bound address, port 0 resolved
	Spec    string `json:"spec"`
}

// LastRollout is the last rollout that ended.
type LastRollout struct {
	Outcome    string    `json:"outcome"` // complete, aborted, cancelled
	Reason     string    `json:"reason,omitempty"`
	Generation int       `json:"generation"` // the generation it rolled to (0: only workers that asked)
	Source     string    `json:"source"`     // what started it: a signal, ctl#N, a worker's request
	Ended      time.Time `json:"ended"`
}

// ExitStatus is how a worker's process ended.
type ExitStatus struct {
	Worker int `json:"worker"`
	// Reason: clean, code N, signal SIGNAME, killed SIGKILL or fork-failed.
	Reason string `json:"reason"`
	// Detail: the fork error, or the last lines the worker wrote.
	Detail string    `json:"detail,omitempty"`
	At     time.Time `json:"at"`
}

// RolloutStatus is the rollout in progress.
type RolloutStatus struct {
	Generation int       `json:"generation"` // 0: only workers that asked are replaced
	Source     string    `json:"source"`
	Started    time.Time `json:"started"`
	Baseline   int       `json:"baseline"`
}

// WorkerStatus is one worker process.
type WorkerStatus struct {
	ID         int       `json:"id"`
	PID        int       `json:"pid,omitempty"` // 0 until the process runs
	Slot       int       `json:"slot"`
	Generation int       `json:"generation"`
	State      string    `json:"state"` // forking, listening, draining
	Forked     time.Time `json:"forked"`
	ReadyAt    time.Time `json:"ready_at,omitzero"`
	// Uptime is the time since the fork, in seconds.
	Uptime float64 `json:"uptime_seconds"`
	// Restarts is its slot's count of workers forked to take over the
	// slot (replacements by rollouts, re-forks after failures).
	Restarts int `json:"restarts"`
	// Due: the running rollout will replace it.
	Due bool `json:"due,omitempty"`
	// RestartRequested: it asked for its own replacement.
	RestartRequested bool `json:"restart_requested,omitempty"`
	// Processes counts its processes: itself and all it started, daemons
	// included where it has a cgroup of its own (docs/operations.md).
	Processes int `json:"processes,omitempty"`
	// RSS is the sum of those processes' resident set sizes, in bytes.
	RSS int64 `json:"rss_bytes,omitempty"`
	// CPU is the processor time they used, in seconds (see
	// docs/operations.md); CPUPercent is the share of one CPU they used
	// since the previous status read of this worker (since its fork for
	// the first), 100 for one CPU kept busy.
	CPU        float64 `json:"cpu_seconds"`
	CPUPercent float64 `json:"cpu_percent"`
	// HeartbeatAge is the time since its last heartbeat (--watchdog), in
	// seconds; absent before the first.
	HeartbeatAge *float64 `json:"heartbeat_age_seconds,omitempty"`
	// Hung: it missed its watchdog; it serves no more and is aborted once
	// its successor listens.
	Hung bool `json:"hung,omitempty"`
	// Recycling is why it is being recycled (memory, lifetime,
	// max-requests); "" when it is not.
	Recycling string `json:"recycling,omitempty"`
	// MaxRequests is the request limit it was given (jitter included).
	MaxRequests int `json:"max_requests,omitempty"`
}

// SlotStatus is one slot: a position that one serving worker fills.
type SlotStatus struct {
	Index    int  `json:"index"`
	Restarts int  `json:"restarts"`
	Failures int  `json:"failures"` // consecutive failures of its workers
	Flapping bool `json:"flapping"`
	// BackoffUntil: no fork into the slot before this.
	BackoffUntil time.Time `json:"backoff_until,omitzero"`
	// LastExit is how the slot's last worker to end ended; nil while
	// none has.
	LastExit *ExitStatus `json:"last_exit,omitempty"`
}

// ParseRequest decodes one request line (its newline may be left on). A
// field the protocol does not know is an error, not ignored: a client
// newer than this master must not have part of its request dropped
// silently. What follows the JSON value is not read.
func ParseRequest(line []byte) (Request, error) {
	var req Request
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return Request{}, err
	}
	return req, nil
}
