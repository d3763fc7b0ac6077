package wire

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// Kind sorts what a worker says on its IPC channel.
type Kind int

// The kinds of worker message.
const (
	KindUnknown        Kind = iota // valid JSON the master does not act on
	KindMalformed                  // not JSON
	KindReady                      // {"event":"listening"}, {"event":"ready"}, "ready"
	KindRequestRestart             // {"event":"request-restart"}
	KindHeartbeat                  // {"event":"heartbeat"}
)

var kindNames = [...]string{"unknown", "malformed", "ready", "request-restart", "heartbeat"}

func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Message is one worker IPC line, classified.
type Message struct {
	Kind  Kind
	Event string // the event name of an unknown message, clipped for a log line
	// Reason is a request-restart's reason, clipped ("" for none).
	Reason string
}

// MaxEventName bounds Message.Event: whatever a worker sends, a log line
// about it stays short.
const MaxEventName = 64

// Classify reads one line from a worker's IPC channel (docs/protocol.md,
// section 2): {"event":"listening"}, {"event":"ready"} and the bare string
// "ready" mark readiness; {"event":"request-restart"} asks for a
// replacement (with its "reason", if a string); {"event":"heartbeat"}
// feeds the watchdog; other fields of the object are ignored, and so is
// whitespace around the value. Anything else is unknown (valid JSON) or
// malformed. It never fails, whatever the line holds: the line comes from
// a worker, which the master does not trust.
func Classify(line []byte) Message {
	line = bytes.TrimSpace(line)
	var s string
	if err := json.Unmarshal(line, &s); err == nil {
		if s == EventReady {
			return Message{Kind: KindReady}
		}
		return Message{Kind: KindUnknown, Event: clip(s)}
	}
	if !json.Valid(line) {
		return Message{Kind: KindMalformed}
	}
	var m struct {
		Event  string          `json:"event"`
		Reason json.RawMessage `json:"reason"`
	}
	if err := json.Unmarshal(line, &m); err != nil {
		return Message{Kind: KindUnknown}
	}
	switch m.Event {
	case EventListening, EventReady:
		return Message{Kind: KindReady}
	case EventRequestRestart:
		var reason string
		_ = json.Unmarshal(m.Reason, &reason) // a reason that is not a string is none
		return Message{Kind: KindRequestRestart, Reason: clip(reason)}
	case EventHeartbeat:
		return Message{Kind: KindHeartbeat}
	}
	return Message{Kind: KindUnknown, Event: clip(m.Event)}
}

// EventLine is the frame of {"event":name} without its newline, as a
// LineReader returns it.
func EventLine(name string) []byte {
	b, _ := json.Marshal(Event{Event: name}) // a struct of one string always marshals
	return b
}

// clip cuts s to MaxEventName bytes, marking the cut.
func clip(s string) string {
	if len(s) > MaxEventName {
		return s[:MaxEventName] + "…"
	}
	return s
}
