package osproc

import (
	"os"
	"testing"
	"time"
)

// TestParseProcStat: the fields after a comm with spaces and parentheses
// are read at their places.
func TestParseProcStat(t *testing.T) {
	line := "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 150 50 20 30 20 0 1 0 12345 1000000 250 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n"
	st, ok := parseProcStat([]byte(line))
	if !ok || st.rss != 250*pageSize || st.cpu != 2500*time.Millisecond {
		t.Fatalf("parseProcStat: %+v %v, want rss %d and 2.5s", st, ok, 250*pageSize)
	}
	if _, ok := parseProcStat([]byte("42 (x) S 1")); ok {
		t.Fatal("a short line parsed")
	}
}

// TestReadProcStatSelf: this process has a resident set.
func TestReadProcStatSelf(t *testing.T) {
	st, ok := readProcStat(os.Getpid())
	if !ok || st.rss <= 0 {
		t.Fatalf("readProcStat(self): %+v %v", st, ok)
	}
}
