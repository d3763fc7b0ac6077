package osproc

import (
	"strings"
	"testing"
)

// TestTailKeepsTheEnd: the before-fork output buffer keeps a bounded end
// of what was written, whatever the sizes of the writes, and its last
// line is the last one written, cut from the front when too long.
func TestTailKeepsTheEnd(t *testing.T) {
	var out tail
	chunk := []byte(strings.Repeat("x", 1000))
	for range 10_000 {
		out.Write(chunk)
		if len(out.buf) > 2*tailSize || cap(out.buf) > 4*tailSize {
			t.Fatalf("buffer of %d bytes (capacity %d), want at most %d", len(out.buf), cap(out.buf), 2*tailSize)
		}
	}
	out.Write([]byte("\nfirst\nmigrations pending\n\n"))
	if got := out.lastLine(); got != "migrations pending" {
		t.Errorf("lastLine %q, want %q", got, "migrations pending")
	}
	out.Write([]byte(strings.Repeat("é", 10_000) + "end"))
	got := out.lastLine()
	if len(got) > maxLastLine+3 || !strings.HasPrefix(got, "...é") || !strings.HasSuffix(got, "éend") {
		t.Errorf("lastLine of a long line: %d bytes %.20q...%q, want at most %d, cut at a character", len(got), got, got[len(got)-10:], maxLastLine+3)
	}
	var big tail
	big.Write([]byte(strings.Repeat("y", 10*tailSize) + "\nlast"))
	if got := big.lastLine(); got != "last" {
		t.Errorf("lastLine after one big write %q, want last", got)
	}
	var none tail
	if got := none.lastLine(); got != "" {
		t.Errorf("lastLine of no output %q", got)
	}
}
