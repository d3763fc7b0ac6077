package main

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// TestNodeEvents: the app's events file is read as it grows, a line cut
// in the middle waits for its end, and a worker's listening, drain and
// exit make it live, then not.
func TestNodeEvents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events")
	pid := os.Getpid() // alive, so only its own exit line ends it
	write := func(s string) {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		f.WriteString(s)
	}
	e := &nodeEvents{path: path, pids: map[int]*nodeWorker{}}
	line := func(what string, ms string) string { return what + " " + strconv.Itoa(pid) + " " + ms + "\n" }
	write(line("L", "1000.5") + "D " + strconv.Itoa(pid))
	if err := e.read(); err != nil {
		t.Fatal(err)
	}
	if live := e.live(); !slices.Equal(live, []int{pid}) || e.done(pid) {
		t.Fatalf("after listening: live %v, done %v", live, e.done(pid))
	}
	write(" 2000.25\n" + line("X", "2500"))
	if err := e.read(); err != nil {
		t.Fatal(err)
	}
	w := e.pids[pid]
	if len(e.live()) != 0 || !e.done(pid) || w.exited.Sub(w.drained).Microseconds() != 499750 {
		t.Fatalf("after drain and exit: live %v, worker %+v", e.live(), w)
	}
}
