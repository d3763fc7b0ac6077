//go:build linux

package main

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// gate is a log reader that takes nothing until opened.
type gate struct {
	open chan struct{}
	mu   sync.Mutex
	out  bytes.Buffer
}

func (g *gate) Write(p []byte) (int, error) {
	<-g.open
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.out.Write(p)
}

func (g *gate) String() string { g.mu.Lock(); defer g.mu.Unlock(); return g.out.String() }

// TestLogWriterNeverBlocks: with a reader that takes nothing, writes
// return at once and lines past the queue are counted as dropped; once
// the reader reads, the queued lines come out, then the count of the
// dropped ones.
func TestLogWriterNeverBlocks(t *testing.T) {
	g := &gate{open: make(chan struct{})}
	w := newLogWriter(g)
	var reports []uint64
	var mu sync.Mutex
	w.start(func(n uint64) {
		mu.Lock()
		reports = append(reports, n)
		mu.Unlock()
		fmt.Fprintf(w, "dropped %d\n", n)
	})
	const lines = 3 * logQueue
	start := time.Now()
	for i := range lines {
		fmt.Fprintf(w, "line %d\n", i)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("%d writes took %s with a stuck reader", lines, d)
	}
	// One line is with the stuck reader, logQueue wait in the queue.
	if got := w.Dropped(); got < lines-logQueue-1 || got > lines-logQueue {
		t.Fatalf("%d dropped of %d, want about %d", got, lines, lines-logQueue)
	}
	dropped := w.Dropped()
	close(g.open)
	if !w.close() {
		t.Fatal("the queue was not written out within the bound")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reports) != 1 || reports[0] != dropped {
		t.Fatalf("reports %v, want one of %d", reports, dropped)
	}
	out := g.String()
	if !bytes.HasPrefix([]byte(out), []byte("line 0\nline 1\n")) || !bytes.HasSuffix([]byte(out), fmt.Appendf(nil, "dropped %d\n", dropped)) {
		t.Fatalf("output %q...%q: want the first lines, then the count", out[:20], out[len(out)-40:])
	}
}

// TestLogWriterExitBound: close gives up on a reader that never reads
// after logFlushTimeout.
func TestLogWriterExitBound(t *testing.T) {
	g := &gate{open: make(chan struct{})}
	w := newLogWriter(g)
	w.start(func(uint64) {})
	fmt.Fprintln(w, "stuck")
	start := time.Now()
	if w.close() {
		t.Fatal("close reports the line written to a reader that never reads")
	}
	if d := time.Since(start); d < logFlushTimeout || d > logFlushTimeout+5*time.Second {
		t.Errorf("close took %s, want about %s", d, logFlushTimeout)
	}
	close(g.open) // lets the writer's goroutine end
	<-w.done
}

// TestLogWriterFlushGoesOn: flush returns once every line queued before it
// is written, and the writer goes on writing the lines after it (an
// upgrade whose exec failed keeps its log).
func TestLogWriterFlushGoesOn(t *testing.T) {
	g := &gate{open: make(chan struct{})}
	close(g.open)
	w := newLogWriter(g)
	w.start(func(uint64) {})
	for i := range 100 {
		fmt.Fprintf(w, "before %d\n", i)
	}
	if !w.flush() {
		t.Fatal("flush: the queue was not written out within the bound")
	}
	if got := g.String(); !strings.HasSuffix(got, "before 99\n") || strings.Count(got, "\n") != 100 {
		t.Fatalf("after flush the reader has %d lines, want the 100 queued before it:\n%s", strings.Count(got, "\n"), got)
	}
	fmt.Fprintln(w, "after")
	if !w.close() {
		t.Fatal("close: the queue was not written out")
	}
	if got := g.String(); !strings.HasSuffix(got, "before 99\nafter\n") {
		t.Fatalf("the line after the flush is missing:\n%s", got)
	}
}
