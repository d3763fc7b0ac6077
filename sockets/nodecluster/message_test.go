package nodecluster

import (
	"encoding/json"
	"testing"
)

func TestJSString(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want string
	}{
		{"", "undefined"}, // the field was absent
		{"null", "null"},
		{"0", "0"},
		{"-0", "0"},
		{"-1", "-1"},
		{"38123", "38123"},
		{"38123.0", "38123"},
		{"1.5", "1.5"},
		{"1e21", "1e+21"},
		{"1e-7", "1e-7"},
		{`"::1"`, "::1"},
		{`"/run/app.sock"`, "/run/app.sock"},
		{`"udp4"`, "udp4"},
		{"true", "true"},
		{"false", "false"},
		{`{"a":1}`, "[object Object]"},
		{`[1,null,"x"]`, "1,,x"},
	} {
		var raw json.RawMessage
		if tc.raw != "" {
			raw = json.RawMessage(tc.raw)
		}
		if got := jsString(raw); got != tc.want {
			t.Errorf("jsString(%s) = %q, want %q", tc.raw, got, tc.want)
		}
	}
}

func TestParseInternal(t *testing.T) {
	for _, tc := range []struct {
		line     string
		internal bool
		cmd      string
	}{
		{`{"cmd":"NODE_CLUSTER","act":"online","seq":0}`, true, CmdCluster},
		{`{"cmd":"NODE_HANDLE_ACK"}`, true, CmdHandleAck},
		{` {"cmd":"NODE_X"} `, true, "NODE_X"},
		{`{"cmd":"NODE_"}`, false, ""}, // Node wants more than the prefix
		{`{"cmd":"node_cluster"}`, false, ""},
		{`{"cmd":42}`, false, ""},
		{`{"event":"request-restart"}`, false, ""},
		{`"ready"`, false, ""},
		{`["NODE_CLUSTER"]`, false, ""},
		{`{"cmd":"NODE_CLUSTER"`, false, ""}, // malformed: the supervisor's business
		{``, false, ""},
		{"\xff{", false, ""},
	} {
		_, cmd, ok := parseInternal([]byte(tc.line))
		if ok != tc.internal || cmd != tc.cmd {
			t.Errorf("parseInternal(%q) = %q, %v; want %q, %v", tc.line, cmd, ok, tc.cmd, tc.internal)
		}
	}
}

// queryOf parses a queryServer line as the session does.
func queryOf(t *testing.T, line string) (Query, error) {
	t.Helper()
	m, cmd, ok := parseInternal([]byte(line))
	if !ok || cmd != CmdCluster || m.Act != ActQueryServer {
		t.Fatalf("not a queryServer: %s", line)
	}
	return parseQuery(m)
}

func TestParseQuery(t *testing.T) {
	for _, tc := range []struct {
		name string
		line string
		want Query
	}{
		{
			"listen(PORT), as observed on Node 20",
			`{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":null,"port":38123,"addressType":4,"backlog":0,"seq":1}`,
			Query{Key: "null:38123:4:undefined:0", Network: "tcp", Port: 38123, FD: -1, Data: json.RawMessage("null")},
		},
		{
			"listen(PORT, '::1') with ipv6Only, second server on it",
			`{"cmd":"NODE_CLUSTER","act":"queryServer","index":1,"data":null,"address":"::1","port":8080,"addressType":6,"flags":1,"backlog":511,"seq":3}`,
			Query{Key: "::1:8080:6:undefined:1", Network: "tcp", Address: "::1", Port: 8080, IPv6: true, Flags: FlagIPv6Only, FD: -1, Data: json.RawMessage("null")},
		},
		{
			"listen(path): the worker sends the absolute path as the address",
			`{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":"/run/app/../app.sock","port":-1,"addressType":-1,"seq":1}`,
			Query{Key: "/run/app/../app.sock:-1:-1:undefined:0", Network: "unix", Address: "/run/app.sock", Port: -1, FD: -1, Data: json.RawMessage("null")},
		},
		{
			"dgram bind",
			`{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":"127.0.0.1","port":0,"addressType":"udp4","fd":-1,"flags":4,"seq":1}`,
			Query{Key: "127.0.0.1:0:udp4:-1:0", Network: "udp", Address: "127.0.0.1", FD: -1, Flags: FlagReuseAddr, Data: json.RawMessage("null")},
		},
		{
			"listen({fd: 3})",
			`{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":null,"port":null,"addressType":null,"fd":3,"backlog":0,"seq":1}`,
			Query{Key: "null:null:null:3:0", Network: "tcp", FD: 3, Data: json.RawMessage("null")},
		},
		{
			"dgram bind({fd: 4})",
			`{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":null,"port":null,"addressType":"udp6","fd":4,"flags":null,"seq":1}`,
			Query{Key: "null:null:udp6:4:0", Network: "udp", FD: 4, Data: json.RawMessage("null")},
		},
		{
			"TLS ticket keys in data",
			`{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":{"ticketKeys":"AAAA"},"address":"127.0.0.1","port":443,"addressType":4,"seq":1}`,
			Query{Key: "127.0.0.1:443:4:undefined:0", Network: "tcp", Address: "127.0.0.1", Port: 443, FD: -1, Data: json.RawMessage(`{"ticketKeys":"AAAA"}`)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := queryOf(t, tc.line)
			if err != nil {
				t.Fatal(err)
			}
			if got.Key != tc.want.Key || got.Network != tc.want.Network || got.Address != tc.want.Address ||
				got.Port != tc.want.Port || got.IPv6 != tc.want.IPv6 || got.FD != tc.want.FD || got.Flags != tc.want.Flags ||
				string(got.Data) != string(tc.want.Data) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseQueryRejects(t *testing.T) {
	for _, tc := range []struct{ line, key string }{
		{`{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"address":null,"port":70000,"addressType":4,"seq":1}`, "null:70000:4:undefined:0"},
		{`{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"address":null,"port":"80","addressType":4,"seq":1}`, "null:80:4:undefined:0"},
		{`{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"address":"x","port":80,"addressType":5,"seq":1}`, "x:80:5:undefined:0"},
		{`{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"address":"rel.sock","port":-1,"addressType":-1,"seq":1}`, "rel.sock:-1:-1:undefined:0"},
		{`{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"address":null,"port":-1,"addressType":-1,"seq":1}`, "null:-1:-1:undefined:0"},
	} {
		q, err := queryOf(t, tc.line)
		if err == nil {
			t.Errorf("%s: accepted as %+v", tc.line, q)
		}
		if q.Key != tc.key {
			t.Errorf("%s: key %q, want %q (the reply needs it)", tc.line, q.Key, tc.key)
		}
	}
}
