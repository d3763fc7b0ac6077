package osproc

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/sockets"
	ctl "github.com/dutchmaster/dutchmaster/sockets/control"
)

// output is where one worker's stdout and stderr go.
//
// With neither LogOutput nor an OutputLog, the worker inherits the
// master's descriptors: no pipe, no copying. Otherwise each stream is a
// pipe the master reads (two descriptors and two goroutines per worker,
// and a copy of every byte): each line is kept in the OutputLog (for ctl
// logs), and then either logged as an event with the worker's fields
// (LogOutput, keeping the last lines of stderr for the report of a failed
// worker; at info level once the worker drains) or passed through to the master's stdout or stderr: unchanged,
// or, where that is a terminal, line by line after the worker's name
// ("w3 | "), so that the workers' lines can be told apart. A destination
// that is not a file (a buffer) is reached through a pipe as well.
//
// The runtime makes the pipes itself (not os/exec) and reads them on
// goroutines of its own, so that a pipe's read end is a descriptor the
// runtime owns and can hand over, with the unfinished line, to the next
// image of the master (an upgrade in place).
type output struct {
	// child is what the worker gets as stdout and stderr: a pipe's write
	// end (closed in the master once the worker has it), or the master's
	// own file.
	child [2]*os.File
	// pipes are the read ends, nil for a stream that is not piped.
	pipes    [2]*os.File
	writers  [2]*lineWriter // with pipes
	errLines *lineWriter    // with LogOutput
	tail     *OutputLog
	worker   int
	readers  sync.WaitGroup

	// draining: the worker was asked to stop; what it writes to stderr
	// now (a goodbye, the requests it finishes) is logged at info, not
	// warn: it is a drain's normal output.
	draining atomic.Bool

	startOnce sync.Once
	started   chan struct{} // closed once pid is known
	pid       int
}

// tailLines is how many of a worker's last stderr lines its exit reports.
const tailLines = 5

// outputLinger bounds how long a worker's output is read after it exited:
// a grandchild that keeps the pipes open must not hold up the report of
// the worker's exit.
const outputLinger = 2 * time.Second

func newOutput(cfg Config, spec actors.WorkerSpec) (*output, error) {
	o := newOutputWriters(cfg, spec, func(i int) bool {
		_, file := []io.Writer{cfg.Stdout, cfg.Stderr}[i].(*os.File)
		return cfg.LogOutput || cfg.Tail != nil || !file
	})
	for i, w := range o.writers {
		if w == nil {
			continue
		}
		r, wr, err := os.Pipe()
		if err != nil {
			o.closePipes()
			return nil, fmt.Errorf("output pipe: %w", err)
		}
		o.pipes[i], o.child[i] = r, wr
	}
	return o, nil
}

// newOutputWriters makes the lineWriters of the streams that piped says
// go through a pipe (0 stdout, 1 stderr); the others go to the master's
// own file.
func newOutputWriters(cfg Config, spec actors.WorkerSpec, piped func(i int) bool) *output {
	o := &output{tail: cfg.Tail, worker: int(spec.ID), started: make(chan struct{})}
	for i, s := range []struct {
		name string
		dst  io.Writer
	}{{ctl.StreamOut, cfg.Stdout}, {ctl.StreamErr, cfg.Stderr}} {
		if !piped(i) {
			o.child[i], _ = s.dst.(*os.File)
			continue
		}
		w := &lineWriter{o: o, stream: s.name, generation: spec.Generation}
		switch {
		case cfg.LogOutput:
			log := cfg.Logger.With().Int(actors.FieldWorker, int(spec.ID)).Int(actors.FieldSlot, spec.Slot).
				Int(actors.FieldGeneration, spec.Generation).Logger()
			w.log, w.level = &log, zerolog.InfoLevel
			if s.name == ctl.StreamErr {
				w.level, w.keep = zerolog.WarnLevel, tailLines
				o.errLines = w
			}
		case isTerminal(s.dst):
			w.pass, w.prefix = s.dst, "w"+strconv.Itoa(int(spec.ID))+" | "
		default:
			w.pass = s.dst
		}
		o.writers[i] = w
	}
	if o.tail != nil {
		o.tail.begin(o.worker)
	}
	return o
}

// closePipes closes the pipes' both ends (a fork that failed).
func (o *output) closePipes() {
	for i, r := range o.pipes {
		if r != nil {
			r.Close()
			o.child[i].Close()
		}
	}
}

// run gives the lines the worker's pid, closes the master's copies of the
// write ends (the worker has its own), and starts reading; gate stops the
// readers for a handover.
func (o *output) run(pid int, gate *pauseGate) {
	o.begin(pid)
	for i, r := range o.pipes {
		if r == nil {
			continue
		}
		if o.child[i] != nil {
			o.child[i].Close()
			o.child[i] = nil
		}
		o.readers.Add(1)
		gate.startReader()
		go o.read(i, gate)
	}
}

