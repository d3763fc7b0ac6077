package nodecluster

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
)

// Internal commands of Node's IPC channel (lib/internal/child_process.js,
// lib/internal/cluster/utils.js).
const (
	CmdCluster    = "NODE_CLUSTER"     // a cluster message: {cmd, act, ..., seq} or a reply {cmd, ack, ..., seq}
	CmdHandle     = "NODE_HANDLE"      // a message that carries a descriptor: {cmd, type, msg}
	CmdHandleAck  = "NODE_HANDLE_ACK"  // the descriptor arrived
	CmdHandleNack = "NODE_HANDLE_NACK" // it did not (MSG_CTRUNC): send it again
)

// internalPrefix marks Node's internal messages: an object whose "cmd" is a
// string longer than the prefix and starting with it never reaches the
// app's process.on('message').
const internalPrefix = "NODE_"

// Cluster actions (the "act" of a NODE_CLUSTER message).
const (
	ActOnline                = "online"                // worker: started
	ActQueryServer           = "queryServer"           // worker: give me the server for this address
	ActListening             = "listening"             // worker: a server listens
	ActClose                 = "close"                 // worker: I closed the server of this key
	ActExitedAfterDisconnect = "exitedAfterDisconnect" // worker: I disconnect myself; ack me
	ActDisconnect            = "disconnect"            // primary: close your servers and disconnect
	ActNewconn               = "newconn"               // primary (round-robin): here is a connection of this key
)

// Handle types of a NODE_HANDLE message, as the primary sends them for
// raw handles.
const (
	TypeNetNative   = "net.Native"   // a TCP or unix stream socket
	TypeDgramNative = "dgram.Native" // a UDP socket
)

// MaxHandleRetransmissions is how often a handle is sent again after a
// NODE_HANDLE_NACK before it is given up (Node's own bound).
const MaxHandleRetransmissions = 3

// incoming is what the master reads of any line from a worker. Fields the
// cluster key is made of stay raw JSON, so that the key is built exactly
// as Node's template literal builds it.
type incoming struct {
	Cmd json.RawMessage `json:"cmd"`
	Act string          `json:"act"`
	Seq json.RawMessage `json:"seq"`
	Key json.RawMessage `json:"key"`
	// A worker's answer to a newconn: {ack: the newconn's seq, accepted}.
	Ack      json.RawMessage `json:"ack"`
	Accepted bool            `json:"accepted"`

	Address     json.RawMessage `json:"address"`
	Port        json.RawMessage `json:"port"`
	AddressType json.RawMessage `json:"addressType"`
	FD          json.RawMessage `json:"fd"`
	Index       json.RawMessage `json:"index"`
	Flags       json.RawMessage `json:"flags"`
	Data        json.RawMessage `json:"data"`

	// NODE_HANDLE from the worker: the message the handle came with.
	Type string          `json:"type"`
	Msg  json.RawMessage `json:"msg"`
}

// parseInternal returns the message and its command when line is one of
// Node's internal messages; ok is false for everything else (user
// messages, and lines that are not JSON objects at all).
func parseInternal(line []byte) (m incoming, cmd string, ok bool) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return m, "", false
	}
	if err := json.Unmarshal(line, &m); err != nil {
		return m, "", false
	}
	if json.Unmarshal(m.Cmd, &cmd) != nil || len(cmd) <= len(internalPrefix) || !strings.HasPrefix(cmd, internalPrefix) {
		return m, "", false
	}
	return m, cmd, true
}

// clusterReply is the primary's answer to a queryServer, in Node's field
// order: {cmd, errno, key, ack, data, seq}; a round-robin answer carries
// no handle but the socket's address (sockname) before the seq.
type clusterReply struct {
	Cmd      string          `json:"cmd"`
	Errno    int             `json:"errno"`
	Key      string          `json:"key"`
	Ack      json.RawMessage `json:"ack,omitempty"`
	Data     json.RawMessage `json:"data"` // null unless a worker gave some
	Sockname *Sockname       `json:"sockname,omitempty"`
	Seq      int64           `json:"seq"`
}

// clusterAck acknowledges a worker's message: {cmd, ack, seq}.
type clusterAck struct {
	Cmd string          `json:"cmd"`
	Ack json.RawMessage `json:"ack,omitempty"`
	Seq int64           `json:"seq"`
}

// clusterAct is an order to the worker: {cmd, act, seq}.
type clusterAct struct {
	Cmd string `json:"cmd"`
	Act string `json:"act"`
	Seq int64  `json:"seq"`
}

// handleMessage wraps a message sent with a descriptor: {cmd, type, msg}.
type handleMessage struct {
	Cmd  string `json:"cmd"`
	Type string `json:"type"`
	Msg  any    `json:"msg"`
}

// handleAnswer is NODE_HANDLE_ACK or NODE_HANDLE_NACK.
type handleAnswer struct {
	Cmd string `json:"cmd"`
}

// jsString is the text JavaScript's template literal gives a value, as
// the primary builds its handle key: `${message.address}`. raw is the value
// as JSON; nil means the field was absent (undefined).
func jsString(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "undefined"
	}
	switch raw[0] {
	case 'n':
		return "null"
	case 't', 'f':
		return string(raw)
	case '"':
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	case '{':
		return "[object Object]"
	case '[':
		var elems []json.RawMessage
		if json.Unmarshal(raw, &elems) != nil {
			return ""
		}
		parts := make([]string, len(elems))
		for i, e := range elems {
			// Array.prototype.join writes null and undefined as "".
			if s := jsString(e); s != "null" && s != "undefined" {
				parts[i] = s
			}
		}
		return strings.Join(parts, ",")
	default:
		var f float64
		if json.Unmarshal(raw, &f) == nil {
			return jsNumber(f)
		}
	}
	return string(raw)
}

// jsNumber formats f as JavaScript's Number.prototype.toString does, for
// the values that occur in keys (integers, mostly).
func jsNumber(f float64) string {
	switch {
	case f == 0:
		return "0" // -0 too
	case math.Abs(f) < 1e21 && f == math.Trunc(f):
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	s := strconv.FormatFloat(f, 'g', -1, 64)
	// Go writes 1e+21 and 1e-07; JavaScript writes 1e+21 and 1e-7.
	if i := strings.IndexAny(s, "e"); i >= 0 && i+2 < len(s) && s[i+2] == '0' {
		s = s[:i+2] + strings.TrimLeft(s[i+2:], "0")
	}
	return s
}

// jsInt reads raw as an integer: ok is false for anything else (null,
// absent, a string, a fraction).
func jsInt(raw json.RawMessage) (int, bool) {
	// json.Unmarshal leaves f at 0 for null without an error; null is no
	// number (a null fd is not fd 0).
	var f float64
	if v := bytes.TrimSpace(raw); len(v) == 0 || string(v) == "null" || json.Unmarshal(raw, &f) != nil || f != math.Trunc(f) || math.Abs(f) > 1<<31 {
		return 0, false
	}
	return int(f), true
}
