package osproc_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/osproc"
	"github.com/dutchmaster/dutchmaster/sockets/testproc"
)

func init() {
	testproc.Register("execmaster", roleExecMaster)
}

// roleExecMaster is a master that re-executes itself. Its first image
// serves the main thread (ServeMainThread), forks one sleeper worker
// through a Runtime (after a before-fork command), and, as the control, one sleeper with the same
// parent-death signal forked from another thread; it prints "worker PID
// control PID" and re-executes this binary (Exec) with the argument
// "again". The second image prints "image PID" and blocks until killed.
func roleExecMaster(args []string) int {
	if len(args) > 0 && args[0] == "again" {
		fmt.Printf("image %d\n", os.Getpid())
		time.Sleep(time.Hour)
		return 0
	}
	return osproc.ServeMainThread(func() int {
		if !osproc.MainThreadServing() {
			fmt.Fprintln(os.Stderr, "execmaster: main thread not serving")
			return 1
		}
		// The before-fork command starts through the main thread too.
		rt, err := osproc.New(osproc.Config{
			Command: []string{os.Args[0]}, Env: testproc.Environ("sleeper"), Stdout: os.Stderr,
			BeforeFork: osproc.BeforeForkHook(nil, "exit 0", testTimeout),
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "execmaster:", err)
			return 1
		}
		events := make(chan any, 16)
		rt.Fork(actors.WorkerSpec{ID: 1}, func(msg any) { events <- msg })
		sp, ok := (<-events).(actors.Spawned)
		if !ok {
			fmt.Fprintln(os.Stderr, "execmaster: fork failed")
			return 1
		}
		// The control is forked from this goroutine's thread, which is not
		// the main thread (the main goroutine holds it).
		if unix.Gettid() == os.Getpid() {
			fmt.Fprintln(os.Stderr, "execmaster: run is on the main thread")
			return 1
		}
		control := exec.Command(os.Args[0])
		control.Env = append(os.Environ(), testproc.Environ("sleeper")...)
		control.Stdout = os.Stderr
		control.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := control.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "execmaster:", err)
			return 1
		}
		fmt.Printf("worker %d control %d\n", sp.PID, control.Process.Pid)
		err = osproc.Exec(os.Args[0], []string{os.Args[0], "again"}, os.Environ())
		fmt.Fprintln(os.Stderr, "execmaster:", err)
		return 1
	})
}

// TestWorkersSurviveTheMastersExec: a master that re-executes itself on
// the main thread keeps its pid and its workers: the worker forked by the
// main thread is still its child, alive, after the exec, and still dies
// with it (its parent-death signal stays armed). The control, forked from
// another thread with the same signal, dies at the exec: execve ends that
// thread, and the signal fires.
func TestWorkersSurviveTheMastersExec(t *testing.T) {
	master, out := startHelper(t, "execmaster")
	lines := bufio.NewReader(out)

	line, err := lines.ReadString('\n')
	if err != nil {
		t.Fatalf("master said %q: %v", line, err)
	}
	var pid, controlPID int
	if _, err := fmt.Sscanf(line, "worker %d control %d\n", &pid, &controlPID); err != nil {
		t.Fatalf("master said %q: %v", line, err)
	}
	worker, ok := watch(t, pid)
	if !ok {
		t.Fatalf("worker %d gone", pid)
	}
	control, _ := watch(t, controlPID) // may be gone already: -1

	line, err = lines.ReadString('\n')
	if err != nil {
		t.Fatalf("re-executed master said %q: %v", line, err)
	}
	var image int
	if _, err := fmt.Sscanf(line, "image %d\n", &image); err != nil {
		t.Fatalf("re-executed master said %q: %v", line, err)
	}
	if image != master.Process.Pid {
		t.Fatalf("re-executed master has pid %d, want %d", image, master.Process.Pid)
	}
	// Both children got the exec at the same moment; once the control is
	// gone, the worker would be too if its signal had fired.
	waitGone(t, control, "the control forked on another thread")
	if !alive(t, worker) {
		t.Fatal("the worker died at its master's exec")
	}
	if ppid := parentOf(t, pid); ppid != image {
		t.Fatalf("worker %d has parent %d after the exec, want the master %d", pid, ppid, image)
	}

	if err := master.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	master.Wait()
	waitGone(t, worker, "the worker of the re-executed master, killed")
}

// TestExecRefusedWithoutServing: without ServeMainThread, Exec refuses
// (the workers would die at the exec) and the test binary goes on.
func TestExecRefusedWithoutServing(t *testing.T) {
	if osproc.MainThreadServing() {
		t.Fatal("MainThreadServing in a test binary that does not serve")
	}
	if err := osproc.Exec("/bin/true", []string{"true"}, nil); err == nil {
		t.Fatal("Exec without ServeMainThread: no error")
	}
}
