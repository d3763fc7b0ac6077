package osproc_test

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/osproc"
	"github.com/dutchmaster/dutchmaster/sockets"
)

// TestIPCLinesInOrderBeforeExit: every line the worker writes arrives as
// one IPC event, in order, before Exited, even when the worker exits right
// after writing and the master is still reading; a line over the bound
// becomes one IPC{Err} and the channel goes on.
func TestIPCLinesInOrderBeforeExit(t *testing.T) {
	const n = 2000
	rt := newRuntime(t, osproc.Config{Command: role(t, "lines", strconv.Itoa(n))})
	rec, _ := spawn(t, rt, actors.WorkerSpec{ID: 1})
	ex, before := until[actors.Exited](t, rec)
	if ex.Code != 0 || ex.Signal != 0 {
		t.Errorf("Exited %+v, want a clean exit", ex)
	}

	var got []string
	for _, msg := range before {
		ipc, ok := msg.(actors.IPC)
		switch {
		case !ok:
			t.Errorf("unexpected event %T %+v", msg, msg)
		case ipc.Err != "":
			got = append(got, "error: "+ipc.Err)
		default:
			got = append(got, string(ipc.Line))
		}
	}
	var want []string
	for i := range n {
		want = append(want, `{"seq":`+strconv.Itoa(i)+`}`)
	}
	want = append(want, "error: ", `{"seq":-1}`)
	if len(got) != len(want) {
		var last []string
		for _, g := range got[max(len(got)-3, 0):] {
			last = append(last, shorten(g))
		}
		t.Fatalf("%d IPC events before Exited, want %d; last ones: %q", len(got), len(want), last)
	}
	for i := range want {
		if want[i] == "error: " {
			if !strings.HasPrefix(got[i], "error: ") || !strings.Contains(got[i], "exceeds") {
				t.Errorf("event %d: %q, want the oversized line's error", i, shorten(got[i]))
			}
			continue
		}
		if got[i] != want[i] {
			t.Errorf("event %d: %q, want %q", i, shorten(got[i]), want[i])
		}
	}
	// The error text is the channel's own, naming the bound.
	tooLong := &sockets.LineTooLongError{Length: sockets.MaxLineBytes + 2, Limit: sockets.MaxLineBytes}
	if !errors.Is(tooLong, sockets.ErrLineTooLong) || got[n] != "error: "+tooLong.Error() {
		t.Errorf("oversized line reported as %q, want %q", got[n], "error: "+tooLong.Error())
	}
}

// TestDrain: each drain method reaches the worker the way it says, with
// the configured stop signal (SIGUSR1 here, to tell it from the default).
func TestDrain(t *testing.T) {
	disconnect := []string{`{"event":"disconnect"}`}
	for _, tc := range []struct {
		how         actors.DrainMethod
		wantLines   []string
		wantEOF     bool
		wantSignals []int
	}{
		{actors.DrainIPC, disconnect, true, nil},
		{actors.DrainSignal, nil, false, []int{int(syscall.SIGUSR1)}},
		{actors.DrainBoth, disconnect, true, []int{int(syscall.SIGUSR1)}},
	} {
		t.Run(string(tc.how), func(t *testing.T) {
			rt := newRuntime(t, osproc.Config{
				Command:    role(t, "drain", string(tc.how)),
				StopSignal: syscall.SIGUSR1,
			})
			rec, _ := spawn(t, rt, actors.WorkerSpec{ID: 1})
			var ready map[string]string
			decode(t, rec.next(t), &ready) // its signal handlers are in place
			if ready["event"] != "ready" {
				t.Fatalf("first line %v, want ready", ready)
			}

			rt.Drain(1, tc.how)
			var got drainReport
			decode(t, rec.next(t), &got)
			expectExit(t, rec, 0)

			if got.TimedOut {
				t.Errorf("the worker waited in vain: %+v", got)
			}
			if !slices.Equal(got.Lines, tc.wantLines) || got.EOF != tc.wantEOF {
				t.Errorf("worker read %q (EOF %v), want %q (EOF %v)", got.Lines, got.EOF, tc.wantLines, tc.wantEOF)
			}
			if !slices.Equal(got.Signals, tc.wantSignals) {
				t.Errorf("worker got signals %v, want %v", got.Signals, tc.wantSignals)
			}
		})
	}
}

// shorten keeps failure messages readable when a line is a megabyte.
func shorten(s string) string {
	if len(s) <= 80 {
		return s
	}
	return s[:60] + "..." + strconv.Itoa(len(s)) + " bytes"
}
