package fsm

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
)

// TestTable walks every (state, event) pair and checks the table: allowed
// moves land where the lifecycle says, everything else is an error that
// leaves the state unchanged.
func TestTable(t *testing.T) {
	want := map[State]map[Event]State{
		Forking:   {Ready: Listening, Drain: Draining, Exit: Killed},
		Listening: {Drain: Draining, Exit: Killed},
		Draining:  {Exit: Killed},
		Killed:    {},
	}
	reach := map[State]func(*Lifecycle){
		Forking:   func(*Lifecycle) {},
		Listening: func(l *Lifecycle) { mustOK(t)(l.Ready()) },
		Draining:  func(l *Lifecycle) { mustOK(t)(l.Drain()) },
		Killed:    func(l *Lifecycle) { mustOK(t)(l.Exit(ExitReason{Kind: ExitClean})) },
	}
	for from, moves := range want {
		for _, ev := range []Event{Ready, Drain, Exit} {
			l := New()
			reach[from](l)
			if l.State() != from {
				t.Fatalf("setup: want %s, got %s", from, l.State())
			}
			tr, err := l.fire(ev)
			dst, allowed := moves[ev]
			if !allowed {
				if !errors.Is(err, ErrInvalidEvent) {
					t.Errorf("%s in %s: want ErrInvalidEvent, got %v", ev, from, err)
				}
				if l.State() != from {
					t.Errorf("%s in %s: state moved to %s on an error", ev, from, l.State())
				}
				continue
			}
			if err != nil {
				t.Errorf("%s in %s: %v", ev, from, err)
				continue
			}
			if tr.From != from || tr.To != dst || tr.Event != ev || l.State() != dst {
				t.Errorf("%s in %s: got %v (state %s), want -> %s", ev, from, tr, l.State(), dst)
			}
		}
	}
}

func mustOK(t *testing.T) func(Transition, error) {
	return func(_ Transition, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestKilledKeepsReason(t *testing.T) {
	l := New()
	mustOK(t)(l.Ready())
	mustOK(t)(l.Drain())
	r := ExitReason{Kind: ExitHardKill, Signal: syscall.SIGKILL}
	mustOK(t)(l.Exit(r))
	if l.Reason() != r {
		t.Fatalf("reason: got %v, want %v", l.Reason(), r)
	}
	if _, err := l.Exit(ExitReason{Kind: ExitClean}); err == nil {
		t.Fatal("a second exit must be an error")
	}
	if l.Reason() != r {
		t.Fatalf("a refused exit changed the reason to %v", l.Reason())
	}
	if got := r.String(); got != "killed SIGKILL" {
		t.Fatalf("String: %q", got)
	}
	if got := (ExitReason{Kind: ExitCode, Code: 3}).String(); got != "code 3" {
		t.Fatalf("String: %q", got)
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{"SIGUSR2": syscall.SIGUSR2, "hup": syscall.SIGHUP, "15": syscall.SIGTERM, "TTIN": syscall.SIGTTIN} {
		got, err := ParseSignal(in)
		if err != nil || got != want {
			t.Errorf("ParseSignal(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "SIGNOPE", "0", "99", "1x"} {
		if _, err := ParseSignal(bad); err == nil {
			t.Errorf("ParseSignal(%q): want an error", bad)
		}
	}
}

// TestDiagramInDocs keeps the picture in docs/architecture.md equal to the
// one generated from the table.
func TestDiagramInDocs(t *testing.T) {
	diagram, err := Mermaid()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(squeeze(string(doc)), squeeze(diagram)) {
		t.Fatalf("docs/architecture.md does not contain the generated diagram; paste this:\n%s", diagram)
	}
}

// squeeze drops indentation, so the diagram may sit inside a list.
func squeeze(s string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		out = append(out, strings.TrimSpace(line))
	}
	return strings.Join(out, "\n")
}

// TestNextAgreesWithLifecycle: Next, the table as a lookup, allows exactly
// the moves a Lifecycle makes, to the same states.
func TestNextAgreesWithLifecycle(t *testing.T) {
	walk := map[State][]Event{
		Forking:   nil,
		Listening: {Ready},
		Draining:  {Drain},
		Killed:    {Exit},
	}
	for from, path := range walk {
		for _, e := range []Event{Ready, Drain, Exit} {
			l := New()
			for _, p := range path {
				if p == Exit {
					_, _ = l.Exit(ExitReason{Kind: ExitClean})
				} else {
					_, _ = l.fire(p)
				}
			}
			if l.State() != from {
				t.Fatalf("walk to %s ended in %s", from, l.State())
			}
			tr, lerr := l.fire(e)
			to, nerr := Next(from, e)
			switch {
			case (lerr == nil) != (nerr == nil):
				t.Errorf("%s in %s: Lifecycle says %v, Next says %v", e, from, lerr, nerr)
			case nerr != nil && !errors.Is(nerr, ErrInvalidEvent):
				t.Errorf("%s in %s: %v does not wrap ErrInvalidEvent", e, from, nerr)
			case nerr == nil && tr.To != to:
				t.Errorf("%s in %s: Lifecycle goes to %s, Next to %s", e, from, tr.To, to)
			case nerr == nil && !Reachable(from, to):
				t.Errorf("Reachable(%s, %s) is false for a move of the table", from, to)
			}
		}
	}
	if !Reachable(Forking, Killed) || !Reachable(Forking, Draining) {
		t.Error("Reachable misses a path of the table")
	}
	if Reachable(Killed, Forking) || Reachable(Listening, Forking) || Reachable(Draining, Listening) || Reachable(Killed, Killed) {
		t.Error("Reachable accepts a path the table does not have")
	}
}

// TestRestore: a lifecycle restored at a state moves from it by the
// table, as one that got there by events; killed and unknown states are
// refused.
func TestRestore(t *testing.T) {
	for _, s := range []State{Forking, Listening, Draining} {
		l, err := Restore(s)
		if err != nil {
			t.Fatalf("restore %s: %v", s, err)
		}
		if l.State() != s {
			t.Fatalf("restored %s: in %s", s, l.State())
		}
		for _, ev := range []Event{Ready, Drain, Exit} {
			want, werr := Next(s, ev)
			if got := l.Can(ev); got != (werr == nil) {
				t.Errorf("restored %s: Can(%s) = %v, the table says %v", s, ev, got, werr == nil)
			}
			if werr != nil {
				continue
			}
			r, _ := Restore(s)
			if tr, err := r.fire(ev); err != nil || tr.To != want {
				t.Errorf("restored %s: %s led to %v (%v), want %s", s, ev, tr, err, want)
			}
		}
	}
	for _, s := range []State{Killed, "sleeping", ""} {
		if _, err := Restore(s); err == nil {
			t.Errorf("restore %q: want an error", s)
		}
	}
}
