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
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/dutchmaster/dutchmaster/sockets/control"
)

const ctlUsage = `usage: dutchmaster ctl [flags] status|top|restart [wN]|reload [wN]|stop|scale N|logs [wN]|ls|upgrade

Talks to a running master over its control socket: --control PATH, else
$DUTCHMASTER_CONTROL, else the default socket of the master --name NAME
(dutchmaster[-NAME].sock in $XDG_RUNTIME_DIR/dutchmaster, /run/dutchmaster
for root, else /tmp/dutchmaster-UID).

  status     the master (uptime, listeners, command, last rollout, its
             upgrades) and its workers: id, pid, processes, memory, CPU,
             heartbeat age (--watchdog), slot, generation, state, uptime,
             restarts, the slot's last exit
  status --watch, top
             the same, refreshed every --interval: on a terminal the table
             is redrawn in place until Ctrl-C (exit 0); elsewhere one
             block per interval, each after a line "--- TIME"; exits 1
             once the master is gone
  restart    a rolling restart; shows it as it goes (on a terminal one line
             rewritten in place, else one line per step: fork, listening,
             drain, exit), then a summary: outcome, duration, old -> new
             pids; exits 1 unless it completed (an aborted rollout leaves
             the old workers serving)
  restart wN replaces only worker N (w3 or 3, as ctl status lists it)
  reload     the same as restart
  stop       a graceful stop; waits until every worker is gone
  scale N    run N workers from now on (until a restart re-reads --workers)
  logs [wN]  the last lines the workers wrote (or worker N's, exited ones
             included while the master keeps them), each as
             "w3 4242 g2 out | LINE"; with --follow, then each new line
             until Ctrl-C (exit 0) or the master stops
  ls         the masters whose control sockets are in the default directory
             (and $DUTCHMASTER_CONTROL): name, pid, workers, generation,
             uptime; a stale socket (its master died) is listed as such
  upgrade    replaces the master in place by a new binary (--binary PATH,
             else the master's own executable as it is now on disk): the
             same pid, the workers and sockets kept, a rollout under way
             goes on; waits until the new master answers (at most
             --timeout, default 30s), then prints "upgraded: pid N kept,
             OLD → NEW, master unavailable D"; exits 1 if the master
             refuses it (why) or the exec fails (it goes on as it was)

Exit status: 0 done (a restart: complete), 1 refused or failed (a
restart aborted or cancelled; no master), 2 bad usage, 3 --timeout
reached: the master goes on with what it was asked (a restart runs to its
end; ctl status shows it), 130 or 143 interrupted (Ctrl-C, SIGTERM): the
master goes on likewise.`

// ctlFlagGroups lay ctl's flags out in its help, as helpGroups do the
// master's options. Every flag of runCtl's set is in one group
// (TestCtlHelp checks it).
var ctlFlagGroups = []struct {
	title string
	flags []ctlFlagHelp
}{
	{"Finding the master (flags go before or after the command)", []ctlFlagHelp{
		{"--control PATH", "control"}, {"--name NAME", "name"},
	}},
	{"Output", []ctlFlagHelp{
		{"--json", "json"}, {"--watch", "watch"}, {"--interval DURATION", "interval"},
		{"-n, --lines N", "lines"}, {"-f, --follow", "follow"},
	}},
	{"Waiting", []ctlFlagHelp{{"--timeout DURATION", "timeout"}}},
	{"Upgrade", []ctlFlagHelp{{"--binary PATH", "binary"}}},
}

type ctlFlagHelp struct{ left, name string }

// ctlHelp writes `dutchmaster ctl --help`.
func ctlHelp(w io.Writer, fs *flag.FlagSet) {
	var b strings.Builder
	b.WriteString(ctlUsage + "\n")
	for _, g := range ctlFlagGroups {
		fmt.Fprintf(&b, "\n%s:\n", g.title)
		for _, e := range g.flags {
			f := fs.Lookup(e.name)
			text := strings.ReplaceAll(f.Usage, "`", "")
			if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && f.DefValue != "0s" {
				text += " (default " + f.DefValue + ")"
			}
			writeEntry(&b, "  "+e.left, text)
		}
	}
	io.WriteString(w, b.String())
}

