package sockets

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// helperEnv marks a run of this test binary as a helper process: the helper
// is named by os.Args[1] and runs instead of the tests (tableflip's and
// os/exec's own pattern: no separate helper binaries to drift).
const helperEnv = "DUTCHMASTER_SOCKETS_TEST_HELPER"

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

// helpers run in child processes; each returns the exit code.
var helpers = map[string]func(args []string) int{}

// testTimeout bounds every wait on a child or an event: generous, so that a
// loaded CI machine does not fail, and finite, so that a bug does not hang.
const testTimeout = 30 * time.Second

// helperCommand runs this test binary as the named helper. The process is
// killed if it outlives the test's deadline.
func helperCommand(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, testBinary(t), append([]string{name}, args...)...)
	cmd.Env = append(os.Environ(), helperEnv+"=1",
		// Under -race a process sleeps 1 s at exit by default; helpers need not.
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	cmd.Stderr = os.Stderr
	return cmd
}

func testBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}
