//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/dutchmaster/dutchmaster/sockets/control"
)

// upgradeTimeout bounds ctl upgrade without --timeout: an upgrade takes
// a preflight run of the new binary and an exec, seconds at most.
const upgradeTimeout = 30 * time.Second

// upgradePoll is how often ctl upgrade asks the status while the master
// executes the new binary: the unavailability it reports is measured to
// about this.
const upgradePoll = 20 * time.Millisecond

// upgradeResult is what ctl upgrade --json prints: the master's reply to
// the upgrade and its last status, with the time the master took to
// answer again.
type upgradeResult struct {
	control.Reply
	Unavailable float64 `json:"unavailable_seconds,omitempty"`
}

// runUpgrade is `ctl upgrade [--binary PATH]`: it reads the master's
// upgrade counts, asks for the upgrade, and, once accepted (the master
// then executes the binary, which ends the connection), asks for the
// status until the count of upgrades grew (exit 0) or that of failed
// ones did (exit 1, with the master's reason), within timeout.
func runUpgrade(path, binary string, stdout, stderr io.Writer, asJSON bool, timeout time.Duration) int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	deadline := time.Now().Add(timeout)
	out := upgradeResult{}
	interrupted := func(sig os.Signal) int {
		fmt.Fprintf(stderr, "dutchmaster ctl: %s: stopped waiting; the master goes on with the upgrade if it accepted it (ctl status shows it)\n", sig)
		return 128 + int(sig.(syscall.Signal))
	}
	fail := func(format string, a ...any) int {
		msg := fmt.Sprintf(format, a...)
		if asJSON {
			out.OK, out.Error = false, msg
			printJSON(stdout, out)
		}
		fmt.Fprintf(stderr, "dutchmaster ctl: %s\n", msg)
		return exitError
	}

	c, err := control.Dial(path, timeout)
	if err != nil {
		fmt.Fprintf(stderr, "dutchmaster ctl: %v\n", err)
		return exitError
	}
	c.SetDeadline(deadline)
	var rep control.Reply
	var sig os.Signal
	ask := func(req control.Request) {
		rep, sig, err = doInterruptible(c, func() (control.Reply, error) { return c.Do(req) })
	}
	ask(control.Request{Command: control.CommandStatus})
	if err == nil && sig == nil && rep.OK && rep.Status.Upgrades == nil {
		c.Close()
		return fail("this master does not report upgrades: it cannot upgrade in place")
	}
	var before *control.Status
	if err == nil && sig == nil && rep.OK {
		before = rep.Status
		ask(control.Request{Command: control.CommandUpgrade, Binary: binary})
	}
	c.Close()
	accepted := time.Now()
	switch {
	case sig != nil:
		return interrupted(sig)
	case errors.Is(err, os.ErrDeadlineExceeded):
		fmt.Fprintf(stderr, "dutchmaster ctl: timed out after %s: the master goes on with the upgrade if it accepted it (ctl status shows it)\n", timeout)
		return exitTimedOut
	case err != nil:
		return fail("%v", err)
	case !rep.OK:
		return fail("%s", rep.Error)
	}
	out.Reply = rep
	pid, from := before.PID, before.Version
	if up := rep.Upgrade; up != nil {
		pid, from = up.PID, up.Version
	}

	// The master executes the binary: ask for the status until the new
	// image answers with the upgrade counted, or the old one with its
	// failure. A request the old image took before the exec ends
	// without a reply; one made meanwhile waits in the socket's queue.
	tick := time.NewTicker(upgradePoll)
	defer tick.Stop()
	last := errors.New("no status answered yet")
	type answer struct {
		s   *control.Status
		err error
	}
	for {
		// Asked aside, so that Ctrl-C is heard while a request waits.
		got := make(chan answer, 1)
		go func() {
			s, err := upgradeStatus(path, deadline)
			got <- answer{s, err}
		}()
		var a answer
		select {
		case a = <-got:
		case sig := <-sigs:
			return interrupted(sig)
		}
		s, err := a.s, a.err
		switch {
		case err != nil && masterGone(pid):
			return fail("the master (pid %d) exited during the upgrade (%v): its log says why", pid, err)
		case err != nil:
			last = err
		case s.PID != pid:
			return fail("the master's pid changed (%d, now %d): it did not upgrade in place, it was restarted", pid, s.PID)
		case s.Upgrades == nil:
			return fail("the master (pid %d) no longer reports upgrades", s.PID)
		case s.Upgrades.Count > before.Upgrades.Count:
			took := time.Since(accepted)
			out.OK, out.Status, out.Unavailable = true, s, took.Seconds()
			if asJSON {
				printJSON(stdout, out)
			} else {
				fmt.Fprintf(stdout, "upgraded: pid %d kept, %s → %s, master unavailable %s\n", pid, versionText(from), versionText(s.Version), human(took))
			}
			return exitOK
		case s.Upgrades.Failed > before.Upgrades.Failed:
			out.Status = s
			return fail("upgrade failed: %s (the master goes on as it was)", s.Upgrades.LastError)
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(stderr, "dutchmaster ctl: timed out after %s: the master did not report the upgrade done or failed (last: %v); ctl status shows it\n", timeout, last)
			return exitTimedOut
		}
		select {
		case <-tick.C:
		case sig := <-sigs:
			return interrupted(sig)
		}
	}
}

// masterGone reports whether the process pid no longer exists (a master
// whose new image failed to take over exits).
func masterGone(pid int) bool {
	return pid > 0 && errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// upgradeStatus asks for the status on a connection of its own, the
// master's error reply as an error.
func upgradeStatus(path string, deadline time.Time) (*control.Status, error) {
	c, err := control.Dial(path, time.Until(deadline))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(deadline)
	rep, err := c.Do(control.Request{Command: control.CommandStatus})
	switch {
	case err != nil:
		return nil, err
	case !rep.OK:
		return nil, errors.New(rep.Error)
	case rep.Status == nil:
		return nil, errors.New("a status reply without a status")
	}
	return rep.Status, nil
}

func versionText(v string) string {
	if v == "" {
		return "(version unknown)"
	}
	return v
}

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
