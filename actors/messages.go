package actors

import (
	"bytes"
	"encoding/json"
	"strings"
)

// WorkerMessage is what a worker said, classified.
type WorkerMessage struct {
	Kind  MessageKind
	Event string // the event name, for unknown events
}

// MessageKind sorts what workers say.
type MessageKind int

// The kinds of worker message.
const (
	MsgUnknown        MessageKind = iota // valid JSON the master does not act on
	MsgMalformed                         // not JSON
	MsgReady                             // {"event":"listening"}, {"event":"ready"}, "ready"
	MsgRequestRestart                    // {"event":"request-restart"}
)

// ClassifyIPC reads one line from a worker's IPC channel. It accepts the
// forms of DESIGN.md section 3: {"event":"listening"}, {"event":"ready"}
// and the bare string "ready" mark readiness; {"event":"request-restart"}
// asks for a replacement. Anything else is unknown or malformed; nothing
// here fails on any input.
func ClassifyIPC(line []byte) WorkerMessage {
	line = bytes.TrimSpace(line)
	var s string
	if err := json.Unmarshal(line, &s); err == nil {
		if s == "ready" {
			return WorkerMessage{Kind: MsgReady}
		}
		return WorkerMessage{Kind: MsgUnknown, Event: clip(s)}
	}
	var m struct {
		Event string `json:"event"`
	}
	if !json.Valid(line) {
		return WorkerMessage{Kind: MsgMalformed}
	}
	if err := json.Unmarshal(line, &m); err != nil {
		return WorkerMessage{Kind: MsgUnknown}
	}
	switch m.Event {
	case "listening", "ready":
		return WorkerMessage{Kind: MsgReady}
	case "request-restart":
		return WorkerMessage{Kind: MsgRequestRestart}
	}
	return WorkerMessage{Kind: MsgUnknown, Event: clip(m.Event)}
}

// NotifyReady reports whether an sd_notify payload says READY=1.
func NotifyReady(payload string) bool {
	for _, kv := range strings.Split(payload, "\n") {
		if strings.TrimSpace(kv) == "READY=1" {
			return true
		}
	}
	return false
}

// clip keeps log lines short whatever a worker sends.
func clip(s string) string {
	const most = 64
	if len(s) > most {
		return s[:most] + "…"
	}
	return s
}
