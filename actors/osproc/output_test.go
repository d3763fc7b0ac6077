package osproc_test

import (
	"bufio"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/osproc"
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
