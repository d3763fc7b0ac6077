package sockets

import (
	"os/exec"
	"testing"

	"github.com/dutchmaster/dutchmaster/sockets/testproc"
)

// The tests start this test binary again as a helper process in a role
// (testproc): registered in the test files that use them, started with
// helperCommand.
func TestMain(m *testing.M) { testproc.Main(m) }

// testTimeout bounds every wait on a child or an event: generous, so that a
// loaded CI machine does not fail, and finite, so that a bug does not hang.
const testTimeout = testproc.Timeout

// helperCommand runs this test binary in the named role (a testproc
// chain, for a role that execs the binary again). The process is killed if
// it outlives the test's deadline.
func helperCommand(t *testing.T, role string, args ...string) *exec.Cmd {
	t.Helper()
	return testproc.Command(t, role, args...)
}

func testBinary(t *testing.T) string {
	t.Helper()
	return testproc.Executable(t)
}
