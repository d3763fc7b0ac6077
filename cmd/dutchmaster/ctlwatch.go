//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/sockets/control"
)

// runWatch is `ctl status --watch` and `ctl top`: the status every
// interval until Ctrl-C or SIGTERM (exit 0) or until the master is gone
// (exit 1). On a terminal the table is redrawn in place; elsewhere each
// status is a block of its own after a line "--- TIME" (with --json, one
// JSON object a line), for a file or a pipe.
func runWatch(path string, stdout, stderr io.Writer, asJSON bool, interval time.Duration) int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	screen := newWatchScreen(stdout, asJSON)
	defer screen.end()
	var c *control.Client
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		rep, err := watchStatus(&c, path, interval)
		if err == nil && !rep.OK {
			err = fmt.Errorf("%s", rep.Error)
		}
		if err != nil {
			screen.end()
			fmt.Fprintf(stderr, "dutchmaster ctl: the master is gone: %v\n", err)
			return exitError
		}
		screen.draw(rep.Status, interval)
		select {
		case <-tick.C:
		case <-sigs:
			return exitOK
		}
	}
}

// watchStatus asks for the status on the connection *c, dialled (again)
// when there is none or it failed: a master closes a connection idle
// for longer than its idle timeout, which a long interval may exceed.
func watchStatus(c **control.Client, path string, interval time.Duration) (control.Reply, error) {
	for attempt := 0; ; attempt++ {
		if *c == nil {
			nc, err := control.Dial(path, 5*time.Second)
			if err != nil {
				return control.Reply{}, err
			}
			*c = nc
		}
		(*c).SetDeadline(time.Now().Add(interval + 10*time.Second))
		rep, err := (*c).Do(control.Request{Command: control.CommandStatus})
		if err == nil || attempt > 0 {
			return rep, err
		}
		(*c).Close()
		*c = nil
	}
}

// watchScreen draws each status of a watch.
type watchScreen struct {
	w             io.Writer
	asJSON        bool
	tty           bool
	width, height int
	drawn         bool
}

func newWatchScreen(w io.Writer, asJSON bool) *watchScreen {
	s := &watchScreen{w: w, asJSON: asJSON}
	if f, ok := w.(*os.File); ok && !asJSON {
		if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			s.tty = true
		}
	}
	return s
}

// The terminal's controls: cursor home, clear to the end of the line,
// clear to the end of the screen, clear the screen, hide and show the
// cursor.
const (
	termHome       = "\x1b[H"
	termClearLine  = "\x1b[K"
	termClearBelow = "\x1b[J"
	termClear      = "\x1b[2J"
	termHideCursor = "\x1b[?25l"
	termShowCursor = "\x1b[?25h"
)

func (s *watchScreen) draw(st *control.Status, interval time.Duration) {
	switch {
	case s.asJSON:
		b, _ := json.Marshal(st)
		s.w.Write(append(b, '\n'))
		return
	case !s.tty:
		var b bytes.Buffer
		fmt.Fprintf(&b, "--- %s\n", st.Now.Local().Format(time.RFC3339))
		printStatus(&b, st)
		s.w.Write(b.Bytes())
		return
	}
	if f, ok := s.w.(*os.File); ok {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil {
			s.width, s.height = int(ws.Col), int(ws.Row)
		}
	}
	var table bytes.Buffer
	printStatus(&table, st)
	lines := append([]string{fmt.Sprintf("every %s, %s; Ctrl-C to quit", interval, st.Now.Local().Format(time.TimeOnly))},
		strings.Split(strings.TrimRight(table.String(), "\n"), "\n")...)
	// Lines wider than the terminal would wrap and rows beyond its height
	// scroll it: either would leave the next frame misplaced.
	if s.height > 1 && len(lines) > s.height-1 {
		cut := len(lines) - (s.height - 2)
		lines = append(lines[:s.height-2], fmt.Sprintf("(%d more lines: a taller terminal shows them)", cut))
	}
	var b strings.Builder
	if !s.drawn {
		b.WriteString(termHideCursor + termHome + termClear)
	} else {
		b.WriteString(termHome)
	}
	for _, l := range lines {
		if r := []rune(l); s.width > 1 && len(r) >= s.width {
			l = string(r[:s.width-1])
		}
		b.WriteString(l + termClearLine + "\n")
	}
	b.WriteString(termClearBelow)
	io.WriteString(s.w, b.String())
	s.drawn = true
}

// end gives the terminal its cursor back; the last frame stays.
func (s *watchScreen) end() {
	if s.tty && s.drawn {
		io.WriteString(s.w, termShowCursor)
		s.drawn = false
	}
}
