//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/dutchmaster/dutchmaster/sockets/control"
)

const ctlUsage = `usage: dutchmaster ctl [flags] status|restart [wN]|reload [wN]|stop|scale N|ls

Talks to a running master over its control socket: --control PATH, else
$DUTCHMASTER_CONTROL, else the default socket of the master --name NAME
(dutchmaster[-NAME].sock in $XDG_RUNTIME_DIR/dutchmaster, /run/dutchmaster
for root, else /tmp/dutchmaster-UID).

  status     the master (uptime, listeners, command, last rollout) and its
             workers: id, pid, processes, memory, CPU, slot, generation,
             state, uptime, restarts, the slot's last exit
  restart    a rolling restart; shows it as it goes (on a terminal one line
             rewritten in place, else one line per step: fork, listening,
             drain, exit), then a summary: outcome, duration, old -> new
             pids; exits 1 unless it completed (an aborted rollout leaves
             the old workers serving)
  restart wN replaces only worker N (w3 or 3, as ctl status lists it)
  reload     the same as restart
  stop       a graceful stop; waits until every worker is gone
  scale N    run N workers from now on (until a restart re-reads --workers)
  ls         the masters whose control sockets are in the default directory
             (and $DUTCHMASTER_CONTROL): name, pid, workers, generation,
             uptime; a stale socket (its master died) is listed as such

Exit status: 0 done (a restart: complete), 1 refused or failed (a
restart aborted or cancelled; no master), 2 bad usage, 3 --timeout
reached: the master goes on with what it was asked (a restart runs to its
end; ctl status shows it), 130 or 143 interrupted (Ctrl-C, SIGTERM): the
master goes on likewise.

flags (before or after the command):`

// ctlUsageHint follows every ctl usage error, alone on its line.
const ctlUsageHint = "run 'dutchmaster ctl --help' for usage"

// runCtl is `dutchmaster ctl`.
func runCtl(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dutchmaster ctl", flag.ContinueOnError)
	// The flag package's own messages are replaced by one line and a
	// hint; the usage is printed only when asked for (--help).
	fs.SetOutput(io.Discard)
	path := fs.String("control", "", "the master's control socket `PATH` (default: $"+control.EnvControl+", else the master's default for --name)")
	name := fs.String("name", "", "the master's --name, to find its default control socket")
	asJSON := fs.Bool("json", false, "print the master's reply as JSON")
	timeout := fs.Duration("timeout", 0, "give up after this long (default: wait as long as it takes, e.g. a whole rollout)")
	fs.Usage = func() {} // the flag package calls it on every error
	// Flags may come before and after the command.
	var words []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprintln(stderr, ctlUsage)
				fs.SetOutput(stderr)
				fs.PrintDefaults()
				return exitOK
			}
			fmt.Fprintf(stderr, "dutchmaster ctl: %v\n%s\n", err, ctlUsageHint)
			return exitUsage
		}
		if rest = fs.Args(); len(rest) == 0 {
			break
		}
		words, rest = append(words, rest[0]), rest[1:]
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "dutchmaster ctl: "+format+"\n", a...)
		fmt.Fprintln(stderr, ctlUsageHint)
		return exitUsage
	}
	if len(words) == 0 {
		return usage("no command")
	}
	if words[0] == "ls" {
		if len(words) != 1 {
			return usage("ls takes no argument")
		}
		return runLs(stdout, stderr, *asJSON, *timeout)
	}
	if words[0] == "reload" {
		words[0] = control.CommandRestart
	}
	req := control.Request{Command: words[0]}
	switch {
	case req.Command == control.CommandRestart && len(words) == 2:
		n, err := strconv.Atoi(strings.TrimPrefix(words[1], "w"))
		if err != nil || n < 1 {
			return usage("restart %q: want a worker as ctl status lists it, w3 or 3", words[1])
		}
		req.Worker = n
	case req.Command == control.CommandScale && len(words) == 2:
		n, err := strconv.Atoi(words[1])
		if err != nil || n < 1 || n > 4096 {
			return usage("scale %q: want a number of workers from 1 to 4096", words[1])
		}
		req.Workers = n
	case req.Command == control.CommandScale:
		return usage("scale takes one number: scale N")
	case len(words) != 1:
		return usage("%s takes no argument", req.Command)
	case req.Command != control.CommandStatus && req.Command != control.CommandRestart && req.Command != control.CommandStop:
		return usage("unknown command %q", req.Command)
	}
	if *path == "" {
		*path = control.DefaultPath(*name)
		// A default path is only trusted in a directory no other user
		// could have planted.
		if control.InDefaultDir(*path) {
			if err := control.CheckDir(filepath.Dir(*path)); err != nil {
				fmt.Fprintf(stderr, "dutchmaster ctl: %v\n", err)
				return exitError
			}
		}
	}

	dial := *timeout
	if dial == 0 {
		dial = 10 * time.Second
	}
	c, err := control.Dial(*path, dial)
	if err != nil {
		fmt.Fprintf(stderr, "dutchmaster ctl: %v\n", err)
		return exitError
	}
	defer c.Close()
	if *timeout > 0 {
		c.SetDeadline(time.Now().Add(*timeout))
	}
	var prog *progressView
	if req.Command == control.CommandRestart && !*asJSON {
		req.Progress = true
		prog = newProgressView(stdout, time.Now())
		defer prog.close()
	}
	rep, sig, err := doInterruptible(c, req, prog)
	if prog != nil {
		prog.close()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		what := "the master goes on with the " + req.Command
		if req.Command == control.CommandRestart {
			what = "the rollout goes on"
		}
		fmt.Fprintf(stderr, "dutchmaster ctl: timed out after %s: %s (ctl status shows it)\n", *timeout, what)
		return exitTimedOut
	}
	if sig != nil {
		fmt.Fprintf(stderr, "dutchmaster ctl: %s: stopped waiting; the master goes on with the %s (ctl status shows it)\n", sig, req.Command)
		return 128 + int(sig.(syscall.Signal))
	}
	if err != nil {
		fmt.Fprintf(stderr, "dutchmaster ctl: %v\n", err)
		return exitError
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	} else if prog != nil && rep.Rollout != nil {
		prog.summary(rep.Rollout)
	} else if rep.OK || rep.Rollout != nil {
		printReply(stdout, req, rep)
	}
	if !rep.OK {
		fmt.Fprintf(stderr, "dutchmaster ctl: %s\n", rep.Error)
		return exitError
	}
	return exitOK
}

