package osproc

import (
	"bytes"
	"io"
	"strings"
	"sync"

	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/actors"
)

// output is where one worker's stdout and stderr go: straight through to
// the master's (the worker inherits the descriptors, no copying), or, with
// LogOutput, one log event per line, keeping the last lines of stderr for
// the report of a failed worker.
type output struct {
	stdout, stderr io.Writer
	errLines       *lineLogger
}

// tailLines is how many of a worker's last stderr lines its exit reports.
const tailLines = 5

func newOutput(cfg Config, spec actors.WorkerSpec) *output {
	if !cfg.LogOutput {
		return &output{stdout: cfg.Stdout, stderr: cfg.Stderr}
	}
	log := cfg.Logger.With().Int(actors.FieldWorker, int(spec.ID)).Int(actors.FieldSlot, spec.Slot).
		Int(actors.FieldGeneration, spec.Generation).Logger()
	errs := &lineLogger{log: log, stream: "stderr", level: zerolog.WarnLevel, keep: tailLines}
	return &output{stdout: &lineLogger{log: log, stream: "stdout", level: zerolog.InfoLevel}, stderr: errs, errLines: errs}
}

func (o *output) close() {
	for _, w := range []io.Writer{o.stdout, o.stderr} {
		if l, ok := w.(*lineLogger); ok {
			l.flush()
		}
	}
}

// tail is the last lines of stderr, or "" when output is not captured.
func (o *output) tail() string {
	if o.errLines == nil {
		return ""
	}
	return o.errLines.tail()
}

// maxLogLine bounds one logged line; the rest of a longer line is dropped.
const maxLogLine = 16 << 10

// lineLogger logs each complete line written to it.
type lineLogger struct {
	log    zerolog.Logger
	stream string
	level  zerolog.Level
	keep   int

	mu      sync.Mutex
	partial []byte
	last    []string
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(p)
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

func (l *lineLogger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.emit(string(l.partial))
		l.partial = nil
	}
}

func (l *lineLogger) emit(line string) {
	line = strings.TrimRight(line, "\r")
	l.log.WithLevel(l.level).Str("stream", l.stream).Msg(line)
	if l.keep > 0 {
		l.last = append(l.last, line)
		if len(l.last) > l.keep {
			l.last = l.last[1:]
		}
	}
}

func (l *lineLogger) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.last, "\n")
}
