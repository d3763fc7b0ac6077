package wire

import (
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	cases := map[string]Kind{
		`{"event":"listening"}`:                  KindReady,
		`{"event":"ready"}`:                      KindReady,
		` "ready" `:                              KindReady,
		`{"event":"request-restart"}`:            KindRequestRestart,
		`{"event":"heartbeat"}`:                  KindHeartbeat,
		`{"event":"heartbeat","at":1}`:           KindHeartbeat,
		`{"event":"request-restart","reason":7}`: KindRequestRestart,
		`{"event":"made-up"}`:                    KindUnknown,
		`{"cmd":"NODE_HANDLE_ACK"}`:              KindUnknown,
		`"hello"`:                                KindUnknown,
		`42`:                                     KindUnknown,
		`{"event":42}`:                           KindUnknown,
		`{"event":"ready","port":1}`:             KindReady,
		"{\"event\":\"ready\"}\r":                KindReady,
		`["ready"]`:                              KindUnknown,
		``:                                       KindMalformed,
		`{"event":`:                              KindMalformed,
		"\xff\xfe":                               KindMalformed,
		`not json`:                               KindMalformed,
	}
	for line, want := range cases {
		if got := Classify([]byte(line)).Kind; got != want {
			t.Errorf("Classify(%q) = %v, want %v", line, got, want)
		}
	}
	long := `{"event":"` + strings.Repeat("x", 1000) + `"}`
	if e := Classify([]byte(long)).Event; len(e) > 100 {
		t.Errorf("an unknown event name is not clipped for the log: %d bytes", len(e))
	}
}

func TestClassifyRestartReason(t *testing.T) {
	cases := map[string]string{
		`{"event":"request-restart","reason":"max-requests"}`: ReasonMaxRequests,
		`{"event":"request-restart"}`:                         "",
		`{"event":"request-restart","reason":["x"]}`:          "",
	}
	for line, want := range cases {
		if got := Classify([]byte(line)); got.Kind != KindRequestRestart || got.Reason != want {
			t.Errorf("Classify(%s) = %+v, want a request-restart with reason %q", line, got, want)
		}
	}
	line, err := Encode(Event{Event: EventRequestRestart, Reason: ReasonMaxRequests})
	if err != nil || string(line) != `{"event":"request-restart","reason":"max-requests"}`+"\n" {
		t.Errorf("Encode(request-restart, max-requests) = %q, %v", line, err)
	}
}

func TestEventLine(t *testing.T) {
	if got := string(EventLine(EventListening)); got != `{"event":"listening"}` {
		t.Errorf("EventLine(listening) = %s", got)
	}
	if Classify(EventLine(EventListening)).Kind != KindReady {
		t.Error("the listening line is not read as ready")
	}
}
