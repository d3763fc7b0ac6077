package control

import (
	"slices"
	"sync"
	"testing"
	"time"

	ctl "github.com/dutchmaster/dutchmaster/sockets/control"
)

// memLogs is a Logs of one worker's lines in memory.
type memLogs struct {
	mu      sync.Mutex
	lines   []ctl.LogLine
	changed chan struct{}
}

func (m *memLogs) add(text string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lines = append(m.lines, ctl.LogLine{Worker: 1, PID: 42, Stream: ctl.StreamOut, Line: text, Seq: uint64(len(m.lines) + 1)})
	close(m.changed)
	m.changed = make(chan struct{})
}

func (m *memLogs) Last(worker, n int) ([]ctl.LogLine, uint64, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if worker > 1 {
		return nil, 0, false
	}
	return slices.Clone(m.lines[max(len(m.lines)-n, 0):]), uint64(len(m.lines)), true
}

func (m *memLogs) Since(worker int, after uint64) ([]ctl.LogLine, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.lines[after:]), m.changed
}

// TestLogs: logs sends the last lines asked for, then the reply; with
// follow each new line, until the peer goes (its handler ends: goleak)
// or the server closes (the reply is OK).
func TestLogs(t *testing.T) {
	logs := &memLogs{changed: make(chan struct{})}
	for _, l := range []string{"a", "b", "c"} {
		logs.add(l)
	}
	st := start(t, 1, Options{Logs: logs})
	var got []string
	rep, err := dial(t, st.path).DoLines(ctl.Request{Command: ctl.CommandLogs, Lines: 2}, nil, func(l ctl.LogLine) { got = append(got, l.Line) })
	if err != nil || !rep.OK || !slices.Equal(got, []string{"b", "c"}) {
		t.Fatalf("logs -n 2: %v %+v, lines %q", err, rep, got)
	}
	rep, _ = dial(t, st.path).Do(ctl.Request{Command: ctl.CommandLogs, Worker: 9})
	if rep.OK || rep.Error == "" {
		t.Fatalf("logs w9: %+v", rep)
	}

	follow := func() (*ctl.Client, chan string, chan ctl.Reply) {
		c := dial(t, st.path)
		lines, done := make(chan string, 10), make(chan ctl.Reply, 1)
		go func() {
			defer close(lines)
			rep, err := c.DoLines(ctl.Request{Command: ctl.CommandLogs, Follow: true}, nil, func(l ctl.LogLine) { lines <- l.Line })
			if err != nil {
				rep.Error = err.Error()
			}
			done <- rep
		}()
		return c, lines, done
	}
	// The follower may connect before or after a line: say until heard.
	hear := func(lines chan string, done chan ctl.Reply) {
		deadline := time.After(patience)
		for {
			logs.add("new")
			select {
			case l := <-lines:
				if l == "new" {
					return
				}
			case rep := <-done:
				t.Fatalf("the follow ended: %+v", rep)
			case <-deadline:
				t.Fatal("the follower heard nothing")
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	c, lines, done := follow()
	hear(lines, done)
	c.Close() // the peer goes: its handler ends (goleak checks)
	recv(t, done)

	_, lines, done = follow()
	hear(lines, done)
	go func() {
		for range lines {
		}
	}()
	st.s.Close()
	if rep := recv(t, done); !rep.OK {
		t.Fatalf("a follow when the server closes: %+v, want OK", rep)
	}
}