func printReply(w io.Writer, req control.Request, rep control.Reply) {
	switch req.Command {
	case control.CommandStatus:
		printStatus(w, rep.Status)
	case control.CommandRestart:
		r := rep.Rollout
		line := fmt.Sprintf("restart %s: generation %d", r.Outcome, r.Generation)
		if r.Reason != "" {
			line += ": " + r.Reason
		}
		fmt.Fprintln(w, line)
	case control.CommandStop:
		fmt.Fprintln(w, "stopped: every worker is gone")
	case control.CommandScale:
		fmt.Fprintf(w, "scaled: %d workers\n", rep.Target)
	}
}

// printStatus writes the human table of `ctl status`.
func printStatus(w io.Writer, s *control.Status) {
	title := "dutchmaster"
	if s.Name != "" {
		title += " " + s.Name
	}
	pid := fmt.Sprintf("pid %d", s.PID)
	if !s.Started.IsZero() {
		pid += ", up " + human(time.Duration(s.Uptime*float64(time.Second)))
	}
	state := fmt.Sprintf("%d/%d workers listening", s.Listening, s.Target)
	switch {
	case s.Stopping:
		state += ", stopping"
	case !s.Ready:
		state += ", starting"
	}
	fmt.Fprintf(w, "%s (%s): %s, %s, policy %s\n", title, pid, state, generations(s), s.Policy)
	if r := s.Rollout; r != nil {
		what := fmt.Sprintf("rolling restart to generation %d", r.Generation)
		if r.Generation == 0 {
			what = "replacing workers that asked for it"
		}
		fmt.Fprintf(w, "%s (%s), running for %s\n", what, r.Source, human(s.Now.Sub(r.Started)))
	}
	if r := s.LastRollout; r != nil {
		line := fmt.Sprintf("last rollout: %s, generation %d (%s), %s ago", r.Outcome, r.Generation, r.Source, human(s.Now.Sub(r.Ended)))
		if r.Reason != "" {
			line += ": " + r.Reason
		}
		fmt.Fprintln(w, line)
	}
	if len(s.Listeners) > 0 {
		var ls []string
		for _, l := range s.Listeners {
			ls = append(ls, l.Name+"="+l.Address)
		}
		fmt.Fprintf(w, "listeners: %s\n", strings.Join(ls, " "))
	}
	if len(s.Command) > 0 {
		fmt.Fprintf(w, "command: %s\n", strings.Join(s.Command, " "))
	}
	lastExit := map[int]string{}
	for _, sl := range s.Slots {
		if sl.LastExit != nil {
			lastExit[sl.Index] = sl.LastExit.Reason
		}
		if sl.Flapping || !sl.BackoffUntil.IsZero() {
			line := fmt.Sprintf("slot %d: %d failures in a row", sl.Index, sl.Failures)
			if sl.Flapping {
				line += ", flapping"
			}
			if !sl.BackoffUntil.IsZero() {
				line += fmt.Sprintf(", next fork in %s", human(sl.BackoffUntil.Sub(s.Now)))
			}
			if sl.LastExit != nil {
				line += ", last exit: " + sl.LastExit.Reason
			}
			fmt.Fprintln(w, line)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tPID\tPROCS\tRSS\tCPU\tSLOT\tGEN\tSTATE\tUPTIME\tRESTARTS\tLAST EXIT")
	for _, wk := range s.Workers {
		pid, procs, rss, cpu := "-", "-", "-", "-"
		if wk.PID != 0 {
			pid = strconv.Itoa(wk.PID)
		}
		if wk.Processes != 0 {
			procs = strconv.Itoa(wk.Processes)
			rss = bytesHuman(wk.RSS)
			cpu = fmt.Sprintf("%.1f%%", wk.CPUPercent)
		}
		state := wk.State
		var marks []string
		if wk.Due {
			marks = append(marks, "due")
		}
		if wk.RestartRequested {
			marks = append(marks, "asked")
		}
		if len(marks) > 0 {
			state += " (" + strings.Join(marks, ", ") + ")"
		}
		exit := lastExit[wk.Slot]
		if exit == "" {
			exit = "-"
		}
		fmt.Fprintf(tw, "w%d\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%d\t%s\n", wk.ID, pid, procs, rss, cpu, wk.Slot, wk.Generation, state,
			human(time.Duration(wk.Uptime*float64(time.Second))), wk.Restarts, exit)
	}
	tw.Flush()
}

// generations says which generation serves: the one asked for, or, when
// the workers serve others (a rollout under way, or one that aborted),
// those and the one asked for.
func generations(s *control.Status) string {
	if len(s.Serving) == 1 && s.Serving[0] == s.Generation {
		return fmt.Sprintf("generation %d", s.Generation)
	}
	if len(s.Serving) == 0 {
		return fmt.Sprintf("generation %d requested, none serving", s.Generation)
	}
	var gs []string
	for _, g := range s.Serving {
		gs = append(gs, strconv.Itoa(g))
	}
	word := "generation"
	if len(gs) > 1 {
		word = "generations"
	}
	return fmt.Sprintf("serving %s %s (generation %d requested)", word, strings.Join(gs, ", "), s.Generation)
}

// bytesHuman writes a size in binary units: 512K, 12.3M, 1.5G.
func bytesHuman(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fG", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fM", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%dK", n>>10)
	}
}

// human rounds a duration for a table: to the millisecond under a
// second, to the second above.
func human(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// doInterruptible sends req and waits for its reply, or for SIGINT or
// SIGTERM, whichever comes first. A request already sent is the
// master's to finish: stopping to wait does not take it back.
func doInterruptible(c *control.Client, req control.Request, prog *progressView) (control.Reply, os.Signal, error) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	type result struct {
		rep control.Reply
		err error
	}
	done := make(chan result, 1)
	go func() {
		var fn func(control.Progress)
		if prog != nil {
			fn = prog.event
		}
		rep, err := c.DoStream(req, fn)
		done <- result{rep, err}
	}()
	select {
	case r := <-done:
		return r.rep, nil, r.err
	case sig := <-sigs:
		c.Close() // ends the read the goroutine is blocked in
		<-done
		return control.Reply{}, sig, nil
	}
}
