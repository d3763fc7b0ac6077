package actors

import (
	"github.com/dutchmaster/dutchmaster/sockets/wire"
)

// What a worker says is read by the wire format's own classifier
// (wire.Classify), which sits beside the event names it reads; these are
// the names the worker machine and the fake runtime use for it.

// WorkerMessage is what a worker said, classified.
type WorkerMessage = wire.Message

// MessageKind sorts what workers say.
type MessageKind = wire.Kind

// The kinds of worker message.
const (
	MsgUnknown        = wire.KindUnknown        // valid JSON the master does not act on
	MsgMalformed      = wire.KindMalformed      // not JSON
	MsgReady          = wire.KindReady          // {"event":"listening"}, {"event":"ready"}, "ready"
	MsgRequestRestart = wire.KindRequestRestart // {"event":"request-restart"}
)

// ClassifyIPC reads one line from a worker's IPC channel, in the forms of
// docs/protocol.md, section 2; nothing here fails on any input.
func ClassifyIPC(line []byte) WorkerMessage { return wire.Classify(line) }

// NotifyReady reports whether an sd_notify payload marks its sender ready:
// READY=1 as systemd reads a datagram, the last assignment of a key
// winning (wire.ParseNotify, the one sd_notify parser).
func NotifyReady(payload string) bool { return wire.ParseNotify(payload).Ready() }
