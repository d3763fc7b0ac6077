package actors

import (
	"strings"
	"testing"
	"time"
)

func TestClassifyIPC(t *testing.T) {
	cases := map[string]MessageKind{
		`{"event":"listening"}`:       MsgReady,
		`{"event":"ready"}`:           MsgReady,
		` "ready" `:                   MsgReady,
		`{"event":"request-restart"}`: MsgRequestRestart,
		`{"event":"made-up"}`:         MsgUnknown,
		`{"cmd":"NODE_HANDLE_ACK"}`:   MsgUnknown,
		`"hello"`:                     MsgUnknown,
		`42`:                          MsgUnknown,
		`{"event":42}`:                MsgUnknown,
		``:                            MsgMalformed,
		`{"event":`:                   MsgMalformed,
		"\xff\xfe":                    MsgMalformed,
		`not json`:                    MsgMalformed,
	}
	for line, want := range cases {
		if got := ClassifyIPC([]byte(line)).Kind; got != want {
			t.Errorf("ClassifyIPC(%q) = %v, want %v", line, got, want)
		}
	}
	long := `{"event":"` + strings.Repeat("x", 1000) + `"}`
	if e := ClassifyIPC([]byte(long)).Event; len(e) > 100 {
		t.Errorf("an unknown event name is not clipped for the log: %d bytes", len(e))
	}
}

func TestNotifyReady(t *testing.T) {
	if !NotifyReady("STATUS=booting\nREADY=1\n") || NotifyReady("READY=0") || NotifyReady("STATUS=READY=1") {
		t.Error("NotifyReady must accept exactly a READY=1 line")
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
