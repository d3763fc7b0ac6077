//go:build linux

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/dutchmaster/dutchmaster/actors/observers/journal"
)

const replayUsage = `usage: dutchmaster replay FILE

Feeds every input of a journal written with --record through the
supervision core, with the journal's configuration, on a scripted clock,
and checks that the same decisions come out.

Exit status: 0 the same decisions, 1 a difference (the first one is
printed), 2 a file that is not a journal or cannot be read.`

const replayHint = "run 'dutchmaster replay --help' for usage"

// runReplay is `dutchmaster replay`.
func runReplay(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dutchmaster replay", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			// Asked for, the help is the output: stdout, exit 0.
			fmt.Fprintln(stdout, replayUsage)
			return exitOK
		}
		fmt.Fprintf(stderr, "dutchmaster replay: %v\n%s\n", err, replayHint)
		return exitUsage
	}
	if fs.NArg() != 1 {
		fmt.Fprintf(stderr, "dutchmaster replay: want one journal FILE\n%s\n", replayHint)
		return exitUsage
	}
	path := fs.Arg(0)
	sum, err := journal.ReplayFile(path, journal.ReplayOptions{})
	var mismatch *journal.Mismatch
	switch {
	case errors.As(err, &mismatch):
		fmt.Fprintf(stdout, "%s: different decisions after %d steps that matched\n%v\n", path, sum.Steps, err)
		return exitError
	case err != nil:
		fmt.Fprintf(stderr, "dutchmaster replay: %s: %v\n", path, err)
		return exitUsage
	}
	h := sum.Header
	fmt.Fprintf(stdout, "%s: the same decisions: %d steps, %d decisions (recorded %s by pid %d, policy %s)\n",
		path, sum.Steps, sum.Decisions, h.Started.Format("2006-01-02 15:04:05 MST"), h.PID, h.Config.Policy.Name)
	if sum.Truncated {
		fmt.Fprintln(stdout, "the last line was cut short (the master died while writing it) and was ignored")
	}
	return exitOK
}
