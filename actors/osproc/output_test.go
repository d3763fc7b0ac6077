package osproc_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/osproc"
	ctl "github.com/dutchmaster/dutchmaster/sockets/control"
	"github.com/dutchmaster/dutchmaster/sockets/testproc"
)

// TestLogOutput: with LogOutput each line of the worker's stdout (info)
// and stderr (warn) becomes one log event with the worker's fields, a
// last line without a newline included; Exited.Detail carries the last
// five stderr lines.
func TestLogOutput(t *testing.T) {
	logs := &syncBuffer{}
	rt := newRuntime(t, osproc.Config{
		Command:   role(t, "chatter"),
		LogOutput: true,
		Logger:    zerolog.New(logs).With().Str("component", "test").Logger(),
	})
	rec, _ := spawn(t, rt, actors.WorkerSpec{ID: 7, Slot: 1, Generation: 4})
	ex := expectExit(t, rec, 1)
	if want := "err 3\nerr 4\nerr 5\nerr 6\nerr 7"; ex.Detail != want {
		t.Errorf("Exited.Detail %q, want %q", ex.Detail, want)
	}

	type event struct {
		Level, Stream, Message, Component string
		Worker, Slot, Generation          int
	}
	var got []event
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		got = append(got, e)
	}
	var want []event
	line := func(level, stream, msg string) {
		want = append(want, event{level, stream, msg, "test", 7, 1, 4})
	}
	line("info", "stdout", "out 1")
	line("info", "stdout", "out 2") // its \r\n is a line end too
	for _, msg := range []string{"err 1", "err 2", "err 3", "err 4", "err 5", "err 6", "err 7"} {
		line("warn", "stderr", msg)
	}
	// The two streams are read concurrently: compare each on its own.
	for _, stream := range []string{"stdout", "stderr"} {
		of := func(es []event) []event {
			return slices.DeleteFunc(slices.Clone(es), func(e event) bool { return e.Stream != stream })
		}
		if g, w := of(got), of(want); !slices.Equal(g, w) {
			t.Errorf("%s logged as\n%+v\nwant\n%+v", stream, g, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d log events, want %d: %s", len(got), len(want), logs.String())
	}
}

func init() {
	// goodbye writes a line to stderr, then another once SIGTERM asks it
	// to stop, and exits 0.
	testproc.Register("goodbye", func([]string) int {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM)
		fmt.Fprintln(os.Stderr, "serving")
		select {
		case <-sigs:
		case <-time.After(testproc.Timeout):
			return 1
		}
		fmt.Fprintln(os.Stderr, "goodbye")
		return 0
	})
}

// waitLines waits until the log keeps n lines of worker 1.
func waitLines(t *testing.T, tail *osproc.OutputLog, n int) []ctl.LogLine {
	t.Helper()
	deadline := time.Now().Add(testproc.Timeout)
	for {
		lines, _, _ := tail.Last(1, 100)
		if len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log keeps %+v, want %d lines", lines, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDrainOutputNotAWarning: with LogOutput, a worker's stderr is
// logged at warn while it serves and at info once it is asked to stop
// (a drain's goodbye is no warning); both lines are kept for ctl logs,
// with the worker's pid and generation.
func TestDrainOutputNotAWarning(t *testing.T) {
	logs := &syncBuffer{}
	tail := osproc.NewOutputLog(0, 0, -1)
	rt := newRuntime(t, osproc.Config{Command: role(t, "goodbye"), LogOutput: true, Tail: tail, Logger: zerolog.New(logs)})
	rec, pid := spawn(t, rt, actors.WorkerSpec{ID: 1, Generation: 3})
	waitLines(t, tail, 1)
	rt.Drain(1, actors.DrainSignal)
	expectExit(t, rec, 0)
	lines := waitLines(t, tail, 2)
	for i, want := range []string{"serving", "goodbye"} {
		if l := lines[i]; l.Line != want || l.Stream != ctl.StreamErr || l.PID != pid || l.Generation != 3 || l.Worker != 1 {
			t.Errorf("kept line %d: %+v, want %q of pid %d", i, l, want, pid)
		}
	}
	log := logs.String()
	if !strings.Contains(log, `{"level":"warn","worker":1,"slot":0,"generation":3,"stream":"stderr","message":"serving"}`) ||
		!strings.Contains(log, `{"level":"info","worker":1,"slot":0,"generation":3,"stream":"stderr","message":"goodbye"}`) {
		t.Errorf("want serving at warn, goodbye at info:\n%s", log)
	}
}

// TestOutputKeptAndPassedThrough: without LogOutput, a kept output is
// passed on to Stdout and Stderr byte for byte (a last line without its
// newline too) while its lines are kept.
func TestOutputKeptAndPassedThrough(t *testing.T) {
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	tail := osproc.NewOutputLog(0, 0, -1)
	rt := newRuntime(t, osproc.Config{Command: role(t, "chatter"), Tail: tail, Stdout: stdout, Stderr: stderr})
	rec, _ := spawn(t, rt, actors.WorkerSpec{ID: 1, Generation: 1})
	expectExit(t, rec, 1)
	if stdout.String() != "out 1\nout 2\r\n" || stderr.String() != "err 1\nerr 2\nerr 3\nerr 4\nerr 5\nerr 6\nerr 7" {
		t.Errorf("passed through: stdout %q, stderr %q", stdout.String(), stderr.String())
	}
	streams := map[string][]string{}
	for _, l := range waitLines(t, tail, 9) {
		streams[l.Stream] = append(streams[l.Stream], l.Line)
	}
	if out, errs := strings.Join(streams[ctl.StreamOut], ","), strings.Join(streams[ctl.StreamErr], ","); out != "out 1,out 2" || errs != "err 1,err 2,err 3,err 4,err 5,err 6,err 7" {
		t.Errorf("kept: out %q, err %q", out, errs)
	}
}
