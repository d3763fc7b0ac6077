package testproc_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster/sockets/testproc"
)

func init() {
	testproc.Register("echo", func(args []string) int {
		fmt.Print(strings.Join(args, " "))
		return 0
	})
	testproc.Register("exit", func(args []string) int {
		code, _ := strconv.Atoi(args[0])
		return code
	})
	// relay runs the test binary again with its own arguments: as the
	// next role of its chain.
	testproc.Register("relay", func(args []string) int {
		exe, _ := os.Executable()
		cmd := exec.Command(exe, args...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "relay:", err)
			return 1
		}
		return 0
	})
}

func TestMain(m *testing.M) { testproc.Main(m) }

func TestRoleGetsItsArguments(t *testing.T) {
	out, err := testproc.Command(t, "echo", "a", "b c").Output()
	if err != nil || string(out) != "a b c" {
		t.Fatalf("echo: %q, %v", out, err)
	}
}

func TestRoleExitCode(t *testing.T) {
	err := testproc.Command(t, "exit", "3").Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("exit 3: %v", err)
	}
}

func TestChainPassesTheNextRoleOn(t *testing.T) {
	out, err := testproc.Command(t, "relay"+testproc.Chain+"echo", "relayed").Output()
	if err != nil || string(out) != "relayed" {
		t.Fatalf("relay/echo: %q, %v", out, err)
	}
}

func TestUnknownRole(t *testing.T) {
	cmd := testproc.Command(t, "exit", "0")
	cmd.Env = append(cmd.Env, testproc.Env+"=no-such-role")
	cmd.Stderr = nil
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), `unknown role "no-such-role"`) {
		t.Fatalf("unknown role: %v, %q", err, out)
	}
}

// TestUnused: a role neither run nor named is listed; one that ran is not.
func TestUnused(t *testing.T) {
	testproc.Register("registered-by-TestUnused", func([]string) int { return 0 })
	if got := testproc.Unused(map[string]bool{}); !slices.Contains(got, "registered-by-TestUnused") {
		t.Fatalf("Unused = %q, want the new role listed", got)
	}
	if got := testproc.Unused(map[string]bool{"registered-by-TestUnused": true}); slices.Contains(got, "registered-by-TestUnused") {
		t.Fatalf("Unused = %q with the role run", got)
	}
	testproc.Environ("registered-by-TestUnused") // named: used from here on, so the run passes
}

// TestFindLeaksWaits: a goroutine that ends on its own a second later
// (as protoactor's dead-letter throttle does) is waited for, not
// reported: FindLeaks returns nil only once it has ended.
func TestFindLeaksWaits(t *testing.T) {
	stop, ended := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ended)
		<-stop
	}()
	time.AfterFunc(time.Second, func() { close(stop) })
	if err := testproc.FindLeaks(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ended:
	default:
		t.Fatal("FindLeaks found no leak while the goroutine still ran")
	}
}
