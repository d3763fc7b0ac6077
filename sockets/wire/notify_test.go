package wire

import "testing"

func TestParseNotify(t *testing.T) {
	n := ParseNotify("READY=1\n\nSTATUS=a=b c\ngarbage\n=x\nSTATUS=second\nWATCHDOG=trigger\nSTOPPING=1\n")
	want := Assignments{{"READY", "1"}, {"STATUS", "a=b c"}, {"STATUS", "second"}, {"WATCHDOG", "trigger"}, {"STOPPING", "1"}}
	if len(n) != len(want) {
		t.Fatalf("got %q, want %q", n, want)
	}
	for i := range want {
		if n[i] != want[i] {
			t.Fatalf("got %q, want %q", n, want)
		}
	}
	if status, _ := n.Status(); status != "second" {
		t.Errorf("Status = %q, want the last one", status)
	}
	if !n.Ready() || !n.Stopping() || n.Watchdog() {
		t.Errorf("Ready %v Stopping %v Watchdog %v, want true true false (WATCHDOG=trigger is no ping)", n.Ready(), n.Stopping(), n.Watchdog())
	}
	if ParseNotify("READY=0").Ready() {
		t.Error("READY=0 read as ready")
	}
	// systemd's rule: the last assignment of a key wins.
	if ParseNotify("READY=1\nREADY=0").Ready() {
		t.Error(`"READY=1\nREADY=0" read as ready`)
	}
	// systemd ends a line at '\r' as well as '\n'.
	if got := ParseNotify("READY=1\r\nSTATUS=up\r"); len(got) != 2 || got[0] != (Assignment{"READY", "1"}) || got[1] != (Assignment{"STATUS", "up"}) {
		t.Errorf("CRLF payload: got %q", got)
	}
}

func TestNotifyWatchdogMessages(t *testing.T) {
	n := ParseNotify("WATCHDOG=trigger\nEXTEND_TIMEOUT_USEC=2500000\n")
	if !n.WatchdogTrigger() || n.Watchdog() {
		t.Errorf("WatchdogTrigger %v Watchdog %v, want true false", n.WatchdogTrigger(), n.Watchdog())
	}
	if us, ok := n.ExtendTimeout(); !ok || us != 2500000 {
		t.Errorf("ExtendTimeout = %d, %v, want 2500000, true", us, ok)
	}
	for _, bad := range []string{"EXTEND_TIMEOUT_USEC=-1", "EXTEND_TIMEOUT_USEC=0", "EXTEND_TIMEOUT_USEC=1s", "READY=1"} {
		if us, ok := ParseNotify(bad).ExtendTimeout(); ok {
			t.Errorf("%s: ExtendTimeout = %d, true, want false", bad, us)
		}
	}
	if !ParseNotify("WATCHDOG=1").Watchdog() {
		t.Error("WATCHDOG=1 is a ping")
	}
}
