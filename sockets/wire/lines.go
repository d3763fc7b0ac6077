package wire

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// MaxLineBytes is the default bound of one IPC line, newline excluded:
// 16 MiB. Node.js sets no bound of its own: a message is sent whole as
// long as JSON.stringify can make its text, i.e. up to V8's longest
// string (2^29-24 characters, about 512 MiB, on 64-bit). Apps do send
// lines of several MiB (prom-client's answer to the cluster metrics
// request grows with every series), so the bound is well above those,
// and low enough that a worker that writes without end cannot take much
// of the master's memory: a line is buffered whole before it is read, in
// a buffer that grows by doubling, so one channel allocates about twice
// this much for it at worst, and lets the buffer go after the line. A
// longer line is skipped and logged; the sender's callback cannot
// tell (docs/protocol.md, section 2).
const MaxLineBytes = 16 << 20

// readChunk is the size of the read buffer under a LineReader; longer lines
// are assembled from several chunks, up to the reader's limit.
const readChunk = 64 << 10

// ErrLineTooLong is matched (errors.Is) by every *LineTooLongError.
var ErrLineTooLong = errors.New("line too long")

// LineTooLongError reports one line that exceeded the limit. The line was
// skipped up to and including its newline; the reader is still usable.
type LineTooLongError struct {
	Length int64 // bytes of the line seen before its newline (or EOF)
	Limit  int   // the reader's limit
}

func (e *LineTooLongError) Error() string {
	return fmt.Sprintf("line of %d bytes exceeds the %d-byte limit; skipped", e.Length, e.Limit)
}

// Is makes errors.Is(err, ErrLineTooLong) true.
func (e *LineTooLongError) Is(target error) bool { return target == ErrLineTooLong }

// LineReader splits a byte stream on '\n' with a bounded line length. Memory
// is bounded by the limit plus a 64 KiB buffer, whatever the peer sends.
// It is not safe for concurrent use.
type LineReader struct {
	br    *bufio.Reader
	limit int
	line  []byte
	err   error // sticky error returned once the pending line is delivered

	// An unfinished line, kept across a read interrupted by a timeout:
	// cont says that line, seen and tooLong hold it.
	cont    bool
	seen    int64
	tooLong bool
}

// NewLineReader reads lines of at most limit bytes (newline excluded) from r;
// limit <= 0 means MaxLineBytes.
func NewLineReader(r io.Reader, limit int) *LineReader {
	if limit <= 0 {
		limit = MaxLineBytes
	}
	return &LineReader{br: bufio.NewReaderSize(r, min(readChunk, limit+1)), limit: limit}
}

// ReadLine returns the next line without its newline, as a fresh slice the
// caller owns. Bytes are not interpreted: empty lines, invalid UTF-8 and
// invalid JSON come back as they are.
//
// A line longer than the limit yields a *LineTooLongError instead, after
// which reading continues with the next line. A final line without a newline
// is returned before the stream's error. A timeout of the underlying reader
// (an error with Timeout() true, as a read deadline gives) is returned as
// it is and is not final: the part of the line read so far is kept, and
// the next ReadLine goes on with it. Any other error (io.EOF, a closed or
// broken connection) is final and returned by every later call.
func (lr *LineReader) ReadLine() ([]byte, error) {
	if lr.err != nil {
		return nil, lr.err
	}
	if !lr.cont {
		lr.line, lr.seen, lr.tooLong = lr.line[:0], 0, false
	}
	lr.cont = false
	for {
		chunk, err := lr.br.ReadSlice('\n')
		complete := err == nil
		if complete {
			chunk = chunk[:len(chunk)-1]
		}
		lr.seen += int64(len(chunk))
		if !lr.tooLong {
			if lr.seen > int64(lr.limit) {
				lr.tooLong = true
				lr.line = lr.line[:0]
			} else {
				lr.line = append(lr.line, chunk...)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if !complete && isTimeout(err) {
			lr.cont = true
			return nil, err
		}
		seen, tooLong := lr.seen, lr.tooLong
		if !complete {
			lr.err = err
			if !tooLong && seen == 0 {
				return nil, err
			}
		}
		if cap(lr.line) > readChunk {
			// A long line's buffer goes with it (to the caller, or to the
			// collector): a channel never keeps a near-limit buffer for
			// its life, and the line is not copied once more.
			out := lr.line
			lr.line = nil
			if tooLong {
				return nil, &LineTooLongError{Length: seen, Limit: lr.limit}
			}
			return out, nil
		}
		if tooLong {
			return nil, &LineTooLongError{Length: seen, Limit: lr.limit}
		}
		return append([]byte{}, lr.line...), nil
	}
}

// isTimeout tells a read that timed out (a deadline), after which the
// stream goes on, from the end of the stream.
func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// Pending returns the bytes read from the stream and not yet returned as
// a line: the unfinished line kept by an interrupted ReadLine, then what
// is buffered. A reader over these bytes followed by the rest of the
// stream reads the same lines this one would have. (The unfinished part
// of a line over the limit is left out: that line is lost, as its start.)
// Call it only while no ReadLine runs.
func (lr *LineReader) Pending() []byte {
	var out []byte
	if lr.cont && !lr.tooLong {
		out = append(out, lr.line...)
	}
	buffered, _ := lr.br.Peek(lr.br.Buffered())
	return append(out, buffered...)
}

// Encode returns v as one JSON line: json.Marshal(v) + "\n". JSON never
// contains a raw newline, so the result is exactly one frame.
func Encode(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
