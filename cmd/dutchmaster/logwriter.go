//go:build linux

package main

import (
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// logQueue is how many log lines wait for a slow reader before new ones
// are dropped: a few seconds of a busy master's own lines.
const logQueue = 1024

// logFlushTimeout bounds the last write of the queued lines at exit: a
// reader that is stuck must not keep the master from exiting.
const logFlushTimeout = 2 * time.Second

// logReportEvery spaces the reports of dropped lines while the reader is
// slow but not stuck (it never quite catches up).
const logReportEvery = time.Second

// logWriter is the master's log output: a bounded queue in front of its
// stderr, written by a goroutine of its own. The master logs from the
// goroutines that make its decisions (the cluster actor, signal handling,
// worker output); a reader that stops reading (a log shipper stuck, a
// Docker log driver in blocking mode) would stop them all at the first
// full pipe. Here a full queue drops the line and counts it instead, and
// the count is logged once the reader catches up.
type logWriter struct {
	out   io.Writer
	lines chan []byte

	dropped    atomic.Uint64 // lines dropped since start
	unreported atomic.Uint64 // of which not yet reported in the log
	report     func(n uint64)
	lastReport time.Time

	startOnce, stopOnce sync.Once
	started             atomic.Bool
	stop, done          chan struct{}
	// flushes asks the writer to write out what is queued and say so.
	flushes chan chan struct{}
}

func newLogWriter(out io.Writer) *logWriter {
	return &logWriter{out: out, lines: make(chan []byte, logQueue), stop: make(chan struct{}), done: make(chan struct{}),
		flushes: make(chan chan struct{})}
}

// Write queues one log line (zerolog writes each event once); it never
// blocks.
func (w *logWriter) Write(p []byte) (int, error) {
	line := append([]byte(nil), p...) // the caller reuses p
	select {
	case w.lines <- line:
	default:
		w.dropped.Add(1)
		w.unreported.Add(1)
	}
	return len(p), nil
}

// Dropped counts the lines dropped since start.
func (w *logWriter) Dropped() uint64 { return w.dropped.Load() }

// start writes the queue out from now on; report logs a count of dropped
// lines.
func (w *logWriter) start(report func(n uint64)) {
	w.startOnce.Do(func() {
		w.started.Store(true)
		w.report, w.lastReport = report, time.Now()
		go w.run()
	})
}

func (w *logWriter) run() {
	defer close(w.done)
	for {
		select {
		case line := <-w.lines:
			w.out.Write(line)
			w.reportDrops(false)
		case flushed := <-w.flushes:
			for queued := len(w.lines); queued > 0; queued-- {
				w.out.Write(<-w.lines)
			}
			close(flushed)
		case <-w.stop:
			for {
				select {
				case line := <-w.lines:
					w.out.Write(line)
				default:
					if w.unreported.Load() == 0 {
						return
					}
					w.reportDrops(true)
				}
			}
		}
	}
}

// reportDrops logs the lines dropped since the last report once the
// reader has caught up (the queue is empty), or every logReportEvery
// while it stays behind.
func (w *logWriter) reportDrops(now bool) {
	if w.unreported.Load() == 0 {
		return
	}
	caughtUp := len(w.lines) == 0
	// Still behind: now and then, while the queue has room for the report.
	behind := time.Since(w.lastReport) >= logReportEvery && len(w.lines) < cap(w.lines)
	if !now && !caughtUp && !behind {
		return
	}
	w.lastReport = time.Now()
	w.report(w.unreported.Swap(0))
}

// close writes out what is queued, for at most logFlushTimeout, and
// reports whether it all went out. Lines logged later are queued and not
// written.
func (w *logWriter) close() bool {
	w.start(func(uint64) {})
	w.stopOnce.Do(func() { close(w.stop) })
	select {
	case <-w.done:
		return true
	case <-time.After(logFlushTimeout):
		return false
	}
}

// flush writes out the lines queued so far, for at most logFlushTimeout,
// and goes on writing: before the master executes a new binary of itself
// (an upgrade), whose image would not have them. It reports whether they
// all went out.
func (w *logWriter) flush() bool {
	w.start(func(uint64) {})
	timeout := time.NewTimer(logFlushTimeout)
	defer timeout.Stop()
	flushed := make(chan struct{})
	select {
	case w.flushes <- flushed:
	case <-w.done:
		return true
	case <-timeout.C:
		return false
	}
	select {
	case <-flushed:
		return true
	case <-timeout.C:
		return false
	}
}

// discard drops the lines queued before start: a start refused for bad
// input reports it in one line, without the lines of what it had opened.
// Once the queue is written out, it does nothing.
func (w *logWriter) discard() {
	if w.started.Load() {
		return
	}
	for {
		select {
		case <-w.lines:
		default:
			return
		}
	}
}
