package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// timeoutErr is what a read deadline gives: an error with Timeout() true.
type timeoutErr struct{}

func (timeoutErr) Error() string { return "i/o timeout" }
func (timeoutErr) Timeout() bool { return true }

// steps is a reader that returns its chunks in turn, a nil chunk being a
// timeout, then EOF.
type steps struct{ chunks [][]byte }

func (s *steps) Read(p []byte) (int, error) {
	if len(s.chunks) == 0 {
		return 0, io.EOF
	}
	c := s.chunks[0]
	s.chunks = s.chunks[1:]
	if c == nil {
		return 0, timeoutErr{}
	}
	return copy(p, c), nil
}

// TestLineReaderTimeoutKeepsTheLine: a timeout in the middle of a line is
// not final; the line goes on with the next read, whole.
func TestLineReaderTimeoutKeepsTheLine(t *testing.T) {
	lr := NewLineReader(&steps{chunks: [][]byte{[]byte("one\ntw"), nil, []byte("o\nthree")}}, 0)
	var got []string
	timeouts := 0
	for {
		line, err := lr.ReadLine()
		if isTimeout(err) {
			timeouts++
			continue
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			break
		}
		got = append(got, string(line))
	}
	if timeouts != 1 || len(got) != 3 || got[0] != "one" || got[1] != "two" || got[2] != "three" {
		t.Fatalf("lines %q, %d timeouts; want one, two, three and 1 timeout", got, timeouts)
	}
}

// TestLineReaderPending: the bytes read and not returned (an unfinished
// line, then what is buffered), put before the rest of the stream, give a
// new reader the same lines.
func TestLineReaderPending(t *testing.T) {
	lr := NewLineReader(&steps{chunks: [][]byte{[]byte("a\nb\nc"), nil}}, 0)
	if line, err := lr.ReadLine(); err != nil || string(line) != "a" {
		t.Fatalf("first line %q, %v", line, err)
	}
	if p := lr.Pending(); string(p) != "b\nc" {
		t.Fatalf("pending after a: %q, want %q", p, "b\nc")
	}
	if line, err := lr.ReadLine(); err != nil || string(line) != "b" {
		t.Fatalf("second line %q, %v", line, err)
	}
	if _, err := lr.ReadLine(); !isTimeout(err) {
		t.Fatalf("got %v, want the timeout", err)
	}
	p := lr.Pending()
	if string(p) != "c" {
		t.Fatalf("pending after the timeout: %q, want %q", p, "c")
	}
	next := NewLineReader(io.MultiReader(bytes.NewReader(p), bytes.NewReader([]byte("d\ne\n"))), 0)
	for _, want := range []string{"cd", "e"} {
		if line, err := next.ReadLine(); err != nil || string(line) != want {
			t.Fatalf("next reader: %q, %v; want %q", line, err, want)
		}
	}
}
