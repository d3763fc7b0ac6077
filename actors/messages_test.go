package actors

import (
	"testing"
	"time"
)

// TestClassifyIPC: the worker machine reads IPC lines the wire format's way
// (sockets/wire tests the forms one by one).
func TestClassifyIPC(t *testing.T) {
	for line, want := range map[string]MessageKind{
		`{"event":"listening"}`:       MsgReady,
		` "ready" `:                   MsgReady,
		`{"event":"request-restart"}`: MsgRequestRestart,
		`{"event":"made-up"}`:         MsgUnknown,
		`not json`:                    MsgMalformed,
	} {
		if got := ClassifyIPC([]byte(line)).Kind; got != want {
			t.Errorf("ClassifyIPC(%q) = %v, want %v", line, got, want)
		}
	}
}

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
		if got := NotifyReady(payload); got != want {
			t.Errorf("NotifyReady(%q) = %v, want %v", payload, got, want)
		}
	}
}

func TestModes(t *testing.T) {
	m, err := ParseReadyMode("timer:1500ms")
	if err != nil || m.Source != ReadyTimer || m.After != 1500*time.Millisecond || m.String() != "timer:1.5s" {
		t.Errorf("timer mode: %+v, %v", m, err)
	}
	for _, bad := range []string{"timer:", "timer:-1s", "timer:x", "sometimes"} {
		if _, err := ParseReadyMode(bad); err == nil {
			t.Errorf("ParseReadyMode(%q): want an error", bad)
		}
	}
	auto, _ := ParseReadyMode("")
	if !auto.Accepts(ReadyIPC) || !auto.Accepts(ReadyNotify) || auto.Accepts(ReadyTimer) {
		t.Error("auto accepts IPC and notify only")
	}
	for how, want := range map[DrainMethod][2]DrainMethod{
		DrainAuto:   {DrainIPC, DrainSignal},
		DrainIPC:    {DrainIPC, DrainIPC},
		DrainSignal: {DrainSignal, DrainSignal},
		DrainBoth:   {DrainBoth, DrainBoth},
	} {
		if got := [2]DrainMethod{how.resolve(true), how.resolve(false)}; got != want {
			t.Errorf("%s resolves to %v for (spoke, silent), want %v", how, got, want)
		}
	}
	if _, err := ParseDrainMethod("gently"); err == nil {
		t.Error("ParseDrainMethod(gently): want an error")
	}
}
