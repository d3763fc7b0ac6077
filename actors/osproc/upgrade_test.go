package osproc_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/actors/osproc"
	"github.com/dutchmaster/dutchmaster/sockets"
	"github.com/dutchmaster/dutchmaster/sockets/testproc"
)

func init() {
	testproc.Register("upgrader", roleUpgrader)
}

// stateEnv names the memfd with the handed state in the upgrader's
// second image.
const stateEnv = "DUTCHMASTER_TEST_STATE"

// upgradeReport is what one image of the upgrader saw, one JSON line on
// its stdout.
type upgradeReport struct {
	Stage   int
	PID     int
	Workers []workerReport
	Error   string `json:",omitempty"`
	// Open are the descriptors open but stdio: in the first image before
	// anything, in the second after Close.
	Open []string `json:",omitempty"`
}

type workerReport struct {
	Seqs, Statuses []int
	Done           int // -1: no done line
	Out, Err       []string
	Exit           *actors.Exited `json:",omitempty"`
	ExitLast       bool
}

// roleUpgrader is a master that hands its two streaming workers over to
// its next image across a real exec. The first image serves the main
// thread, forks the workers, lets them stream, pauses, hands over, writes
// the state into a memfd, clears close-on-exec on the handed descriptors
// and execs itself ("adopt"). The second adopts the runtime and
// reattaches the workers, lets worker 2 stream on, drains worker 1 (exit
// 7), kills worker 2 and closes the runtime. Each image prints its report.
func roleUpgrader(args []string) int {
	var logs syncBuffer
	cfg := osproc.Config{Command: []string{os.Args[0]}, Env: testproc.Environ("streamer"), LogOutput: true, Logger: zerolog.New(&logs)}
	cols := []*collector{{}, {}}
	report := func(stage int, err error) int {
		rep := upgradeReport{Stage: stage, PID: os.Getpid()}
		for i, c := range cols {
			rep.Workers = append(rep.Workers, summarize(c.snapshot(), logs.String(), i+1))
		}
		code := 0
		if err != nil {
			rep.Error, code = err.Error(), 1
		}
		rep.Open = openDescriptors()
		b, _ := json.Marshal(rep)
		fmt.Printf("%s\n", b)
		return code
	}
	if len(args) > 0 && args[0] == "adopt" {
		return osproc.ServeMainThread(func() int { return report(2, adoptAndEnd(cfg, cols)) })
	}
	before := openDescriptors()
	return osproc.ServeMainThread(func() int {
		err := handOverAndExec(cfg, cols, &logs, before)
		return report(1, err) // only if the exec failed
	})
}

// handOverAndExec is the upgrader's first image; it returns only on a
// failure.
func handOverAndExec(cfg osproc.Config, cols []*collector, logs *syncBuffer, before []string) error {
	rt, err := osproc.New(cfg)
	if err != nil {
		return err
	}
	for i, c := range cols {
		rt.Fork(actors.WorkerSpec{ID: core.WorkerID(i + 1), Slot: i}, c.add)
	}
	for _, c := range cols {
		if err := poll(func() bool { return countIPC(c.snapshot()) >= 5 }); err != nil {
			return err
		}
	}
	if err := rt.Pause(); err != nil {
		return err
	}
	st, fds, err := rt.Handover()
	if err != nil {
		return err
	}
	// The first image's report goes out now: nothing more is delivered,
	// and the exec ends its log.
	rep := upgradeReport{Stage: 1, PID: os.Getpid(), Open: before}
	for i, c := range cols {
		rep.Workers = append(rep.Workers, summarize(c.snapshot(), logs.String(), i+1))
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	memfd, err := unix.MemfdCreate("upgrade-state", 0) // kept across the exec
	if err != nil {
		return err
	}
	if _, err := unix.Write(memfd, data); err != nil {
		return err
	}
	for _, fd := range fds {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return err
		}
	}
	b, _ := json.Marshal(rep)
	fmt.Printf("%s\n", b)
	env := append(os.Environ(), stateEnv+"="+strconv.Itoa(memfd))
	return osproc.Exec(os.Args[0], []string{os.Args[0], "adopt"}, env)
}

// adoptAndEnd is the upgrader's second image.
func adoptAndEnd(cfg osproc.Config, cols []*collector) error {
	fd, err := strconv.Atoi(os.Getenv(stateEnv))
	if err != nil {
		return err
	}
	// As the real master does: no inherited descriptor reaches a later fork.
	if err := sockets.CloseOnExecAll(); err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), "upgrade-state")
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	data, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		return err
	}
	var st osproc.State
	if err := json.Unmarshal(data, &st); err != nil {
		return err
	}
	rt, err := osproc.Adopt(cfg, st)
	if err != nil {
		return err
	}
	defer rt.Close()
	for i, c := range cols {
		rt.Reattach(core.WorkerID(i+1), c.add)
	}
	if err := poll(func() bool { return countIPC(cols[1].snapshot()) >= 10 }); err != nil {
		return err
	}
	rt.Drain(1, actors.DrainIPC)
	if err := poll(func() bool { return exited(cols[0].snapshot()) }); err != nil {
		return err
	}
	rt.Kill(2)
	if err := poll(func() bool { return exited(cols[1].snapshot()) }); err != nil {
		return err
	}
	return rt.Close()
}

