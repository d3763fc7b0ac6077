package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// FuzzLineReader: whatever a worker writes, the reader splits it exactly
// as a plain split on '\n' would, never hands out a line over its limit
// (so memory stays bounded by the limit, not by the peer), reports each
// longer line once with its true length, and ends with io.EOF.
func FuzzLineReader(f *testing.F) {
	f.Add([]byte("{\"event\":\"ready\"}\n"), uint8(16))
	f.Add([]byte("a\n\nbb\nccc"), uint8(2))
	f.Add([]byte("\xff\xfe\n"+strings.Repeat("x", 300)+"\nok\n"), uint8(0))
	f.Add([]byte(strings.Repeat("\n", 10)), uint8(1))
	f.Fuzz(func(t *testing.T, stream []byte, small uint8) {
		limit := int(small) // 0 is the default limit, far above any input here
		lr := NewLineReader(bytes.NewReader(stream), limit)
		want := bytes.Split(stream, []byte("\n"))
		if len(want[len(want)-1]) == 0 {
			want = want[:len(want)-1] // a stream ending in '\n' has no empty last line
		}
		if limit <= 0 {
			limit = MaxLineBytes
		}
		for i := 0; ; i++ {
			line, err := lr.ReadLine()
			if i == len(want) {
				if err == nil || err.Error() != "EOF" {
					t.Fatalf("after %d lines: %q, %v; want EOF", i, line, err)
				}
				if _, again := lr.ReadLine(); again != err {
					t.Fatalf("EOF is not sticky: %v", again)
				}
				return
			}
			if i > len(want) {
				t.Fatal("more lines than the stream holds")
			}
			var tl *LineTooLongError
			switch {
			case err == nil:
				if len(line) > limit || !bytes.Equal(line, want[i]) {
					t.Fatalf("line %d: %q, want %q (limit %d)", i, line, want[i], limit)
				}
			case errors.As(err, &tl):
				if len(want[i]) <= limit || tl.Length != int64(len(want[i])) || tl.Limit != limit || !errors.Is(err, ErrLineTooLong) {
					t.Fatalf("line %d of %d bytes reported %+v (limit %d)", i, len(want[i]), tl, limit)
				}
			default:
				t.Fatalf("line %d: unexpected %v", i, err)
			}
		}
	})
}

// FuzzClassify: any IPC line is classified without a panic; whitespace
// and a line end around it change nothing; a message the master acts on is
// valid JSON and an unknown one's event name stays short for the log.
func FuzzClassify(f *testing.F) {
	for _, seed := range []string{
		`{"event":"listening"}`, `{"event":"ready"}`, `"ready"`, ` "ready" `,
		`{"event":"request-restart"}`, `{"event":"ready","port":8080}`,
		`{"event":"made-up"}`, `{"cmd":"NODE_HANDLE_ACK"}`, `"hello"`, `42`, `[1,2]`,
		`{"event":42}`, ``, `{"event":`, "\xff\xfe", `not json`, `{"event":"ready"}` + "\r",
		`{"event":"` + strings.Repeat("é", 100) + `"}`, `{"Event":"READY"}`, `{"event":"\u0072eady"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		m := Classify(line)
		if m.Kind < KindUnknown || m.Kind > KindRequestRestart {
			t.Fatalf("%q: kind %v", line, m.Kind)
		}
		if len(m.Event) > MaxEventName+len("…") {
			t.Fatalf("%q: event name of %d bytes", line, len(m.Event))
		}
		if m.Kind != KindUnknown && m.Event != "" {
			t.Fatalf("%q: %v with event %q", line, m.Kind, m.Event)
		}
		if (m.Kind == KindMalformed) == json.Valid(bytes.TrimSpace(line)) {
			t.Fatalf("%q: %v, but json.Valid says %v", line, m.Kind, json.Valid(line))
		}
		framed := append(append([]byte(" \t"), line...), "\r\n"...)
		if again := Classify(framed); again != m {
			t.Fatalf("%q: %+v; with whitespace around it %+v", line, m, again)
		}
	})
}

// TestEventLinesRoundTrip: every name of the vocabulary survives its frame.
func TestEventLinesRoundTrip(t *testing.T) {
	for name, want := range map[string]Kind{
		EventReady: KindReady, EventListening: KindReady,
		EventRequestRestart: KindRequestRestart, EventDisconnect: KindUnknown,
	} {
		var e Event
		if err := json.Unmarshal(EventLine(name), &e); err != nil || e.Event != name {
			t.Errorf("%s: frame %s decodes to %+v, %v", name, EventLine(name), e, err)
		}
		if got := Classify(EventLine(name)); got.Kind != want {
			t.Errorf("%s: %v, want %v", name, got.Kind, want)
		}
	}
}
