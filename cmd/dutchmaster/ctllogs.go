//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/dutchmaster/dutchmaster/sockets/control"
)

// runLogs is `ctl logs [wN] [-n N] [-f]`: the lines the master kept of
// the workers' output, then, with --follow, each new one until Ctrl-C or
// SIGTERM (exit 0) or the master's exit (exit 0, said on stderr).
func runLogs(path string, req control.Request, stdout, stderr io.Writer, asJSON bool, timeout time.Duration) int {
	dial := timeout
	if dial == 0 {
		dial = 10 * time.Second
	}
	c, err := control.Dial(path, dial)
	if err != nil {
		fmt.Fprintf(stderr, "dutchmaster ctl: %v\n", err)
		return exitError
	}
	defer c.Close()
	if timeout > 0 {
		c.SetDeadline(time.Now().Add(timeout))
	}
	out := bufio.NewWriter(stdout)
	var werr error
	print := func(l control.LogLine) {
		if werr != nil {
			return
		}
		if asJSON {
			b, _ := json.Marshal(l)
			_, werr = out.Write(append(b, '\n'))
		} else {
			_, werr = fmt.Fprintf(out, "%s | %s\n", logPrefix(l), l.Line)
		}
		if werr == nil && req.Follow {
			werr = out.Flush() // a follower wants each line as it comes
		}
	}
	rep, sig, err := doInterruptible(c, func() (control.Reply, error) { return c.DoLines(req, nil, print) })
	if sig != nil {
		out.Flush()
		return exitOK
	}
	if err := out.Flush(); werr == nil {
		werr = err
	}
	switch {
	case werr != nil:
		fmt.Fprintf(stderr, "dutchmaster ctl: writing the lines: %v\n", werr)
		return exitError
	case errors.Is(err, os.ErrDeadlineExceeded):
		fmt.Fprintf(stderr, "dutchmaster ctl: timed out after %s\n", timeout)
		return exitTimedOut
	case err != nil:
		fmt.Fprintf(stderr, "dutchmaster ctl: %v\n", err)
		return exitError
	case !rep.OK:
		fmt.Fprintf(stderr, "dutchmaster ctl: %s\n", rep.Error)
		return exitError
	case req.Follow:
		fmt.Fprintln(stderr, "dutchmaster ctl: the master exited; no more lines")
	}
	return exitOK
}

// logPrefix names a line's worker, its pid and generation, and its
// stream: "w3 4242 g2 err".
func logPrefix(l control.LogLine) string {
	return fmt.Sprintf("w%d %d g%d %s", l.Worker, l.PID, l.Generation, l.Stream)
}
