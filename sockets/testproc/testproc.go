// Package testproc runs a package's test binary as a child process in a
// named role: a worker, a master, a trampoline. The child is the very binary
// under test (os/exec's and tableflip's own pattern), so no helper binary
// can drift from the code it exercises.
//
// A package registers its roles (Register, from init or a var), calls Main
// from TestMain, and starts a role with Command, or hands Environ to
// whatever starts the process (a runtime, a master's --env). Env's value
// names the role; the process's arguments are the role's. A role that
// starts or execs the test binary again (a trampoline, a master) passes
// its environment on, so its children play the same role, unless Env
// chains roles: "trampoline/worker" runs trampoline, whose children (its
// exec included) run worker.
//
// Main fails a full test run (no -run, -skip, -list or -fuzz) in which a
// registered role never ran nor was named, so a role whose test is gone
// does not linger. Each role process records its name in a file the test
// process gives its children in the environment, so a role started by
// another role (a trampoline's worker, a master's worker) counts too.
//
// It imports no supervisor code: any package's tests can use it.
package testproc

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Env names the role a run of a test binary plays; unset, it runs tests.
// Roles separated by Chain are played in turn by a process and its
// descendants.
const Env = "DUTCHMASTER_TEST_ROLE"

// Chain separates the roles of a chain in Env's value.
const Chain = "/"

// ranEnv is the file in which every role process appends its name, set by
// Main in the test process for all its descendants.
const ranEnv = "DUTCHMASTER_TEST_ROLES_RAN"

// Timeout bounds a Command's process: generous, so that a loaded machine
// (and -race) does not fail, and finite, so that a bug does not hang.
const Timeout = 30 * time.Second

var (
	mu    sync.Mutex
	roles = map[string]func(args []string) int{}
	named = map[string]bool{} // roles this process started or named
)

// Register adds a role: run is the whole program of a process in that
// role, given the process's arguments, and returns its exit code. A name
// registered twice panics.
func Register(name string, run func(args []string) int) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := roles[name]; dup || name == "" {
		panic(fmt.Sprintf("testproc: role %q registered twice (or empty)", name))
	}
	roles[name] = run
}

// Main is TestMain's body. In a role process it runs the role and exits
// with its code. Otherwise it runs the tests, checks for leaked goroutines
// after a passing run (goleak), and after a full run fails if a registered
// role was never used.
func Main(m *testing.M) {
	if chain := os.Getenv(Env); chain != "" {
		name, rest, chained := strings.Cut(chain, Chain)
		if chained {
			os.Setenv(Env, rest)
		}
		os.Exit(runRole(name, os.Args[1:]))
	}
	dir, err := os.MkdirTemp("", "testproc-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "testproc:", err)
		os.Exit(2)
	}
	ran := filepath.Join(dir, "ran")
	os.Setenv(ranEnv, ran)
	code := m.Run()
	os.Unsetenv(ranEnv)
	if code == 0 {
		if err := FindLeaks(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: Errors on successful test run: %v\n", err)
			code = 1
		}
	}
	if fullRun() {
		if unused := Unused(readRan(ran)); len(unused) > 0 {
			fmt.Fprintf(os.Stderr, "testproc: registered roles no test used: %s (remove them, or test them)\n", strings.Join(unused, ", "))
			code = 1
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// leakPatience is how long FindLeaks waits for goroutines to end. Some
// end on their own a while after the tests: protoactor's dead-letter
// throttle keeps one on a ticker for DeadLetterThrottleInterval (1 s)
// after a dead letter, longer on a loaded machine; goleak.Find alone
// gives up after about half a second.
const leakPatience = 10 * time.Second

// FindLeaks is goleak.Find, retried until no goroutine is left or
// leakPatience has passed: a goroutine still there then is a leak.
func FindLeaks(opts ...goleak.Option) error {
	deadline := time.Now().Add(leakPatience)
	for {
		err := goleak.Find(opts...)
		if err == nil || time.Now().After(deadline) {
			return err
		}
	}
}

// runRole records that name ran and runs it.
func runRole(name string, args []string) int {
	mu.Lock()
	run, ok := roles[name]
	mu.Unlock()
	if !ok {
		fmt.Fprintf(os.Stderr, "testproc: unknown role %q (%s)\n", name, Env)
		return 2
	}
	if path := os.Getenv(ranEnv); path != "" {
		// One short O_APPEND write: lines from concurrent roles never mix.
		if f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err == nil {
			f.WriteString(name + "\n")
			f.Close()
		}
	}
	return run(args)
}

func readRan(path string) map[string]bool {
	out := map[string]bool{}
	b, _ := os.ReadFile(path) // no file: no role ran
	for line := range strings.SplitSeq(string(b), "\n") {
		if line != "" {
			out[line] = true
		}
	}
	return out
}

// Unused lists, sorted, the registered roles that neither ran (per ran)
// nor were named by this process (Environ, Command).
func Unused(ran map[string]bool) []string {
	mu.Lock()
	defer mu.Unlock()
	var out []string
	for name := range roles {
		if !ran[name] && !named[name] {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// fullRun says whether every test of the package ran: a filtered run
// (-run, -skip), a listing (-list) or fuzzing (-fuzz) leaves roles unused
// on purpose.
func fullRun() bool {
	for _, name := range []string{"test.run", "test.skip", "test.list", "test.fuzz"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			return false
		}
	}
	return true
}

// Environ is what a process needs in its environment to run role (a role
// or a chain): Env, and no 1 s sleep at exit under -race. It counts the
// roles as used.
func Environ(role string) []string {
	mu.Lock()
	for name := range strings.SplitSeq(role, Chain) {
		named[name] = true
	}
	mu.Unlock()
	return []string{
		Env + "=" + role,
		"GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"),
	}
}

// Executable is the test binary, the program of every role.
func Executable(t testing.TB) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// Command runs the test binary as role with args, this process's
// environment plus Environ(role), and stderr to this process's. It is
// killed when it outlives Timeout or the test.
func Command(t testing.TB, role string, args ...string) *exec.Cmd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, Executable(t), args...)
	cmd.Env = append(os.Environ(), Environ(role)...)
	cmd.Stderr = os.Stderr
	return cmd
}
