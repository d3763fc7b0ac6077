package osproc

import (
	"strings"
	"testing"

	ctl "github.com/dutchmaster/dutchmaster/sockets/control"
)

// TestOutputLogBounds: a worker keeps its last maxLines lines and at
// most maxBytes of text, the last keepExited exited workers keep theirs,
// and Since gives the lines after a number, of all workers in order.
func TestOutputLogBounds(t *testing.T) {
	l := NewOutputLog(3, 10, 1)
	for _, w := range []int{1, 2, 3} {
		l.begin(w)
	}
	for _, text := range []string{"a", "b", "c", "d"} {
		l.add(ctl.LogLine{Worker: 1, Line: text, Stream: ctl.StreamOut})
		l.add(ctl.LogLine{Worker: 2, Line: strings.Repeat(text, 4), Stream: ctl.StreamErr})
	}
	if got := texts(l.Last(1, 10)); got != "b c d" {
		t.Errorf("w1 keeps %q, want the last 3 lines", got)
	}
	if got := texts(l.Last(2, 10)); got != "cccc dddd" {
		t.Errorf("w2 keeps %q, want at most 10 bytes", got)
	}
	if got := texts(l.Last(0, 1)); got != "d dddd" {
		t.Errorf("the last line of each: %q", got)
	}
	_, newest, _ := l.Last(0, 0)
	l.add(ctl.LogLine{Worker: 3, Line: "new"})
	lines, _ := l.Since(0, newest)
	if len(lines) != 1 || lines[0].Line != "new" || lines[0].Seq != newest+1 {
		t.Errorf("Since(%d): %+v", newest, lines)
	}
	l.end(1)
	if _, _, ok := l.Last(1, 1); !ok {
		t.Error("an exited worker's lines went at once")
	}
	l.end(2)
	if _, _, ok := l.Last(1, 1); ok {
		t.Error("w1's lines stayed after a later exit, with keepExited 1")
	}
	if got := texts(l.Last(2, 10)); got != "cccc dddd" {
		t.Errorf("the last exited worker keeps %q", got)
	}
}

func texts(lines []ctl.LogLine, _ uint64, _ bool) string {
	var s []string
	for _, l := range lines {
		s = append(s, l.Line)
	}
	return strings.Join(s, " ")
}
