package nodecluster

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// FuzzMessage: any line from a Node.js worker is sorted into Node's
// internal messages and the rest without a panic; an internal message is a
// JSON object whose cmd has Node's prefix and more; the values its handle
// key is built from are rendered as JavaScript would, whatever their JSON
// (a string reads back as itself, an integer within range as itself).
func FuzzMessage(f *testing.F) {
	for _, seed := range []string{
		`{"cmd":"NODE_CLUSTER","act":"online","seq":0}`,
		`{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":"127.0.0.1","port":41000,"addressType":4,"fd":null,"flags":0,"backlog":511,"seq":1}`,
		`{"cmd":"NODE_CLUSTER","act":"listening","index":0,"data":null,"address":"::1","port":0,"addressType":6,"backlog":0,"seq":2}`,
		`{"cmd":"NODE_HANDLE","type":"net.Server","msg":{"cmd":"NODE_CLUSTER","act":"newconn","key":"127.0.0.1:3000:4:undefined:0"}}`,
		`{"cmd":"NODE_HANDLE_ACK"}`, `{"cmd":"NODE_HANDLE_NACK"}`, `{"cmd":"NODE_"}`,
		`{"cmd":"NODE_CLUSTER","act":"exitedAfterDisconnect","seq":3}`,
		`{"event":"request-restart"}`, `"ready"`, `["NODE_CLUSTER"]`, `{"cmd":"NODE_CLUSTER"`,
		`{"cmd":"NODE_X","address":[1,null,"x",[2,[3]]],"port":1e21,"addressType":-0,"fd":"3"}`,
		`{"cmd":"NODE_X","address":{"a":1},"port":38123.0,"index":1.5,"seq":-1e-7}`,
		"", "\xff{", " {\"cmd\":\"NODE_X\"} ",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		m, cmd, ok := parseInternal(line)
		if ok {
			trimmed := bytes.TrimSpace(line)
			if !json.Valid(trimmed) || trimmed[0] != '{' {
				t.Fatalf("%q: internal, but not a JSON object", line)
			}
			if len(cmd) <= len(internalPrefix) || !strings.HasPrefix(cmd, internalPrefix) {
				t.Fatalf("%q: internal with cmd %q", line, cmd)
			}
		} else if cmd != "" {
			t.Fatalf("%q: not internal, but cmd %q", line, cmd)
		}
		for _, raw := range []json.RawMessage{m.Address, m.Port, m.AddressType, m.FD, m.Index, m.Flags, m.Data, m.Seq, m.Key, line} {
			s := jsString(raw)
			var str string
			if tr := bytes.TrimSpace(raw); len(tr) > 0 && tr[0] == '"' && json.Unmarshal(raw, &str) == nil && s != str {
				t.Fatalf("jsString(%s) = %q, want the string itself", raw, s)
			}
			if n, ok := jsInt(raw); ok {
				if n > 1<<31 || n < -(1<<31) {
					t.Fatalf("jsInt(%s) = %d, out of range", raw, n)
				}
				if got := jsString(raw); got != jsNumber(float64(n)) {
					t.Fatalf("jsString(%s) = %q, but it is the integer %d", raw, got, n)
				}
			}
		}
	})
}

// TestJSIntNull: null is no integer. FuzzMessage found jsInt reading it as
// 0, which made a queryServer with "fd":null a request for the master's
// fd 0 and one with "port":null an ephemeral port; Node's primary takes
// neither.
func TestJSIntNull(t *testing.T) {
	for _, raw := range []string{"null", " null ", ""} {
		if n, ok := jsInt(json.RawMessage(raw)); ok {
			t.Errorf("jsInt(%q) = %d, true; want not an integer", raw, n)
		}
	}
	q, _ := parseQuery(incoming{Address: json.RawMessage(`"127.0.0.1"`), Port: json.RawMessage(`0`), AddressType: json.RawMessage(`4`), FD: json.RawMessage(`null`)})
	if q.FD != -1 || q.Network != "tcp" {
		t.Errorf(`"fd":null read as %+v; want no fd, a TCP server`, q)
	}
	if _, err := parseQuery(incoming{Address: json.RawMessage(`"127.0.0.1"`), Port: json.RawMessage(`null`), AddressType: json.RawMessage(`4`)}); err == nil {
		t.Error(`"port":null accepted; want an invalid port`)
	}
}
