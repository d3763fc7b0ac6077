package actors

import (
	"syscall"
	"time"

	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/fsm"
)

// Runtime is the one seam to the OS: it starts, signals and kills worker
// processes, and reports what happens to them as messages.
type Runtime interface {
	// Fork starts the worker described by spec and returns at once. What
	// follows arrives through events, in this order: Spawned or
	// ForkFailed; then any number of IPC, Online and Notify messages;
	// then Exited (never after ForkFailed). events is safe to call from
	// any goroutine.
	Fork(spec WorkerSpec, events func(msg any))
	// Drain asks the worker to stop gracefully, in the way given.
	Drain(id core.WorkerID, how DrainMethod)
	// Kill ends the worker at once (SIGKILL to its process group).
	Kill(id core.WorkerID)
	// Abort sends SIGABRT to a hung worker's process (not its group):
	// a Go or Node.js program writes its stacks and dies. A Kill follows
	// if it does not.
	Abort(id core.WorkerID)
}

// WorkerSpec is what the runtime needs to know to start one worker.
type WorkerSpec struct {
	ID         core.WorkerID `json:"id"`
	Slot       int           `json:"slot"`
	Generation int           `json:"generation"`
	// MaxRequests is the worker's request limit (DUTCHMASTER_MAX_REQUESTS);
	// 0: none.
	MaxRequests int `json:"max_requests,omitempty"`
}

// Clock is the second port: time, and timers that deliver messages.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f once, after d, on a goroutine of its own. stop
	// cancels the call if it has not begun, and reports whether it did.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now is time.Now.
func (SystemClock) Now() time.Time { return time.Now() }

// AfterFunc is time.AfterFunc.
func (SystemClock) AfterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

// Runtime events, delivered to a worker actor.
type (
	// Spawned: the process runs, with this pid.
	Spawned struct{ PID int }
	// ForkFailed: the process could not be started.
	ForkFailed struct{ Err string }
	// IPC is one line the worker wrote on its IPC channel, without the
	// newline. Err is set instead when the line could not be read whole
	// (too long); the channel goes on.
	IPC struct {
		Line []byte
		Err  string
	}
	// Online: the worker announced itself on its IPC channel with a
	// message that is not for the supervisor (a Node.js cluster worker's
	// online). It speaks IPC from then on, so --drain auto drains it
	// over IPC.
	Online struct{}
	// Notify is one sd_notify datagram from the worker.
	Notify struct{ Payload string }
	// Exited: the process is gone.
	Exited struct {
		Code   int            // exit status when it exited
		Signal syscall.Signal // the signal that ended it, or 0
		Killed bool           // the signal was the master's SIGKILL
		Detail string         // e.g. the last lines of its stderr
	}
)

// Reason turns an exit into the lifecycle's terms.
func (e Exited) Reason() fsm.ExitReason {
	switch {
	case e.Killed:
		return fsm.ExitReason{Kind: fsm.ExitHardKill, Signal: syscall.SIGKILL, Detail: e.Detail}
	case e.Signal != 0:
		return fsm.ExitReason{Kind: fsm.ExitSignal, Signal: e.Signal, Detail: e.Detail}
	case e.Code != 0:
		return fsm.ExitReason{Kind: fsm.ExitCode, Code: e.Code, Detail: e.Detail}
	}
	return fsm.ExitReason{Kind: fsm.ExitClean, Detail: e.Detail}
}
