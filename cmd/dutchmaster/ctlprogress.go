//go:build linux

package main

import (
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/sockets/control"
)

// exitTimedOut: ctl's --timeout came first; the master goes on with what
// it was asked (a restart's rollout runs to its end).
const exitTimedOut = 3

// progressView shows a restart's rollout as the master reports it: on a
// terminal one line rewritten in place (and ticked, so that the time a
// replacement takes to start shows), elsewhere one line per step.
type progressView struct {
	w     io.Writer
	tty   bool
	width int // the terminal's columns; 0 unknown
	begun time.Time

	mu       sync.Mutex
	old      []int
	replaced int
	total    int
	starting map[int]time.Time // replacements forked, not yet listening
	draining map[int]bool
	last     string // the step the live line ends with
	drawn    bool
	tick     *time.Ticker
	stop     chan struct{}
	closed   bool
	wg       sync.WaitGroup
}

func newProgressView(w io.Writer, begun time.Time) *progressView {
	v := &progressView{w: w, begun: begun, starting: map[int]time.Time{}, draining: map[int]bool{}, stop: make(chan struct{})}
	if f, ok := w.(*os.File); ok {
		if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			v.tty = true
			if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil {
				v.width = int(ws.Col)
			}
		}
	}
	if v.tty {
		v.tick = time.NewTicker(200 * time.Millisecond)
		v.wg.Add(1)
		go func() {
			defer v.wg.Done()
			for {
				select {
				case <-v.tick.C:
					v.mu.Lock()
					if v.drawn {
						v.draw()
					}
					v.mu.Unlock()
				case <-v.stop:
					return
				}
			}
		}()
	}
	return v
}

// close stops the ticking; the live line stays as last drawn.
func (v *progressView) close() {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return
	}
	v.closed = true
	v.mu.Unlock()
	if v.tty {
		v.tick.Stop()
		close(v.stop)
		v.wg.Wait()
	}
}

func workerName(id, pid int) string {
	if pid == 0 {
		return "w" + strconv.Itoa(id)
	}
	return fmt.Sprintf("w%d (pid %d)", id, pid)
}

// event takes one progress line from the master.
func (v *progressView) event(p control.Progress) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.replaced, v.total = p.Replaced, p.Total
	var line string
	switch p.Event {
	case control.ProgressStarted:
		v.old = p.PIDs
		line = fmt.Sprintf("rollout: replacing %d workers (pids %s)", p.Total, pidsText(p.PIDs))
	case control.ProgressFork:
		what := "fork " + workerName(p.Worker, 0)
		if p.Replacement {
			what += " (a replacement)"
			v.starting[p.Worker] = time.Now()
		}
		line = fmt.Sprintf("%s, generation %d", what, p.Generation)
	case control.ProgressSpawned:
		line = workerName(p.Worker, p.PID) + " started"
	case control.ProgressListening:
		took := ""
		if at, ok := v.starting[p.Worker]; ok {
			took = " after " + human(time.Since(at))
			delete(v.starting, p.Worker)
		}
		line = fmt.Sprintf("%s listening%s: replaced %d of %d", workerName(p.Worker, p.PID), took, p.Replaced, p.Total)
	case control.ProgressDrain:
		v.draining[p.Worker] = true
		line = fmt.Sprintf("drain %s: %s", workerName(p.Worker, p.PID), p.Reason)
	case control.ProgressExit:
		delete(v.draining, p.Worker)
		delete(v.starting, p.Worker)
		line = fmt.Sprintf("exit %s: %s", workerName(p.Worker, p.PID), p.Reason)
	default:
		return // an event this ctl does not know
	}
	if !v.tty {
		fmt.Fprintln(v.w, line)
		return
	}
	v.last = line
	v.draw()
}

// draw rewrites the live line. Under v.mu.
func (v *progressView) draw() {
	parts := []string{fmt.Sprintf("replaced %d of %d", v.replaced, v.total)}
	ids := slices.Sorted(maps.Keys(v.starting))
	for _, id := range ids {
		parts = append(parts, fmt.Sprintf("w%d starting %s", id, time.Since(v.starting[id]).Round(100*time.Millisecond)))
	}
	if len(v.draining) > 0 {
		parts = append(parts, fmt.Sprintf("%d draining", len(v.draining)))
	}
	parts = append(parts, v.last)
	line := strings.Join(parts, " | ")
	// A line wider than the terminal would wrap, and the carriage return
	// would rewrite only its last row.
	if r := []rune(line); v.width > 1 && len(r) >= v.width {
		line = string(r[:v.width-1])
	}
	fmt.Fprintf(v.w, "\r\x1b[K%s", line)
	v.drawn = true
}

// generationText names a rollout's generation. A rollout that replaces
// only the workers marked for it (`ctl restart wN`, a recycle) starts no
// generation: the core gives it generation 0.
func generationText(generation int) string {
	if generation == 0 {
		return "no new generation"
	}
	return fmt.Sprintf("generation %d", generation)
}

// summary ends the view with how the rollout ended.
func (v *progressView) summary(r *control.RolloutResult) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.tty && v.drawn {
		fmt.Fprint(v.w, "\r\x1b[K")
	}
	d := human(time.Since(v.begun))
	line := fmt.Sprintf("restart %s after %s: %s, pids %s -> %s", r.Outcome, d, generationText(r.Generation), pidsText(v.old), pidsText(r.Serving))
	if r.Outcome == "aborted" || r.Outcome == "cancelled" {
		line = fmt.Sprintf("restart %s after %s: %s; serving pids %s", r.Outcome, d, generationText(r.Generation), pidsText(r.Serving))
	}
	if r.Reason != "" {
		line += "; reason: " + r.Reason
	}
	fmt.Fprintln(v.w, line)
}

func pidsText(pids []int) string {
	if len(pids) == 0 {
		return "none"
	}
	s := make([]string, len(pids))
	for i, p := range pids {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, " ")
}
