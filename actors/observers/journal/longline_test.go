package journal_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/actors/observers/journal"
)

// xs is n bytes of 'x' with no newline, counting what was read of it.
type xs struct{ n, read int64 }

func (x *xs) Read(p []byte) (int, error) {
	if x.read >= x.n {
		return 0, io.EOF
	}
	n := copy(p[:min(int64(len(p)), x.n-x.read)], manyX)
	x.read += int64(n)
	return n, nil
}

var manyX = bytes.Repeat([]byte("x"), 64<<10)

// TestReplayLongLine: a line longer than MaxLine is refused as such,
// naming its line, once MaxLine is read, not at the end of the line.
func TestReplayLongLine(t *testing.T) {
	var head bytes.Buffer
	rec, err := journal.NewRecorder(&head, journal.Header{PID: 1}, core.Config{}.WithDefaults(), journal.Epoch)
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		prefix string
		line   int
	}{
		{"header", "", 1},
		{"step", head.String(), 2},
	} {
		long := &xs{n: 2 * journal.MaxLine}
		r := io.MultiReader(strings.NewReader(c.prefix), long)
		_, err := journal.Replay(r, journal.ReplayOptions{})
		var fe *journal.FormatError
		if !errors.As(err, &fe) || fe.Line != c.line || !strings.Contains(err.Error(), "longer than") {
			t.Errorf("%s: a line of %d MiB: %v, want a *FormatError naming line %d as too long", c.name, long.n>>20, err, c.line)
		}
		if long.read > journal.MaxLine+1<<20 {
			t.Errorf("%s: read %d MiB of a line too long, want no more than MaxLine and a buffer", c.name, long.read>>20)
		}
	}
}
