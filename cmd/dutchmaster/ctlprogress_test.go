//go:build linux

package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
)

// TestCtlRestartTimeout: a --timeout shorter than the rollout exits with
// its own status (3) and says the rollout goes on; the rollout then
// completes.
func TestCtlRestartTimeout(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	m := startMaster(t, "worker", []string{"DM_TEST_BOOT=1500ms"}, "--control", sock, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
	m.address()
	_, next := m.waitFor(0, "cluster ready", nil)
	old, _ := listeningPIDs(m, 0, 2)
	r := ctl(t, sock, "--timeout", "300ms", "restart")
	if r.code != exitTimedOut || !strings.Contains(r.stderr, "timed out after 300ms: the rollout goes on") || strings.Contains(r.stderr, "i/o timeout") {
		t.Fatalf("ctl restart --timeout 300ms: %s", r)
	}
	m.waitFor(next, "restart complete", nil)
	waitGone(t, values(old)...)
	if s := status(t, sock); s.Generation != 2 || s.Listening != 2 || s.LastRollout == nil || s.LastRollout.Outcome != "complete" {
		t.Fatalf("after the timed out ctl: %+v", s)
	}
	m.stop()
}

// TestCtlRestartWorker: ctl restart wN replaces that worker only (the
// others keep their pids), and N alone names it too; an unknown worker
// is refused with a clear error.
func TestCtlRestartWorker(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	m := startMaster(t, "worker", []string{"DM_TEST_BOOT=50ms"}, "--control", sock, "--workers", "3", "--listen", "http=tcp://127.0.0.1:0")
	m.address()
	_, next := m.waitFor(0, "cluster ready", nil)
	old, _ := listeningPIDs(m, 0, 3)
	for _, name := range []string{"w2", "3"} {
		before := map[int]int{}
		for _, w := range status(t, sock).Workers {
			before[w.ID] = w.PID
		}
		id := 2
		if name == "3" {
			id = 3
		}
		r := ctl(t, sock, "restart", name)
		last := strings.TrimSpace(r.stdout)
		last = last[strings.LastIndex(last, "\n")+1:]
		// One worker replaced by hand starts no generation, and the
		// summary says so (rather than "generation 0").
		if r.code != 0 || !strings.HasPrefix(last, "restart complete after ") || !strings.Contains(last, fmt.Sprintf(": no new generation, pids %d -> ", before[id])) ||
			!strings.Contains(r.stdout, "replaced 1 of 1") {
			t.Fatalf("ctl restart %s: %s", name, r)
		}
		_, next = m.waitFor(next, "restart complete", nil)
		waitGone(t, before[id])
		after := status(t, sock)
		if len(after.Workers) != 3 || after.Generation != 1 {
			t.Fatalf("after ctl restart %s: %+v", name, after)
		}
		if text := ctl(t, sock, "status").stdout; !strings.Contains(text, "\nlast rollout: complete, no new generation (") {
			t.Errorf("ctl status after ctl restart %s does not name the rollout as one without a generation:\n%s", name, text)
		}
		for _, w := range after.Workers {
			if w.PID == before[id] {
				t.Errorf("after ctl restart %s: w%d (pid %d) still runs", name, id, w.PID)
			}
			if w.ID != id && before[w.ID] == 0 && w.ID <= 3 {
				t.Errorf("after ctl restart %s: a worker other than w%d changed: %+v", name, id, w)
			}
		}
		kept := 0
		for wid, pid := range before {
			if wid == id {
				continue
			}
			for _, w := range after.Workers {
				if w.ID == wid && w.PID == pid {
					kept++
				}
			}
		}
		if kept != 2 {
			t.Errorf("after ctl restart %s: %d of the 2 other workers kept their pid: before %v, after %+v", name, kept, before, after.Workers)
		}
	}
	_ = old
	r := ctl(t, sock, "restart", "w999")
	if r.code != 1 || !strings.Contains(r.stderr, "restart w999 refused: no worker w999") {
		t.Fatalf("ctl restart w999: %s", r)
	}
	r = ctl(t, sock, "restart", "wx")
	if r.code != exitUsage || !strings.Contains(r.stderr, `restart "wx": want a worker`) {
		t.Fatalf("ctl restart wx: %s", r)
	}
	m.stop()
}

// TestCtlRestartTerminal: on a terminal (a real pseudo-terminal), ctl
// restart rewrites one line in place (carriage returns, no new lines)
// and ends with the summary on a line of its own.
func TestCtlRestartTerminal(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	m := startMaster(t, "worker", []string{"DM_TEST_BOOT=300ms"}, "--control", sock, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
	m.address()
	m.waitFor(0, "cluster ready", nil)
	cmd := exec.Command(testBinary(t), "ctl", "--control", sock, "restart")
	cmd.Env = append(os.Environ(), roleEnv+"=master", "GORACE=atexit_sleep_ms=0")
	tty, err := pty.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	read := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(tty) // ends with EIO once ctl has exited
		read <- b
	}()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("ctl restart on a terminal did not end within 60s")
	}
	if err != nil {
		t.Fatalf("ctl restart on a terminal: %v", err)
	}
	var out string
	select {
	case b := <-read:
		out = string(b)
	case <-time.After(10 * time.Second):
		t.Fatal("the terminal's output did not end")
	}
	const rewrite = "\r\x1b[K"
	last := out[strings.LastIndex(out, rewrite)+len(rewrite):]
	if n := strings.Count(out, rewrite); n < 3 || strings.Count(out, "\n") != 1 || !strings.Contains(out, "replaced 1 of 2") ||
		!strings.HasPrefix(last, "restart complete after ") || !strings.HasSuffix(last, "\n") {
		t.Fatalf("ctl restart on a terminal: want the line rewritten in place and the summary last, got %q", out)
	}
	m.stop()
}
