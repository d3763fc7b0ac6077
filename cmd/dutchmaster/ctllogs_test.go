//go:build linux

package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
)

// say makes a worker write line to its stdout (stream "out") or stderr
// ("err"), and returns that worker's pid.
func say(t *testing.T, addr, stream, line string) int {
	t.Helper()
	body, err := get(addr, "/say?stream="+stream+"&line="+line)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(body)
	return pid
}

// workerOf is the id ctl status gives the worker of pid.
func workerOf(t *testing.T, sock string, pid int) int {
	t.Helper()
	for _, w := range status(t, sock).Workers {
		if w.PID == pid {
			return w.ID
		}
	}
	t.Fatalf("no worker with pid %d", pid)
	return 0
}

// TestCtlLogs: the master keeps the workers' output while it passes it
// through unchanged (no --log-worker-output); ctl logs prints it with the
// worker, pid, generation and stream, -n bounds it, a worker's lines
// outlive its crash, and -f follows new lines until the master exits.
func TestCtlLogs(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	stdout := filepath.Join(t.TempDir(), "stdout")
	out, err := os.Create(stdout)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	self := testBinary(t)
	cmd := exec.Command(self, "--log-format", "json", "--env", roleEnv+"=worker", "--control", sock, "--workers", "2",
		"--listen", "http=tcp://127.0.0.1:0", "--", self)
	cmd.Env = append(os.Environ(), roleEnv+"=master")
	cmd.Stdout = out
	m := launch(t, cmd)
	addr := m.address()
	m.waitFor(0, "cluster ready", nil)

	pid := say(t, addr, "out", "first-line")
	say(t, addr, "err", "an-error-line")
	id := workerOf(t, sock, pid)
	prefix := fmt.Sprintf("w%d %d g1 out | first-line", id, pid)
	r := ctl(t, sock, "logs")
	if r.code != 0 || !strings.Contains(r.stdout, prefix+"\n") || !strings.Contains(r.stdout, " g1 err | an-error-line\n") {
		t.Fatalf("ctl logs: want %q and the stderr line\n%s", prefix, r)
	}
	for i := range 3 {
		say(t, addr, "out", fmt.Sprintf("more-%d", i))
	}
	r = ctl(t, sock, "logs", fmt.Sprintf("w%d", id), "-n", "1")
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); r.code != 0 || len(lines) != 1 || !strings.HasPrefix(lines[0], fmt.Sprintf("w%d %d g1 ", id, pid)) {
		t.Fatalf("ctl logs w%d -n 1: want one line of w%d\n%s", id, id, r)
	}
	// The output passed through to the master's stdout, unchanged.
	deadline := time.Now().Add(patience)
	for {
		b, _ := os.ReadFile(stdout)
		if strings.Contains(string(b), "\nmore-2\n") || strings.HasPrefix(string(b), "more-2\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the master's stdout: %q, want the workers' lines unchanged", b)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Follow: the lines written from now on, as they come.
	f := exec.Command(self, "ctl", "--control", sock, "logs", "-f", "-n", "0")
	f.Env = append(os.Environ(), roleEnv+"=master")
	fout, err := f.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var ferr strings.Builder
	f.Stderr = &ferr
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	defer f.Process.Kill()
	followed := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(fout)
		for sc.Scan() {
			followed <- sc.Text()
		}
		close(followed)
	}()
	// The follower may not be connected yet: say until it hears.
	heard := false
	for i := 0; !heard && i < 100; i++ {
		say(t, addr, "err", fmt.Sprintf("followed-%d", i))
		select {
		case l := <-followed:
			heard = strings.Contains(l, " err | followed-")
		case <-time.After(300 * time.Millisecond):
		}
	}
	if !heard {
		t.Fatal("ctl logs -f printed no new line")
	}

	// A worker that crashes: its lines stay readable.
	get(addr, "/crash") // may reach either worker; the one that ran it exits 1
	e, _ := m.waitFor(0, "worker exited", nil)
	crashID := e.num("worker")
	r = ctl(t, sock, "logs", fmt.Sprintf("w%d", crashID))
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("w%d %d g1 ", crashID, e.num("pid"))) {
		t.Fatalf("ctl logs w%d after it crashed: want its lines\n%s", crashID, r)
	}
	if r := ctl(t, sock, "logs", "w999"); r.code != 1 || !strings.Contains(r.stderr, "logs w999: no such worker") {
		t.Fatalf("ctl logs w999: %s", r)
	}

	m.stop()
	done := make(chan error, 1)
	go func() { io.Copy(io.Discard, fout); done <- f.Wait() }()
	for range followed {
	}
	select {
	case err := <-done:
		if err != nil || !strings.Contains(ferr.String(), "the master exited") {
			t.Fatalf("ctl logs -f when the master stopped: %v, stderr %q", err, ferr.String())
		}
	case <-time.After(patience):
		t.Fatal("ctl logs -f did not end with the master")
	}
}

// TestWorkerOutputOnATerminal: where the master's stdout is a terminal,
// each line a worker writes reaches it after the worker's name.
func TestWorkerOutputOnATerminal(t *testing.T) {
	ptm, pts, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptm.Close()
	self := testBinary(t)
	cmd := exec.Command(self, "--log-format", "json", "--env", roleEnv+"=worker", "--control", "none", "--workers", "1",
		"--listen", "http=tcp://127.0.0.1:0", "--", self)
	cmd.Env = append(os.Environ(), roleEnv+"=master")
	cmd.Stdout = pts
	m := launch(t, cmd)
	pts.Close()
	addr := m.address()
	m.waitFor(0, "cluster ready", nil)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(ptm)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	say(t, addr, "out", "on-a-terminal")
	select {
	case l := <-lines:
		if strings.TrimRight(l, "\r") != "w1 | on-a-terminal" {
			t.Fatalf("on the terminal: %q, want %q", l, "w1 | on-a-terminal")
		}
	case <-time.After(patience):
		t.Fatal("nothing reached the terminal")
	}
	m.stop()
}
