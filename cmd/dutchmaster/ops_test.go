//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster/sockets"
	"github.com/dutchmaster/dutchmaster/sockets/testproc"
)

// The operations suite (ctl_test.go, systemd_test.go, metrics_test.go,
// record_test.go, pidfile_test.go, subreaper_test.go): the master's
// control socket, systemd protocols, metrics, journal, pidfile and
// subreaper, each through the real binary.
//
// Its extra role and knob (testproc; roles_test.go has the others):
//
//	listen-pid-master    the master, started the way systemd starts it:
//	                     LISTEN_PID set to its own pid (a re-exec that
//	                     keeps the pid)
//	DM_TEST_ORPHAN=FILE  (with the worker role) the worker first leaves an
//	                     orphan behind, a `sleep 2` whose pid it writes to FILE
func init() {
	testproc.Register("listen-pid-master", func([]string) int {
		os.Setenv(roleEnv, "master")
		err := sockets.ExecWithListenPID(os.Args)
		fmt.Fprintf(os.Stderr, "listen-pid-master: %v\n", err)
		return 3
	})
	if os.Getenv(roleEnv) == "" {
		// The test process, whose masters inherit this: without
		// --control, a master takes a control socket in
		// $XDG_RUNTIME_DIR/dutchmaster (else /run/dutchmaster for root,
		// or /tmp/dutchmaster-UID), creating that last directory. The
		// other suites' masters run as they did before the control
		// socket existed: the parent of its default directory does not
		// exist, which a default path only warns about. Tests of the
		// default set XDG_RUNTIME_DIR themselves.
		os.Setenv("XDG_RUNTIME_DIR", filepath.Join(os.TempDir(), "dutchmaster-tests-have-no-runtime-dir"))
	}
}

// leaveOrphan starts `sleep 2` from a shell that exits at once: the sleep
// outlives its parent and is adopted by the nearest subreaper.
func leaveOrphan(file string) {
	out, err := exec.Command("/bin/sh", "-c", "sleep 2 >/dev/null 2>&1 & echo $!").Output()
	if err == nil {
		err = os.WriteFile(file, bytes.TrimSpace(out), 0o644)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "orphan: %v\n", err)
		os.Exit(3)
	}
}

// masterArgs are the arguments of `dutchmaster` running the test binary
// in a worker role, as startMaster builds them.
func masterArgs(t *testing.T, workerRole string, workerEnv []string, flags ...string) []string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--log-format", "json", "--env", roleEnv + "=" + workerRole}
	for _, kv := range workerEnv {
		args = append(args, "--env", kv)
	}
	return append(append(append(args, flags...), "--"), self)
}

// launchMaster runs the test binary with args and env (env names the
// role), and files as fds 3 onwards: a master started the way a service
// manager would start it.
func launchMaster(t *testing.T, env []string, files []*os.File, args ...string) *master {
	t.Helper()
	return launchMasterBinary(t, testBinary(t), env, files, args...)
}

// launchMasterBinary is launchMaster with a copy of the test binary (see
// sharedDir).
func launchMasterBinary(t *testing.T, bin string, env []string, files []*os.File, args ...string) *master {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.ExtraFiles = files
	cmd.Stdout = os.Stdout
	return launch(t, cmd)
}

// result is what a run of the binary printed, and its exit status.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// runDutchmaster runs `dutchmaster args...` (the test binary in the master
// role) to completion, as the user uid unless it is 0.
func runDutchmaster(t *testing.T, uid int, args ...string) result {
	t.Helper()
	return runBinary(t, testBinary(t), uid, args...)
}

func testBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return self
}

func runBinary(t *testing.T, bin string, uid int, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), roleEnv+"=master", "GORACE=atexit_sleep_ms=0")
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
		cmd.Dir = "/"
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(patience):
		cmd.Process.Kill()
		<-done
		t.Fatalf("dutchmaster %s: still running after %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), patience, &stdout, &stderr)
	}
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return r
}

// sharedDir makes a directory that every user can traverse (not list),
// and a copy of the test binary in it that every user can run: what a
// test needs to act as another user.
func sharedDir(t *testing.T) (dir, bin string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "dutchmaster-shared-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, "dutchmaster.test")
	src, err := os.Open(testBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, bin
}

// nobody is the uid of the user nobody.
const nobody = 65534
