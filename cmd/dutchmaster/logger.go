package main

import (
	"fmt"
	"io"
	"os"
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
			w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
		}
	case "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly, NoColor: true}
	case "json":
	default:
		return zerolog.Logger{}, fmt.Errorf("--log-format %q: want auto, json or console", format)
	}
	// Microseconds: rollouts and boots are timed from these lines.
	zerolog.TimeFieldFormat = "2006-01-02T15:04:05.000000Z07:00"
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

// terminal reports whether the log goes to a terminal.
func terminal(w io.Writer) bool {
	if lw, ok := w.(*logWriter); ok {
		w = lw.out
	}
	f, ok := w.(*os.File)
	return ok && isatty.IsTerminal(f.Fd())
}
