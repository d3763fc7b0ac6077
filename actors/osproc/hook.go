package osproc

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// BeforeForkHook makes a Config.BeforeFork of a Go hook and a shell
// command (sh -c, in the worker's directory, with the worker's
// environment but for the protocol variables), either of which may be
// unset; nil when both are. The hook runs first; an error of either fails
// the fork.
//
// The command gets at most timeout (the ready timeout, which bounds the
// whole start of a worker): a command that hangs would otherwise hold its
// worker in forking for ever, where no kill reaches it, and with it the
// rollout and any stop. It runs as a worker does, in a process group of
// its own that dies with the master, killed whole at the timeout and once
// it is done, so that what it started in the background goes too.
func BeforeForkHook(hook func() error, command string, timeout time.Duration) func(dir string, env []string) error {
	if hook == nil && command == "" {
		return nil
	}
	return func(dir string, env []string) error {
		if hook != nil {
			if err := hook(); err != nil {
				return err
			}
		}
		if command == "" {
			return nil
		}
		return runBeforeFork(command, dir, env, timeout)
	}
}

func runBeforeFork(command, dir string, env []string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Dir, cmd.Env = dir, env
	killGroup := ownProcessGroup(cmd, nil)
	cmd.Cancel = killGroup
	// A background child that keeps the output pipe open must not hold
	// up the end of the command.
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	// Whatever the command left in its group goes with it. Its leader is
	// reaped by now, but the group lives on, and keeps its id, while any
	// member does.
	if cmd.Process != nil {
		_ = killGroup()
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%q: not done after %s", command, timeout)
	}
	if err != nil {
		if last := lastLine(out); last != "" {
			return fmt.Errorf("%q: %w: %s", command, err, last)
		}
		return fmt.Errorf("%q: %w", command, err)
	}
	return nil
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}
