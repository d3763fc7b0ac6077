//go:build linux

package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// ptyOutput collects what a program writes to its terminal.
type ptyOutput struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (p *ptyOutput) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.Write(b)
}

func (p *ptyOutput) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.String()
}

// waitTrue polls cond until it holds, failing after patience.
func waitTrue(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitUntil(t, what, func() error {
		if cond() {
			return nil
		}
		return errors.New("not yet")
	})
}

// TestCtlTopTerminal: on a terminal (a real pseudo-terminal), ctl top
// redraws the status in place (cursor home, no scrolling), shows a
// change (a scale up) within a refresh, and ends with Ctrl-C, exit 0,
// the cursor shown again; ctl status --watch then ends with exit 1 and
// a clear message once the master is gone.
func TestCtlTopTerminal(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	m := startMaster(t, "worker", nil, "--control", sock, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
	m.address()
	m.waitFor(0, "cluster ready", nil)

	watch := func(args ...string) (*exec.Cmd, *os.File, *ptyOutput, chan error) {
		cmd := exec.Command(testBinary(t), append([]string{"ctl", "--control", sock}, args...)...)
		cmd.Env = append(os.Environ(), roleEnv+"=master", "GORACE=atexit_sleep_ms=0")
		tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 120})
		if err != nil {
			t.Fatal(err)
		}
		out := &ptyOutput{}
		go io.Copy(out, tty) // ends with EIO once ctl has exited
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() { cmd.Process.Kill(); tty.Close() })
		return cmd, tty, out, done
	}
	_, tty, out, done := watch("top", "--interval", "200ms")
	frames := func() int { return strings.Count(out.String(), termHome) }
	waitTrue(t, "ctl top drew no frames: "+out.String(), func() bool { return frames() >= 3 })
	if r := ctl(t, sock, "scale", "3"); r.code != 0 {
		t.Fatalf("ctl scale 3: %s", r)
	}
	waitTrue(t, "ctl top never showed the third worker listening", func() bool {
		s := out.String()
		last := s[strings.LastIndex(s, termHome):]
		return strings.Contains(last, "3/3 workers listening") && strings.Count(last, "listening  ") == 3
	})
	tty.Write([]byte{3}) // Ctrl-C, through the terminal's line discipline
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ctl top after Ctrl-C: %v, want exit 0", err)
		}
	case <-time.After(patience):
		t.Fatal("ctl top did not end on Ctrl-C")
	}
	s := out.String()
	if !strings.HasPrefix(s, termHideCursor+termHome+termClear) || !strings.Contains(s, termShowCursor) ||
		!strings.Contains(s, "WORKER") || !strings.Contains(s, "Ctrl-C to quit") {
		t.Fatalf("ctl top on a terminal: %q", s)
	}
	// Each frame is drawn over the last: cursor home, each line cleared,
	// the rest of the screen cleared; never more rows than the frame.
	for _, frame := range strings.Split(s, termHome)[2:] {
		if !strings.Contains(frame, termClearBelow) || strings.Count(frame, "\n") > 40 {
			t.Fatalf("a frame not drawn in place: %q", frame)
		}
	}

	_, _, out, done = watch("status", "--watch", "--interval", "200ms")
	waitTrue(t, "ctl status --watch drew no frame", func() bool { return strings.Contains(out.String(), "WORKER") })
	m.stop()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitError {
			t.Fatalf("ctl status --watch once the master is gone: %v, want exit 1", err)
		}
	case <-time.After(patience):
		t.Fatal("ctl status --watch did not end with the master")
	}
	if s := out.String(); !strings.Contains(s, "dutchmaster ctl: the master is gone: ") {
		t.Fatalf("ctl status --watch once the master is gone: %q", s)
	}
}

// TestCtlWatchPipe: not on a terminal, ctl status --watch writes one
// block per interval, each after a "--- TIME" line, no terminal
// controls; with --json one status a line.
func TestCtlWatchPipe(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	m := startMaster(t, "worker", nil, "--control", sock, "--workers", "1", "--listen", "http=tcp://127.0.0.1:0")
	m.address()
	m.waitFor(0, "cluster ready", nil)
	for _, asJSON := range []bool{false, true} {
		args := []string{"ctl", "--control", sock, "status", "--watch", "--interval", "100ms"}
		if asJSON {
			args = append(args, "--json")
		}
		cmd := exec.Command(testBinary(t), args...)
		cmd.Env = append(os.Environ(), roleEnv+"=master")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		blocks := 0
		for blocks < 3 && sc.Scan() {
			l := sc.Text()
			if strings.Contains(l, "\x1b") {
				t.Fatalf("a terminal control in a pipe: %q", l)
			}
			if (!asJSON && strings.HasPrefix(l, "--- ")) || (asJSON && strings.HasPrefix(l, `{"name":`)) {
				blocks++
			}
		}
		cmd.Process.Signal(os.Interrupt)
		io.Copy(io.Discard, stdout)
		if err := cmd.Wait(); blocks < 3 || err != nil {
			t.Fatalf("ctl status --watch (json %v) into a pipe: %d blocks, %v (want 3, exit 0 on SIGINT)", asJSON, blocks, err)
		}
	}
	m.stop()
}

// TestCtlHelp: ctl --help lists every flag of ctl, with two dashes, under
// a heading, as the master's help does.
func TestCtlHelp(t *testing.T) {
	r := runDutchmaster(t, 0, "ctl", "--help")
	if r.code != 0 {
		t.Fatalf("ctl --help: %s", r)
	}
	for _, f := range []string{"  --control PATH", "  --name NAME", "  --json", "  --watch", "  --interval DURATION", "  -n, --lines N", "  -f, --follow", "  --timeout DURATION"} {
		if !strings.Contains(r.stdout, "\n"+f+" ") {
			t.Errorf("ctl --help does not list %q", f)
		}
	}
	for _, h := range []string{"\nFinding the master", "\nOutput:\n", "\nWaiting:\n"} {
		if !strings.Contains(r.stdout, h) {
			t.Errorf("ctl --help has no heading %q", h)
		}
	}
	if regexp.MustCompile(`(?m)^  -[a-z]{2,}`).MatchString(r.stdout) {
		t.Errorf("ctl --help has a flag with one dash:\n%s", r.stdout)
	}
	// Every flag of ctl is in a group of the help.
	seen := map[string]bool{}
	for _, g := range ctlFlagGroups {
		for _, e := range g.flags {
			seen[e.name] = true
		}
	}
	fs, _ := ctlFlags()
	fs.VisitAll(func(f *flag.Flag) {
		if !seen[f.Name] && f.Name != "n" && f.Name != "f" { // -n and -f are listed with --lines and --follow
			t.Errorf("--%s is in no group of ctl --help", f.Name)
		}
	})
}
