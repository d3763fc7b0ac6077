package osproc_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/actors/osproc"
	"github.com/dutchmaster/dutchmaster/sockets/testproc"
)

func init() { testproc.Register("subreaper", roleSubreaper) }

// roleSubreaper is a master that is a child subreaper with a Reaper. It
// has a worker (a child that exits at once, known to the reaper through
// Observe, and not waited for yet) and a child that leaves an orphan
// behind. It says "reaped" once the orphan's zombie is gone, then
// "worker kept" if the worker's exit status was still its own to wait
// for; anything else goes to stderr with exit status 1.
func roleSubreaper([]string) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "subreaper: "+format+"\n", args...)
		return 1
	}
	if err := osproc.SetSubreaper(); err != nil {
		return fail("%v", err)
	}
	r := osproc.StartReaper(zerolog.Nop())
	defer r.Close()
	worker := exec.Command("sh", "-c", "exit 7")
	if err := worker.Start(); err != nil {
		return fail("%v", err)
	}
	r.Observe(time.Now(), core.WorkerSpawned{Worker: 1, PID: worker.Process.Pid}, nil)
	out, err := exec.Command("sh", "-c", "sleep 0.2 & echo $!").Output()
	if err != nil {
		return fail("%v", err)
	}
	orphan, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		return fail("orphan pid %q", out)
	}
	deadline := time.Now().Add(testTimeout / 2)
	for {
		if _, err := os.Stat("/proc/" + strconv.Itoa(orphan)); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			return fail("orphan %d not reaped", orphan)
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Println("reaped")
	if err := worker.Wait(); worker.ProcessState == nil || worker.ProcessState.ExitCode() != 7 {
		return fail("the worker's exit: %v (taken by the reaper?)", err)
	}
	fmt.Println("worker kept")
	return 0
}

// TestReaper: a subreaper's Reaper reaps the zombie of an orphan it
// adopted, and leaves a worker's exit status to the runtime's wait.
func TestReaper(t *testing.T) {
	out, err := helperCommand(t, "subreaper").Output()
	if err != nil {
		t.Fatalf("subreaper: %v, said %q", err, out)
	}
	if string(out) != "reaped\nworker kept\n" {
		t.Errorf("subreaper said %q", out)
	}
}
