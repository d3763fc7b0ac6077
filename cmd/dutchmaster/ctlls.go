//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/dutchmaster/dutchmaster/sockets/control"
)

// lsEntry is one control socket `ctl ls` found.
type lsEntry struct {
	Socket string `json:"socket"`
	// State: running (its master answered), stale (nobody accepts on the
	// socket: its master died) or error (Error says why).
	State      string  `json:"state"`
	Error      string  `json:"error,omitempty"`
	Name       string  `json:"name"`
	PID        int     `json:"pid,omitempty"`
	Listening  int     `json:"listening"`
	Target     int     `json:"target"`
	Generation int     `json:"generation"`
	Serving    []int   `json:"serving_generations,omitempty"`
	Uptime     float64 `json:"uptime_seconds"`
}

// lsReply is the JSON of `ctl ls`.
type lsReply struct {
	Dir     string    `json:"dir"`
	Masters []lsEntry `json:"masters"`
}

// runLs is `dutchmaster ctl ls`: every control socket in the default
// directory (and $DUTCHMASTER_CONTROL), each asked for its status. A
// stale socket or a master that does not answer is a row, not a failure:
// the exit status is 1 only when the directory cannot be read.
func runLs(stdout, stderr io.Writer, asJSON bool, timeout time.Duration) int {
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	dir := control.DefaultDir()
	if err := control.CheckDir(dir); err != nil {
		fmt.Fprintf(stderr, "dutchmaster ctl: %v\n", err)
		return exitError
	}
	paths, err := filepath.Glob(filepath.Join(dir, "*.sock"))
	if err != nil {
		fmt.Fprintf(stderr, "dutchmaster ctl: %v\n", err)
		return exitError
	}
	if p := os.Getenv(control.EnvControl); p != "" && !slices.Contains(paths, p) {
		if _, err := os.Stat(p); err == nil {
			paths = append(paths, p)
		}
	}
	rep := lsReply{Dir: dir, Masters: []lsEntry{}}
	for _, p := range paths {
		rep.Masters = append(rep.Masters, lsOne(p, timeout))
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
		return exitOK
	}
	if len(rep.Masters) == 0 {
		fmt.Fprintf(stdout, "no control sockets in %s\n", dir)
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPID\tWORKERS\tGEN\tUPTIME\tSTATE\tSOCKET")
	for _, e := range rep.Masters {
		name, pid, workers, gen, up := e.Name, "-", "-", "-", "-"
		if name == "" {
			name = "-"
		}
		state := e.State
		if e.State == "running" {
			pid, workers = strconv.Itoa(e.PID), fmt.Sprintf("%d/%d", e.Listening, e.Target)
			gen = strconv.Itoa(e.Generation)
			if len(e.Serving) != 1 || e.Serving[0] != e.Generation {
				var gs []string
				for _, g := range e.Serving {
					gs = append(gs, strconv.Itoa(g))
				}
				gen += " (serving " + strings.Join(gs, ",") + ")"
			}
			up = human(time.Duration(e.Uptime * float64(time.Second)))
		} else if e.Error != "" {
			state += ": " + e.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, pid, workers, gen, up, state, e.Socket)
	}
	tw.Flush()
	return exitOK
}

// lsOne asks the master on the socket at path for its status.
func lsOne(path string, timeout time.Duration) lsEntry {
	e := lsEntry{Socket: path, Name: nameOfSocket(path)}
	c, err := control.Dial(path, timeout)
	if err != nil {
		e.State = "error"
		if errors.Is(err, syscall.ECONNREFUSED) {
			e.State = "stale"
		}
		e.Error = err.Error()
		return e
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	rep, err := c.Do(control.Request{Command: control.CommandStatus})
	switch {
	case err != nil:
		e.State, e.Error = "error", err.Error()
	case !rep.OK || rep.Status == nil:
		e.State, e.Error = "error", rep.Error
	default:
		s := rep.Status
		e.State, e.Name, e.PID = "running", s.Name, s.PID
		e.Listening, e.Target, e.Generation, e.Serving, e.Uptime = s.Listening, s.Target, s.Generation, s.Serving, s.Uptime
	}
	return e
}

// nameOfSocket is the master's name a default socket's file carries:
// dutchmaster-NAME.sock; "" for dutchmaster.sock and other files.
func nameOfSocket(path string) string {
	base := filepath.Base(path)
	if n, ok := strings.CutPrefix(base, "dutchmaster-"); ok {
		return strings.TrimSuffix(n, ".sock")
	}
	return ""
}
