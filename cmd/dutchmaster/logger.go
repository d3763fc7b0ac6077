//go:build linux

package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// newLogger builds the one root logger: JSON lines, or the console format
// on a terminal (log-format auto).
func newLogger(format, level string, w io.Writer) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Logger{}, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	switch format {
	case "auto":
		if terminal(w) {
			w = consoleWriter(w, false)
		}
	case "console":
		w = consoleWriter(w, true)
	case "json":
	default:
		return zerolog.Logger{}, fmt.Errorf("--log-format %q: want auto, json or console", format)
	}
	// Microseconds: rollouts and boots are timed from these lines.
	zerolog.TimeFieldFormat = "2006-01-02T15:04:05.000000Z07:00"
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

// consoleWriter is the format for a person at a terminal: the time to the
// millisecond, the worker first (whose line it is), then the error, then
// the rest by name; durations to two or three digits. The JSON lines keep
// every digit, for the programs that time rollouts from them.
func consoleWriter(w io.Writer, noColor bool) zerolog.ConsoleWriter {
	return zerolog.ConsoleWriter{
		Out: w, NoColor: noColor, TimeFormat: "15:04:05.000",
		FieldsOrder:      []string{"worker", zerolog.ErrorFieldName},
		FormatFieldValue: consoleValue,
	}
}

// consoleValue shortens a duration, which the master logs as Go writes
// it (331.423474ms), to what a reader takes in (331ms); any other value
// is written as it is.
func consoleValue(v any) string {
	var s string
	switch v := v.(type) {
	case []byte: // a value that is not a string, in JSON
		s = string(v)
	default:
		s = fmt.Sprint(v)
	}
	if d, ok := durationValue(s); ok {
		return roundDuration(d).String()
	}
	return s
}

// durationValue parses s if it is a duration as time.Duration.String
// writes it: a sign or digits first, a unit last.
func durationValue(s string) (time.Duration, bool) {
	digits := strings.TrimPrefix(s, "-")
	if digits == "" || digits[0] < '0' || digits[0] > '9' || !strings.HasSuffix(s, "s") && !strings.HasSuffix(s, "m") && !strings.HasSuffix(s, "h") {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	return d, err == nil
}

// roundDuration keeps two or three significant digits: 331ms, 1.2s,
// 12.3s, 1m30s, 1.5ms, 12µs.
func roundDuration(d time.Duration) time.Duration {
	abs := d
	if abs < 0 {
		abs = -abs
	}
	switch {
	case abs >= time.Minute:
		return d.Round(time.Second)
	case abs >= time.Second:
		return d.Round(100 * time.Millisecond)
	case abs >= 10*time.Millisecond:
		return d.Round(time.Millisecond)
	case abs >= time.Millisecond:
		return d.Round(100 * time.Microsecond)
	case abs >= time.Microsecond:
		return d.Round(time.Microsecond)
	}
	return d
}

// terminal reports whether the log goes to a terminal.
func terminal(w io.Writer) bool {
	if lw, ok := w.(*logWriter); ok {
		w = lw.out
	}
	f, ok := w.(*os.File)
	return ok && isatty.IsTerminal(f.Fd())
}
