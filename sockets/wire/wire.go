// Package wire holds what both ends of the worker protocol must agree on:
// the environment variable names, the first inherited descriptor, the IPC
// event names, what a worker's IPC line means (Classify) and the
// newline-delimited JSON framing. The master side (packages sockets and
// actors) and the worker side (package sockets/worker) both import it, so
// the two cannot drift apart; it imports nothing but the standard library,
// so the worker side stays small.
package wire

// Environment variables of the worker protocol (docs/protocol.md, section 1).
const (
	// EnvListenFDs is the number of inherited listeners, at FirstFD onwards.
	EnvListenFDs = "LISTEN_FDS"
	// EnvListenPID is the pid the listeners are meant for; receivers ignore
	// them when it is not their own.
	EnvListenPID = "LISTEN_PID"
	// EnvListenFDNames is the colon-separated list of listener names.
	EnvListenFDNames = "LISTEN_FDNAMES"
	// EnvListenPIDFDID is set by newer systemd (the pidfd inode of the
	// receiver); dutchmaster never sets it and strips an inherited one.
	EnvListenPIDFDID = "LISTEN_PIDFDID"
	// EnvNotifySocket is the path of the sd_notify datagram socket.
	EnvNotifySocket = "NOTIFY_SOCKET"
	// EnvChannelFD is the descriptor number of the IPC channel (Node.js's name).
	EnvChannelFD = "NODE_CHANNEL_FD"
	// EnvChannelSerialization is the framing of the IPC channel; always
	// SerializationJSON.
	EnvChannelSerialization = "NODE_CHANNEL_SERIALIZATION_MODE"
	// EnvNodeUniqueID makes a Node.js process a cluster worker.
	EnvNodeUniqueID = "NODE_UNIQUE_ID"
	// EnvWatchdogPID and EnvWatchdogUSec are systemd's watchdog variables.
	// The master's own (from systemd) never reach a worker; with
	// --watchdog a worker gets its own: WATCHDOG_USEC, and WATCHDOG_PID
	// set to its pid by the trampoline (ExecWithListenPID).
	EnvWatchdogPID  = "WATCHDOG_PID"
	EnvWatchdogUSec = "WATCHDOG_USEC"
)

// SerializationJSON is the only IPC serialization dutchmaster speaks:
// JSON.stringify(msg) + "\n", as Node.js's "json" mode.
const SerializationJSON = "json"

// FirstFD is the first inherited listener descriptor (SD_LISTEN_FDS_START).
const FirstFD = 3

// IPC events, carried as {"event":"<name>"} (docs/protocol.md, section 2).
// They are the one list of names: the master reads them with Classify, the
// worker API (sockets/worker) and the master's Channel send them.
const (
	// EventReady (worker to master): the worker accepts connections. The
	// bare JSON string "ready" (PM2's convention) means the same.
	EventReady = "ready"
	// EventListening (worker to master): same meaning as EventReady.
	EventListening = "listening"
	// EventRequestRestart (worker to master): replace me. With the reason
	// ReasonMaxRequests it is a recycle, paced as the master's own.
	EventRequestRestart = "request-restart"
	// EventHeartbeat (worker to master): the worker is alive, for the
	// master's watchdog (--watchdog), as WATCHDOG=1 on the notify socket.
	EventHeartbeat = "heartbeat"
	// EventDisconnect (master to worker): drain; the master closes the
	// channel right after it.
	EventDisconnect = "disconnect"
)

// ReasonMaxRequests is the reason of a request-restart sent because the
// worker served DUTCHMASTER_MAX_REQUESTS requests.
const ReasonMaxRequests = "max-requests"

// Watchdog and recycling variables (docs/protocol.md, section 1).
const (
	// EnvMaxRequests is the number of requests after which the worker
	// asks for its recycle (request-restart with ReasonMaxRequests).
	EnvMaxRequests = "DUTCHMASTER_MAX_REQUESTS"
)

// Event is the message shape {"event":"<name>"}, with a reason for a
// request-restart.
type Event struct {
	Event  string `json:"event"`
	Reason string `json:"reason,omitempty"`
}