// ctlUsageHint follows every ctl usage error, alone on its line.
const ctlUsageHint = "run 'dutchmaster ctl --help' for usage"

// ctlOptions are ctl's flags.
type ctlOptions struct {
	path, name, binary    *string
	asJSON, watch, follow *bool
	timeout, interval     *time.Duration
	lines                 *int
}

// ctlFlags defines ctl's flags.
func ctlFlags() (*flag.FlagSet, ctlOptions) {
	var o ctlOptions
	fs := flag.NewFlagSet("dutchmaster ctl", flag.ContinueOnError)
	// The flag package's own messages are replaced by one line and a
	// hint; the usage is printed only when asked for (--help).
	fs.SetOutput(io.Discard)
	o.path = fs.String("control", "", "the master's control socket `PATH` (default: $"+control.EnvControl+", else the master's default for --name)")
	o.name = fs.String("name", "", "the master's --name, to find its default control socket")
	o.asJSON = fs.Bool("json", false, "print the master's reply as JSON (status --watch: one line per interval; logs: one line per output line)")
	o.timeout = fs.Duration("timeout", 0, "give up after this long (default: wait as long as it takes, e.g. a whole rollout)")
	o.watch = fs.Bool("watch", false, "status: refresh it every --interval until Ctrl-C (as ctl top does)")
	o.interval = fs.Duration("interval", time.Second, "how often status --watch asks the master")
	o.lines = fs.Int("lines", 20, "logs: how many of the kept lines to print first, per worker asked for (0: none, only what --follow brings)")
	fs.IntVar(o.lines, "n", 20, "the same as --lines")
	o.binary = fs.String("binary", "", "upgrade: the new binary's `PATH` (default: the master's own executable)")
	o.follow = fs.Bool("follow", false, "logs: then print each new line until Ctrl-C or the master stops")
	fs.BoolVar(o.follow, "f", false, "the same as --follow")
	fs.Usage = func() {} // the flag package calls it on every error
	return fs, o
}

