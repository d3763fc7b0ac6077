package wire

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

// read drains lr and renders each result as "line:<text>" or "too-long:<n>",
// ending with the final error.
func read(t *testing.T, lr *LineReader) []string {
	t.Helper()
	var got []string
	for range 1000 {
		line, err := lr.ReadLine()
		var tl *LineTooLongError
		switch {
		case err == nil:
			got = append(got, "line:"+string(line))
		case errors.As(err, &tl):
			if !errors.Is(err, ErrLineTooLong) {
				t.Fatalf("%v does not match ErrLineTooLong", err)
			}
			got = append(got, "too-long:"+strconv.FormatInt(tl.Length, 10))
		default:
			return append(got, "err:"+err.Error())
		}
	}
	t.Fatal("reader never ended")
	return nil
}

func TestLineReader(t *testing.T) {
	long := strings.Repeat("x", 40)
	for _, tc := range []struct {
		name  string
		in    string
		limit int
		want  []string
	}{
		{"empty stream", "", 8, []string{"err:EOF"}},
		{"two lines", "a\nbb\n", 8, []string{"line:a", "line:bb", "err:EOF"}},
		{"empty line kept", "\n\nz\n", 8, []string{"line:", "line:", "line:z", "err:EOF"}},
		{"last line without newline", "a\nbc", 8, []string{"line:a", "line:bc", "err:EOF"}},
		{"exactly the limit", "12345678\n", 8, []string{"line:12345678", "err:EOF"}},
		{"one over the limit, then recovers", "123456789\nok\n", 8, []string{"too-long:9", "line:ok", "err:EOF"}},
		{"much longer than the buffer", long + "\n" + long[:5] + "\n", 8, []string{"too-long:40", "line:xxxxx", "err:EOF"}},
		{"too long at EOF", long, 8, []string{"too-long:40", "err:EOF"}},
		{"garbage bytes pass through", "\xff\xfe{not json\n", 16, []string{"line:\xff\xfe{not json", "err:EOF"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// OneByteReader makes every chunk boundary fall everywhere.
			for _, r := range []io.Reader{strings.NewReader(tc.in), iotest.OneByteReader(strings.NewReader(tc.in))} {
				got := read(t, NewLineReader(r, tc.limit))
				if strings.Join(got, "|") != strings.Join(tc.want, "|") {
					t.Errorf("got  %q\nwant %q", got, tc.want)
				}
			}
		})
	}
}

func TestLineTooLongReportsLength(t *testing.T) {
	lr := NewLineReader(strings.NewReader(strings.Repeat("y", 100_000)+"\nnext\n"), 1000)
	_, err := lr.ReadLine()
	var tl *LineTooLongError
	if !errors.As(err, &tl) || tl.Length != 100_000 || tl.Limit != 1000 {
		t.Fatalf("got %v, want a LineTooLongError of 100000 bytes over 1000", err)
	}
	if line, err := lr.ReadLine(); err != nil || string(line) != "next" {
		t.Fatalf("after the long line: %q, %v", line, err)
	}
}

func TestLineReaderReturnsOwnedSlices(t *testing.T) {
	lr := NewLineReader(strings.NewReader("first\nsecond\n"), 0)
	a, _ := lr.ReadLine()
	b, _ := lr.ReadLine()
	if string(a) != "first" || string(b) != "second" {
		t.Fatalf("got %q, %q", a, b)
	}
}

func TestLineReaderStickyError(t *testing.T) {
	boom := errors.New("boom")
	lr := NewLineReader(io.MultiReader(strings.NewReader("partial"), iotest.ErrReader(boom)), 0)
	if line, err := lr.ReadLine(); err != nil || string(line) != "partial" {
		t.Fatalf("got %q, %v", line, err)
	}
	for range 2 {
		if _, err := lr.ReadLine(); err != boom {
			t.Fatalf("got %v, want boom", err)
		}
	}
}

func TestEncode(t *testing.T) {
	b, err := Encode(map[string]string{"event": "ready", "note": "a\nb"})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(b, []byte("\n")) != 1 || b[len(b)-1] != '\n' {
		t.Fatalf("Encode gave %q, want exactly one trailing newline", b)
	}
	if _, err := Encode(func() {}); err == nil {
		t.Fatal("Encode of a func: no error")
	}
}
