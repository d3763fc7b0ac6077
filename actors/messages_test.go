package actors

import (
	"testing"
	"time"
)

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