// poll waits for cond, for at most testTimeout.
func poll(cond func() bool) error {
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v", testTimeout)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

func countIPC(events []any) int {
	n := 0
	for _, e := range events {
		if _, ok := e.(actors.IPC); ok {
			n++
		}
	}
	return n
}

func exited(events []any) bool {
	return len(events) > 0 && isExited(events[len(events)-1])
}

func isExited(e any) bool {
	_, ok := e.(actors.Exited)
	return ok
}

// summarize turns a worker's events and the log into its report; lines
// it cannot read count as round -1 (a failure for the test).
func summarize(events []any, logs string, worker int) workerReport {
	rep := workerReport{Done: -1}
	for i, msg := range events {
		switch m := msg.(type) {
		case actors.IPC:
			var v map[string]int
			if json.Unmarshal(m.Line, &v) != nil {
				rep.Seqs = append(rep.Seqs, -1)
			} else if n, ok := v["seq"]; ok {
				rep.Seqs = append(rep.Seqs, n)
			} else if n, ok := v["done"]; ok {
				rep.Done = n
			}
		case actors.Notify:
			n, err := strconv.Atoi(strings.TrimPrefix(m.Payload, "STATUS="))
			if err != nil {
				n = -1
			}
			rep.Statuses = append(rep.Statuses, n)
		case actors.Exited:
			rep.Exit, rep.ExitLast = &m, i == len(events)-1
		}
	}
	for line := range strings.SplitSeq(logs, "\n") {
		var v map[string]any
		if json.Unmarshal([]byte(line), &v) != nil || v[actors.FieldWorker] != float64(worker) {
			continue
		}
		msg, _ := v["message"].(string)
		switch v["stream"] {
		case "stdout":
			rep.Out = append(rep.Out, msg)
		case "stderr":
			rep.Err = append(rep.Err, msg)
		}
	}
	return rep
}

// openDescriptors lists this process's descriptors but stdio, as
// "N -> target", leaving out the Go runtime's own (its poller).
func openDescriptors() []string {
	entries, _ := os.ReadDir("/proc/self/fd")
	var out []string
	for _, e := range entries {
		n, _ := strconv.Atoi(e.Name())
		if n <= 2 {
			continue
		}
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || strings.HasPrefix(target, "anon_inode:[event") || strings.HasPrefix(target, "/proc/") {
			continue // gone (the directory's own), or the poller's
		}
		out = append(out, e.Name()+" -> "+target)
	}
	return out
}

// TestUpgradeAcrossExec: a master hands its workers over to its next
// image across a real exec (same pid): no IPC line, notify datagram or
// output line is lost or duplicated between the two images; the second
// drains one worker (its exit code reported) and kills the other, and
// once closed holds no descriptor the first did not have before it began.
func TestUpgradeAcrossExec(t *testing.T) {
	master, out := startHelper(t, "upgrader")
	lines := bufio.NewReader(out)
	var reps [2]upgradeReport
	for i := range reps {
		line, err := lines.ReadString('\n')
		if err != nil {
			t.Fatalf("image %d said %q: %v", i+1, line, err)
		}
		if err := json.Unmarshal([]byte(line), &reps[i]); err != nil {
			t.Fatalf("image %d said %q: %v", i+1, line, err)
		}
		if reps[i].Error != "" || reps[i].Stage != i+1 {
			t.Fatalf("image %d: %+v", i+1, reps[i])
		}
		if reps[i].PID != master.Process.Pid {
			t.Fatalf("image %d has pid %d, want %d", i+1, reps[i].PID, master.Process.Pid)
		}
	}
	if err := master.Wait(); err != nil {
		t.Fatalf("second image: %v", err)
	}
	for _, fd := range reps[1].Open {
		if !slices.Contains(reps[0].Open, fd) {
			t.Errorf("descriptor %s left open by the second image (the first had %v before it began)", fd, reps[0].Open)
		}
	}
	for i := range 2 {
		first, second := reps[0].Workers[i], reps[1].Workers[i]
		name := fmt.Sprintf("worker %d", i+1)
		if second.Exit == nil || !second.ExitLast {
			t.Fatalf("%s: exit %+v not the last event of the second image", name, second.Exit)
		}
		if len(second.Seqs) == 0 || len(second.Statuses) == 0 {
			t.Errorf("%s: nothing delivered by the second image", name)
		}
		n := -1
		if i == 0 {
			n = second.Done
			if n < 0 || second.Exit.Code != 7 {
				t.Errorf("%s: done %d, exit %+v; want a done line and code 7", name, n, second.Exit)
			}
		} else if second.Exit.Signal != syscall.SIGKILL {
			t.Errorf("%s: exit %+v, want SIGKILL", name, second.Exit)
		}
		checkRounds(t, name+" IPC", slices.Concat(first.Seqs, second.Seqs), n)
		checkRounds(t, name+" notify", slices.Concat(first.Statuses, second.Statuses), n)
		for _, s := range []struct {
			name, prefix string
			lines        []string
		}{{"stdout", "out", slices.Concat(first.Out, second.Out)}, {"stderr", "err", slices.Concat(first.Err, second.Err)}} {
			var rounds []int
			for j, l := range s.lines {
				v, err := strconv.Atoi(strings.TrimPrefix(l, s.prefix+" "))
				if err != nil {
					if n < 0 && j == len(s.lines)-1 {
						break // cut short by the kill
					}
					t.Fatalf("%s %s: line %q", name, s.name, l)
				}
				rounds = append(rounds, v)
			}
			checkRounds(t, name+" "+s.name, rounds, n)
		}
	}
}
