package worker

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster/sockets"
	"go.uber.org/goleak"
)

// helperEnv marks a run of this test binary as a helper process named by
// os.Args[1]: the master side of the tests starts real workers this way.
const helperEnv = "DUTCHMASTER_WORKER_TEST_HELPER"

// testTimeout bounds every wait on a child or an event.
const testTimeout = 30 * time.Second

var helpers = map[string]func(args []string) int{
	// trampoline: what dutchmaster's hidden subcommand does.
	"trampoline": func(args []string) int {
		fmt.Fprintln(os.Stderr, sockets.ExecWithListenPID(args))
		return 127
	},
}

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" && len(os.Args) > 1 {
		helper, ok := helpers[os.Args[1]]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown helper %q\n", os.Args[1])
			os.Exit(2)
		}
		os.Exit(helper(os.Args[2:]))
	}
	goleak.VerifyTestMain(m)
}

// startWorker starts helper as a worker the way the master does: through
// the LISTEN_PID trampoline, with the listeners, an IPC channel (when ch is
// true) and extra environment. It returns the command, the master's end of
// the channel (or nil), and the worker's stdout lines.
func startWorker(t *testing.T, listeners []*sockets.Listener, withChannel bool, env []string, helper string, args ...string) (*exec.Cmd, *sockets.Channel, <-chan string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var ch *sockets.Channel
	var childEnd *os.File
	if withChannel {
		ch, childEnd, err = sockets.NewChannel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ch.Close() })
	}
	plan := sockets.PlanWorkerFiles(listeners, childEnd, "")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, exe, append([]string{"trampoline", exe, helper}, args...)...)
	cmd.Env = append(plan.Environ(os.Environ()), helperEnv+"=1",
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = plan.ExtraFiles
	cmd.Stderr = os.Stderr
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
