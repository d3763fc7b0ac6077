package testproc

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Helpers for the tests of an upgrade in place, which play the exec in
// one process: the new image gets a duplicate of every descriptor the old
// one hands over (the test closes the originals, as the exec would) and
// the state through JSON.

// DupFDs duplicates each of fds (close-on-exec, numbered 3 or above) and
// returns the duplicate of each, by the original's number.
func DupFDs(t testing.TB, fds []int) map[int]int {
	t.Helper()
	dup := map[int]int{}
	for _, fd := range fds {
		nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
		if err != nil {
			t.Fatal(err)
		}
		dup[fd] = nfd
	}
	return dup
}

// ThroughJSON is v encoded and decoded again, as a handed-over state
// reaches the new image.
func ThroughJSON[T any](t testing.TB, v T) T {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var back T
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	return back
}

// OpenFDs counts this process's open descriptors.
func OpenFDs(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries) - 1 // the directory's own, open while it was read
}

// WaitFor polls cond until it holds, failing the test after patience.
func WaitFor(t testing.TB, patience time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", patience, what)
		}
		time.Sleep(time.Millisecond)
	}
}
