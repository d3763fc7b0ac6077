package worker

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster/sockets"
	"github.com/dutchmaster/dutchmaster/sockets/testproc"
)

// The master side of the tests starts real workers: this test binary
// again, in a role (testproc), through the trampoline role.

// testTimeout bounds every wait on a child or an event.
const testTimeout = testproc.Timeout

func init() {
	// trampoline: what dutchmaster's hidden subcommand does.
	testproc.Register("trampoline", func(args []string) int {
		fmt.Fprintln(os.Stderr, sockets.ExecWithListenPID(args))
		return 127
	})
}

func TestMain(m *testing.M) { testproc.Main(m) }

// startWorker starts helper as a worker the way the master does: through
// the LISTEN_PID trampoline, with the listeners, an IPC channel (when ch is
// true) and extra environment. It returns the command, the master's end of
// the channel (or nil), and the worker's stdout lines.
func startWorker(t *testing.T, listeners []*sockets.Listener, withChannel bool, env []string, helper string, args ...string) (*exec.Cmd, *sockets.Channel, <-chan string) {
	t.Helper()
	exe := testproc.Executable(t)
	var ch *sockets.Channel
	var err error
	var childEnd *os.File
	if withChannel {
		ch, childEnd, err = sockets.NewChannel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ch.Close() })
	}
	plan := sockets.PlanWorkerFiles(listeners, childEnd, "")
	// The trampoline execs the binary again, as the helper.
	cmd := testproc.Command(t, "trampoline"+testproc.Chain+helper, append([]string{exe}, args...)...)
	cmd.Env = append(plan.Environ(cmd.Env), env...)
	cmd.ExtraFiles = plan.ExtraFiles
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if childEnd != nil {
		childEnd.Close()
	}
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		io.Copy(io.Discard, stdout)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, ch, lines
}

// await waits for want on lines, failing after testTimeout.
func await(t *testing.T, lines <-chan string, want string) {
	t.Helper()
	deadline := time.After(testTimeout)
	for {
		select {
		case got, ok := <-lines:
			if !ok {
				t.Fatalf("worker output ended before %q", want)
			}
			if got == want {
				return
			}
		case <-deadline:
			t.Fatalf("no %q from the worker", want)
		}
	}
}

// ipcLines reads a channel's lines into a Go channel until it ends.
func ipcLines(ch *sockets.Channel) <-chan string {
	out := make(chan string, 100)
	go func() {
		defer close(out)
		for {
			line, err := ch.ReadLine()
			if err != nil {
				return
			}
			out <- string(line)
		}
	}()
	return out
}
