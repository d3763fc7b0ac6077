package osproc_test

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestWorkerDiesWithTheMaster: a master killed outright (SIGKILL, no
// chance to clean up) takes its workers with it: the parent-death signal.
// Nor does it leave its notify socket: an abstract socket goes with the
// last descriptor on it. The master here is this binary in the "master"
// role: a Runtime that forks one sleeper worker, prints its pid and the
// notify address, and blocks.
func TestWorkerDiesWithTheMaster(t *testing.T) {
	master, out := startHelper(t, "master")

	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("master said %q: %v", line, err)
	}
	var pid int
	var notify string
	if _, err := fmt.Sscanf(line, "worker %d %s\n", &pid, &notify); err != nil {
		t.Fatalf("master said %q: %v", line, err)
	}
	if !strings.HasPrefix(notify, "@dutchmaster-notify-") {
		t.Fatalf("notify socket %q, want an abstract one", notify)
	}
	worker, ok := watch(t, pid)
	if !ok {
		t.Fatalf("worker %d gone while its master lives", pid)
	}
	// The pid is the master's child, the sleeper (the trampoline exec'ed it).
	if ppid := parentOf(t, pid); ppid != master.Process.Pid {
		t.Fatalf("process %d has parent %d, want the master %d", pid, ppid, master.Process.Pid)
	}

	if err := master.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	master.Wait()
	waitGone(t, worker, "the worker of a killed master")
	// The master is reaped, so its descriptors are closed.
	if _, err := net.Dial("unixgram", notify); !errors.Is(err, unix.ECONNREFUSED) {
		t.Errorf("notify socket %s of the killed master: dial %v, want connection refused", notify, err)
	}
}

// parentOf reads a process's parent pid from /proc/PID/stat.
func parentOf(t *testing.T, pid int) int {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	rest := string(stat[strings.LastIndexByte(string(stat), ')')+2:])
	var state string
	var ppid int
	if _, err := fmt.Sscanf(rest, "%s %d", &state, &ppid); err != nil {
		t.Fatalf("/proc/%d/stat %q: %v", pid, stat, err)
	}
	return ppid
}
