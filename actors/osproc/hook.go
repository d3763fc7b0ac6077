package osproc

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
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
	// The output is read as it comes and dropped but for its end, which
	// the error quotes: a command may write without bound, and the master
	// must not hold it.
	var out tail
	cmd.Stdout, cmd.Stderr = &out, &out
	err := startOnMainThread(cmd) // forked as a worker is: see group.go
	if err == nil {
		err = cmd.Wait()
	}
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
		if last := out.lastLine(); last != "" {
			return fmt.Errorf("%q: %w: %s", command, err, last)
		}
		return fmt.Errorf("%q: %w", command, err)
	}
	return nil
}

// tailSize is how much of the end of a before-fork command's output is
// kept, and maxLastLine how much of its last line an error quotes.
const (
	tailSize    = 4096
	maxLastLine = 512
)

// tail is an io.Writer that keeps the last tailSize bytes written to it.
// Stdout and stderr share it, each written from a goroutine of exec's.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) > tailSize {
		p = p[len(p)-tailSize:]
	}
	if len(t.buf)+len(p) > 2*tailSize {
		// Slide rather than grow: the buffer never exceeds 2*tailSize.
		keep := max(tailSize-len(p), 0)
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-keep:]...)
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// lastLine is the last non-empty line of the output kept, at most
// maxLastLine bytes of its end (a cut line starts with "...").
func (t *tail) lastLine() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buf
	if len(b) > tailSize {
		b = b[len(b)-tailSize:]
	}
	s := strings.TrimSpace(string(b))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = strings.TrimSpace(s[i+1:])
	}
	if len(s) > maxLastLine {
		s = s[len(s)-maxLastLine:]
		for len(s) > 0 && !utf8.RuneStart(s[0]) {
			s = s[1:]
		}
		s = "..." + s
	}
	return s
}