// pastDeadline is a read deadline long past: a read returns at once.
var pastDeadline = time.Unix(1, 0)

// read copies one pipe into its lineWriter until end of file (every
// writer gone) or until the read end is closed. Stopped for a handover
// (interrupt), it has written all it read: the unfinished line is in the
// lineWriter.
func (o *output) read(i int, gate *pauseGate) {
	defer o.readers.Done()
	defer gate.endReader()
	buf := make([]byte, 32<<10)
	for {
		n, err := o.pipes[i].Read(buf)
		if n > 0 {
			_, _ = o.writers[i].Write(buf[:n])
		}
		if sockets.Interrupted(err) {
			if !gate.park() {
				return
			}
			continue
		}
		if err != nil {
			return
		}
	}
}

// interrupt stops the readers at once (a read deadline in the past);
// resume lets them read again.
func (o *output) interrupt() { o.setDeadline(pastDeadline) }
func (o *output) resume()    { o.setDeadline(time.Time{}) }

func (o *output) setDeadline(t time.Time) {
	for _, r := range o.pipes {
		if r != nil {
			_ = r.SetReadDeadline(t)
		}
	}
}

// finish, once the worker has exited, waits for the readers to reach end
// of file, for at most outputLinger (a process that left the worker's
// group may hold the pipes), then closes the read ends.
func (o *output) finish() {
	done := make(chan struct{})
	go func() {
		o.readers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(outputLinger):
		for _, r := range o.pipes {
			if r != nil {
				r.Close() // ends a blocked Read
			}
		}
		<-done
	}
	for _, r := range o.pipes {
		if r != nil {
			r.Close()
		}
	}
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// begin gives the lines the worker's pid, once it runs (0: it did not
// start); until then its lines wait.
func (o *output) begin(pid int) {
	o.startOnce.Do(func() {
		o.pid = pid
		close(o.started)
	})
}

// close writes out what is left of unfinished lines; the worker is gone.
func (o *output) close() {
	o.begin(0)
	for _, w := range o.writers {
		if w != nil {
			w.flush()
		}
	}
	if o.tail != nil {
		o.tail.end(o.worker)
	}
}

// lastStderr is the last lines of stderr, or "" when output is not logged.
func (o *output) lastStderr() string {
	if o.errLines == nil {
		return ""
	}
	return o.errLines.lastLines()
}

// maxLogLine bounds one line logged or kept; the rest of a longer line is
// dropped (a stream passed through unchanged keeps it).
const maxLogLine = 16 << 10

// lineWriter splits one of a worker's streams into lines.
type lineWriter struct {
	o          *output
	stream     string // out, err
	generation int
	// pass receives the stream: unchanged when prefix is "", else line by
	// line after prefix.
	pass   io.Writer
	prefix string
	log    *zerolog.Logger // with LogOutput: each line is logged at level
	level  zerolog.Level
	keep   int

	mu      sync.Mutex
	partial []byte
	last    []string
}

func (l *lineWriter) Write(p []byte) (int, error) {
	<-l.o.started
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(p)
	if l.pass != nil && l.prefix == "" {
		// A reader of the master's output that fails (a closed pipe) must
		// not stop the worker: its lines are still kept.
		_, _ = l.pass.Write(p)
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			room := maxLogLine - len(l.partial)
			l.partial = append(l.partial, p[:min(len(p), max(room, 0))]...)
			break
		}
		line := append(l.partial, p[:min(i, max(maxLogLine-len(l.partial), 0))]...)
		l.emit(string(line))
		l.partial = l.partial[:0]
		p = p[i+1:]
	}
	return n, nil
}

func (l *lineWriter) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.emit(string(l.partial))
		l.partial = nil
	}
}

func (l *lineWriter) emit(line string) {
	line = strings.TrimRight(line, "\r")
	if t := l.o.tail; t != nil {
		t.add(ctl.LogLine{Worker: l.o.worker, PID: l.o.pid, Generation: l.generation, Stream: l.stream, At: time.Now(), Line: line})
	}
	switch {
	case l.log != nil:
		level := l.level
		if level == zerolog.WarnLevel && l.o.draining.Load() {
			level = zerolog.InfoLevel
		}
		l.log.WithLevel(level).Str("stream", streamField[l.stream]).Msg(line)
	case l.pass != nil && l.prefix != "":
		_, _ = io.WriteString(l.pass, l.prefix+line+"\n")
	}
	if l.keep > 0 {
		l.last = append(l.last, line)
		if len(l.last) > l.keep {
			l.last = l.last[1:]
		}
	}
}

// streamField is the "stream" field of a logged line.
var streamField = map[string]string{ctl.StreamOut: "stdout", ctl.StreamErr: "stderr"}

func (l *lineWriter) lastLines() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.last, "\n")
}
