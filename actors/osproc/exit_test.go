package osproc_test

import (
	"syscall"
	"testing"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/osproc"
	"github.com/dutchmaster/dutchmaster/fsm"
)

// TestExitedReportsCodeAndSignal: Exited carries the exit status of a
// worker that exited, and the signal of one a signal ended (its own, the
// stop signal, or Kill's SIGKILL), never both. Killed stays false: only
// the worker actor knows that it ordered the kill.
func TestExitedReportsCodeAndSignal(t *testing.T) {
	for _, tc := range []struct {
		name    string
		command func(t *testing.T) []string
		act     func(rt *osproc.Runtime)
		code    int
		signal  syscall.Signal
		kind    fsm.ExitKind
	}{
		{"exit 3", func(t *testing.T) []string { return role(t, "exit", "3") }, nil, 3, 0, fsm.ExitCode},
		{"exit 0", func(t *testing.T) []string { return role(t, "exit", "0") }, nil, 0, 0, fsm.ExitClean},
		// A Go program cannot die of a SIGSEGV sent to it (its runtime
		// turns one into exit 2); a shell can.
		{"own SIGSEGV", func(*testing.T) []string { return []string{"sh", "-c", "kill -SEGV $$"} }, nil, 0, syscall.SIGSEGV, fsm.ExitSignal},
		{"stop signal SIGTERM", func(t *testing.T) []string { return role(t, "sleeper") },
			func(rt *osproc.Runtime) { rt.Drain(1, actors.DrainSignal) }, 0, syscall.SIGTERM, fsm.ExitSignal},
		{"Kill", func(t *testing.T) []string { return role(t, "sleeper") },
			func(rt *osproc.Runtime) { rt.Kill(1) }, 0, syscall.SIGKILL, fsm.ExitSignal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := newRuntime(t, osproc.Config{Command: tc.command(t)})
			rec, _ := spawn(t, rt, actors.WorkerSpec{ID: 1})
			if tc.act != nil {
				tc.act(rt)
			}
			ex := expect[actors.Exited](t, rec)
			if ex.Code != tc.code || ex.Signal != tc.signal || ex.Killed {
				t.Errorf("Exited %+v, want code %d, signal %v, not Killed", ex, tc.code, tc.signal)
			}
			if r := ex.Reason(); r.Kind != tc.kind {
				t.Errorf("Reason %+v, want kind %s", r, tc.kind)
			}
		})
	}
}
