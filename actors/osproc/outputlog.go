package osproc

import (
	"cmp"
	"slices"
	"sort"
	"sync"

	ctl "github.com/dutchmaster/dutchmaster/sockets/control"
)

// Defaults of the kept output (OutputLog).
const (
	DefaultTailLines  = 1000
	DefaultTailBytes  = 1 << 20
	DefaultKeepExited = 16
)

// OutputLog keeps the last lines each worker wrote to its stdout and
// stderr, for `dutchmaster ctl logs`: per worker at most maxLines lines
// and maxBytes bytes of text (the oldest go first), for the running
// workers and the last keepExited that exited (so a crash's output can be
// read after it). Its memory is bounded by (workers + keepExited) ×
// maxBytes plus the lines' bookkeeping. Safe for concurrent use.
type OutputLog struct {
	maxLines, maxBytes, keepExited int

	mu      sync.Mutex
	seq     uint64
	workers map[int]*workerTail
	exited  []int // the exited workers kept, oldest first
	// changed is closed (and replaced) when a line is added, if a
	// follower took it since the last close.
	changed chan struct{}
	taken   bool
}

type workerTail struct {
	lines []ctl.LogLine // Seq ascending
	bytes int
}

// NewOutputLog keeps maxLines lines and maxBytes bytes per worker (a
// value under 1 takes the default), and the last keepExited exited
// workers' (negative: the default).
func NewOutputLog(maxLines, maxBytes, keepExited int) *OutputLog {
	if maxLines < 1 {
		maxLines = DefaultTailLines
	}
	if maxBytes < 1 {
		maxBytes = DefaultTailBytes
	}
	if keepExited < 0 {
		keepExited = DefaultKeepExited
	}
	return &OutputLog{maxLines: maxLines, maxBytes: maxBytes, keepExited: keepExited,
		workers: map[int]*workerTail{}, changed: make(chan struct{})}
}

// begin makes a worker known, before it writes anything.
func (l *OutputLog) begin(worker int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.workers[worker] == nil {
		l.workers[worker] = &workerTail{}
	}
}

// add keeps one line, numbering it.
func (l *OutputLog) add(line ctl.LogLine) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.workers[line.Worker]
	if w == nil {
		w = &workerTail{}
		l.workers[line.Worker] = w
	}
	l.seq++
	line.Seq = l.seq
	w.lines = append(w.lines, line)
	w.bytes += len(line.Line)
	for len(w.lines) > l.maxLines || (w.bytes > l.maxBytes && len(w.lines) > 1) {
		w.bytes -= len(w.lines[0].Line)
		w.lines[0] = ctl.LogLine{} // the backing array must not keep its text
		w.lines = w.lines[1:]
	}
	l.wake()
}

// end notes that a worker exited: its lines stay until keepExited later
// exits push them out.
func (l *OutputLog) end(worker int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.workers[worker] == nil || slices.Contains(l.exited, worker) {
		return
	}
	l.exited = append(l.exited, worker)
	for len(l.exited) > l.keepExited {
		delete(l.workers, l.exited[0])
		l.exited = l.exited[1:]
	}
}

// wake tells the followers that something changed. Under l.mu.
func (l *OutputLog) wake() {
	if l.taken {
		close(l.changed)
		l.changed, l.taken = make(chan struct{}), false
	}
}

// Last returns the last n kept lines of worker (0: of each worker), in
// the order they were written, and the number of the newest line kept;
// ok is false for a worker whose lines are not kept (unknown, or
// exited long ago).
func (l *OutputLog) Last(worker, n int) (lines []ctl.LogLine, newest uint64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	newest = l.seq
	if worker != 0 {
		w := l.workers[worker]
		if w == nil {
			return nil, newest, false
		}
		return slices.Clone(w.lines[max(len(w.lines)-n, 0):]), newest, true
	}
	for _, w := range l.workers {
		lines = append(lines, w.lines[max(len(w.lines)-n, 0):]...)
	}
	slices.SortFunc(lines, func(a, b ctl.LogLine) int { return cmp.Compare(a.Seq, b.Seq) })
	return lines, newest, true
}

// Since returns the kept lines of worker (0: every worker) numbered
// after after, in order, and a channel closed once more may have come.
func (l *OutputLog) Since(worker int, after uint64) (lines []ctl.LogLine, changed <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, w := range l.workers {
		if worker != 0 && id != worker {
			continue
		}
		i := sort.Search(len(w.lines), func(i int) bool { return w.lines[i].Seq > after })
		lines = append(lines, w.lines[i:]...)
	}
	slices.SortFunc(lines, func(a, b ctl.LogLine) int { return cmp.Compare(a.Seq, b.Seq) })
	l.taken = true
	return lines, l.changed
}