// runCtl is `dutchmaster ctl`.
func runCtl(args []string, stdout, stderr io.Writer) int {
	fs, f := ctlFlags()
	path, name, asJSON, timeout, binary := f.path, f.name, f.asJSON, f.timeout, f.binary
	watch, interval, lines, follow := f.watch, f.interval, f.lines, f.follow
	// Flags may come before and after the command.
	var words []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				ctlHelp(stdout, fs)
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
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, f := range []struct {
		flag string
		for_ []string
	}{
		{"watch", []string{"status"}}, {"interval", []string{"status", "top"}},
		{"lines", []string{"logs"}}, {"n", []string{"logs"}}, {"follow", []string{"logs"}}, {"f", []string{"logs"}},
		{"binary", []string{"upgrade"}},
	} {
		if set[f.flag] && !slices.Contains(f.for_, words[0]) {
			return usage("--%s is for %s, not %s", f.flag, strings.Join(f.for_, " and "), words[0])
		}
	}
	if words[0] == "top" {
		words[0], *watch = control.CommandStatus, true
	}
	if *watch && *interval < 100*time.Millisecond {
		return usage("--interval %s: want 100ms or more", *interval)
	}
	if *lines < 0 || *lines > control.MaxLogLines {
		return usage("--lines %d: want 0 to %d", *lines, control.MaxLogLines)
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
	workerArg := func(what string) (int, bool) {
		n, err := strconv.Atoi(strings.TrimPrefix(words[1], "w"))
		if err != nil || n < 1 {
			usage("%s %q: want a worker as ctl status lists it, w3 or 3", what, words[1])
			return 0, false
		}
		return n, true
	}
	switch {
	case (req.Command == control.CommandRestart || req.Command == control.CommandLogs) && len(words) == 2:
		n, ok := workerArg(req.Command)
		if !ok {
			return exitUsage
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
	case req.Command == control.CommandUpgrade && len(words) != 1:
		return usage("upgrade takes no argument: give the new binary as --binary PATH")
	case len(words) != 1:
		return usage("%s takes no argument", req.Command)
	case !slices.Contains([]string{control.CommandStatus, control.CommandRestart, control.CommandStop, control.CommandLogs, control.CommandUpgrade}, req.Command):
		return usage("unknown command %q", req.Command)
	}
	if set["binary"] {
		// The master resolves nothing against ctl's directory: the path
		// goes to it absolute.
		abs, err := filepath.Abs(*binary)
		if *binary == "" || err != nil {
			return usage("--binary %q: want the new binary's path", *binary)
		}
		*binary = abs
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

	if *watch {
		return runWatch(*path, stdout, stderr, *asJSON, *interval)
	}
	if req.Command == control.CommandUpgrade {
		wait := *timeout
		if wait == 0 {
			wait = upgradeTimeout
		}
		return runUpgrade(*path, *binary, stdout, stderr, *asJSON, wait)
	}
	if req.Command == control.CommandLogs {
		req.Lines, req.Follow = *lines, *follow
		return runLogs(*path, req, stdout, stderr, *asJSON, *timeout)
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
	var progress func(control.Progress)
	if prog != nil {
		progress = prog.event
	}
	rep, sig, err := doInterruptible(c, func() (control.Reply, error) { return c.DoStream(req, progress) })
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
		line := fmt.Sprintf("last rollout: %s, %s (%s), %s ago", r.Outcome, generationText(r.Generation), r.Source, human(s.Now.Sub(r.Ended)))
		if r.Reason != "" {
			line += ": " + r.Reason
		}
		fmt.Fprintln(w, line)
	}
	if u := s.Upgrades; u != nil && (u.Count > 0 || u.Failed > 0) {
		fmt.Fprintln(w, upgradesText(s, u))
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
	fmt.Fprintln(tw, "WORKER\tPID\tPROCS\tRSS\tCPU\tHEARTBEAT\tSLOT\tGEN\tSTATE\tUPTIME\tRESTARTS\tLAST EXIT")
	for _, wk := range s.Workers {
		pid, procs, rss, cpu, beat := "-", "-", "-", "-", "-"
		if wk.HeartbeatAge != nil {
			beat = human(time.Duration(*wk.HeartbeatAge * float64(time.Second)))
		}
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
		if wk.Hung {
			marks = append(marks, "hung")
		}
		if wk.Recycling != "" {
			marks = append(marks, "recycling: "+wk.Recycling)
		}
		if len(marks) > 0 {
			state += " (" + strings.Join(marks, ", ") + ")"
		}
		exit := lastExit[wk.Slot]
		if exit == "" {
			exit = "-"
		}
		fmt.Fprintf(tw, "w%d\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%d\t%s\n", wk.ID, pid, procs, rss, cpu, beat, wk.Slot, wk.Generation, state,
			human(time.Duration(wk.Uptime*float64(time.Second))), wk.Restarts, exit)
	}
	tw.Flush()
}

// upgradesText is status's line on the master's in-place upgrades.
func upgradesText(s *control.Status, u *control.UpgradeStatus) string {
	line := fmt.Sprintf("upgrades: %d", u.Count)
	if u.Count > 0 {
		line += fmt.Sprintf(", the last %s ago", human(s.Now.Sub(u.Last)))
	}
	if s.Version != "" {
		line += ", version " + s.Version
	}
	if u.Failed > 0 {
		line += fmt.Sprintf("; %d failed, the last: %s", u.Failed, u.LastError)
	}
	return line
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

// doInterruptible runs call (a request on c) and waits for its reply, or
// for SIGINT or SIGTERM, whichever comes first. A request already sent is
// the master's to finish: stopping to wait does not take it back.
func doInterruptible(c *control.Client, call func() (control.Reply, error)) (control.Reply, os.Signal, error) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	type result struct {
		rep control.Reply
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := call()
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
