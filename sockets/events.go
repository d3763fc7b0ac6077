package sockets

import "github.com/dutchmaster/dutchmaster/sockets/wire"

// IPC events of the worker protocol, as the "event" field of a JSON object
// ({"event":"ready"}). Deciding what a line means is the caller's job; these
// are the names both sides use.
const (
	EventReady          = wire.EventReady          // worker: accepting connections
	EventListening      = wire.EventListening      // worker: same as EventReady
	EventRequestRestart = wire.EventRequestRestart // worker: replace me
	EventDisconnect     = wire.EventDisconnect     // master: drain (Channel.Disconnect)
)
