package journal

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/dutchmaster/dutchmaster/actors/core"
)

// Recorder writes a journal: the header at once, then one line per step
// of the core, as actors.Options.Observe reports them. Each line is
// flushed as it is written, so a master that dies leaves a journal whole
// up to its last step (at worst with one line cut short, which Replay
// reports and ignores).
//
// A write error stops the recording (the master goes on without it) and
// is kept for Err and Close; OnError, if set, hears of it once.
type Recorder struct {
	// OnError is called once, with the first write error.
	OnError func(error)

	mu     sync.Mutex
	w      *bufio.Writer
	closer io.Closer
	path   string // the file Create opened or Continue took over
	start  time.Time
	err    error
	closed bool
}

// Create creates (or truncates) the file at path, mode 0640 (a journal
// carries worker pids and the last lines of their stderr), and starts a
// journal in it; see NewRecorder.
func Create(path string, h Header, cfg core.Config, start time.Time) (*Recorder, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return nil, err
	}
	r, err := NewRecorder(f, h, cfg, start)
	if err != nil {
		f.Close()
		return nil, err
	}
	r.closer, r.path = f, path
	return r, nil
}

// NewRecorder writes the header to w, with h's Journal, Version, Started
// and Config filled in from start and cfg. Step times count from start,
// which must carry a monotonic clock reading (time.Now) for them to be
// monotonic.
func NewRecorder(w io.Writer, h Header, cfg core.Config, start time.Time) (*Recorder, error) {
	h.Journal, h.Version, h.Started, h.Config = Magic, Version, start, EncodeConfig(cfg)
	r := &Recorder{w: bufio.NewWriterSize(w, 64<<10), start: start}
	line, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	r.writeLine(line)
	if r.err != nil {
		return nil, r.err
	}
	return r, nil
}

// Observe records one step; it has the signature of actors.Options.Observe.
func (r *Recorder) Observe(now time.Time, in core.Input, out []core.Decision) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil || r.closed {
		return
	}
	line, err := encodeStep(now.Sub(r.start), in, out, r.start)
	if err != nil {
		r.fail(err)
		return
	}
	r.writeLine(line)
}

func encodeStep(at time.Duration, in core.Input, out []core.Decision, start time.Time) ([]byte, error) {
	s := stepLine{At: Duration(at)}
	var err error
	if s.Input, err = EncodeInput(in); err != nil {
		return nil, err
	}
	for _, d := range out {
		raw, err := EncodeDecision(d, start)
		if err != nil {
			return nil, err
		}
		s.Decisions = append(s.Decisions, raw)
	}
	return json.Marshal(s)
}

func (r *Recorder) writeLine(line []byte) {
	r.w.Write(line)
	r.w.WriteByte('\n')
	if err := r.w.Flush(); err != nil {
		r.fail(err)
	}
}

func (r *Recorder) fail(err error) {
	r.err = fmt.Errorf("journal: %w", err)
	if r.OnError != nil {
		r.OnError(r.err)
	}
}

// Err is the first error the recording met, or nil.
func (r *Recorder) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Close flushes the journal and closes the file Create opened. Steps
// observed after Close are dropped; later calls return nil.
func (r *Recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	err := r.err
	if err == nil {
		err = r.w.Flush()
	}
	if r.closer != nil {
		err = errors.Join(err, r.closer.Close())
	}
	return err
}
