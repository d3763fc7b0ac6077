package wire

import "testing"

// TestClassifyIPC: the lines the worker machine acts on, classified.
func TestClassifyIPC(t *testing.T) {
	for line, want := range map[string]Kind{
		`{"event":"listening"}`:       KindReady,
		` "ready" `:                   KindReady,
		`{"event":"request-restart"}`: KindRequestRestart,
		`{"event":"made-up"}`:         KindUnknown,
		`not json`:                    KindMalformed,
	} {
		if got := Classify([]byte(line)).Kind; got != want {
			t.Errorf("Classify(%q) = %v, want %v", line, got, want)
		}
	}
}

// TestNotifyReady: READY=1 as systemd reads a datagram.
func TestNotifyReady(t *testing.T) {
	for payload, want := range map[string]bool{
		"READY=1":                   true,
		"STATUS=booting\nREADY=1\n": true,
		"READY=1\r\n":               true,
		"READY=0\nREADY=1":          true,
		"READY=1\nREADY=0":          false, // the last assignment wins, as in systemd
		"READY=0":                   false,
		"STATUS=READY=1":            false,
		"":                          false,
	} {
		if got := ParseNotify(payload).Ready(); got != want {
			t.Errorf("ParseNotify(%q).Ready() = %v, want %v", payload, got, want)
		}
	}
}
