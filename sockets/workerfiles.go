package sockets

import (
	"os"
	"strconv"
	"strings"

	"github.com/dutchmaster/dutchmaster/sockets/wire"
)

// WorkerFiles is what one worker inherits: descriptors and the environment
// variables that describe them (docs/protocol.md).
type WorkerFiles struct {
	// ExtraFiles is for exec.Cmd.ExtraFiles: the listeners in order (they
	// become fds 3, 4, ...), then the IPC channel's child end if any.
	ExtraFiles []*os.File
	// Env holds LISTEN_FDS and LISTEN_FDNAMES (when there are listeners),
	// NODE_CHANNEL_FD and NODE_CHANNEL_SERIALIZATION_MODE=json (with a
	// channel) and NOTIFY_SOCKET (with a notify socket). LISTEN_PID is not
	// here: it must be the worker's own pid, which only the worker's process
	// knows; ExecWithListenPID sets it.
	Env []string
	// ChannelFD is the IPC channel's descriptor number in the worker, or -1.
	ChannelFD int
}

// protocolEnv are the variables PlanWorkerFiles owns. Environ removes every
// one of them from the master's environment before adding the worker's, so
// that nothing meant for the master (systemd's LISTEN_*, NOTIFY_SOCKET,
// WATCHDOG_* when the master runs under systemd; NODE_* when it was started
// by Node.js) reaches a worker with a wrong value.
var protocolEnv = []string{
	wire.EnvListenFDs, wire.EnvListenPID, wire.EnvListenFDNames, wire.EnvListenPIDFDID,
	wire.EnvNotifySocket, wire.EnvChannelFD, wire.EnvChannelSerialization, wire.EnvNodeUniqueID,
	wire.EnvWatchdogPID, wire.EnvWatchdogUSec,
}

// PlanWorkerFiles lays out what a worker inherits. listeners keep their
// order (a listener without a name is called DefaultName(i)); channel is the
// child end from NewChannel, or nil for a worker without IPC; notifySocket is
// NotifySocket.Path(), or "" for none.
func PlanWorkerFiles(listeners []*Listener, channel *os.File, notifySocket string) WorkerFiles {
	w := WorkerFiles{ChannelFD: -1}
	names := make([]string, len(listeners))
	for i, l := range listeners {
		w.ExtraFiles = append(w.ExtraFiles, l.File())
		names[i] = l.Name()
		if names[i] == "" {
			names[i] = DefaultName(i)
		}
	}
	if len(listeners) > 0 {
		w.Env = append(w.Env,
			wire.EnvListenFDs+"="+strconv.Itoa(len(listeners)),
			wire.EnvListenFDNames+"="+strings.Join(names, ":"))
	}
	if channel != nil {
		w.ChannelFD = wire.FirstFD + len(w.ExtraFiles)
		w.ExtraFiles = append(w.ExtraFiles, channel)
		w.Env = append(w.Env,
			wire.EnvChannelFD+"="+strconv.Itoa(w.ChannelFD),
			wire.EnvChannelSerialization+"="+wire.SerializationJSON)
	}
	if notifySocket != "" {
		w.Env = append(w.Env, wire.EnvNotifySocket+"="+notifySocket)
	}
	return w
}

// Environ returns base (typically os.Environ() plus --env values) without
// any protocol variable, followed by w.Env: the value for exec.Cmd.Env.
// Variables the caller wants to add on top (DUTCHMASTER_WORKER_ID,
// NODE_UNIQUE_ID for a cluster worker, ...) go after it.
func (w WorkerFiles) Environ(base []string) []string {
	return append(WithoutProtocolVars(base), w.Env...)
}

// WithoutProtocolVars is env without the protocol's variables, for a
// process that is not a worker but runs with a worker's environment (the
// before-fork hook): what was meant for the master, such as its own
// supervisor's NOTIFY_SOCKET, must not reach it either.
func WithoutProtocolVars(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !isProtocolVar(kv) {
			out = append(out, kv)
		}
	}
	return out
}

func isProtocolVar(kv string) bool {
	key, _, _ := strings.Cut(kv, "=")
	for _, k := range protocolEnv {
		if key == k {
			return true
		}
	}
	return false
}
