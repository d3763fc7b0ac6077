//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFaultCtlInterrupted: `ctl restart` waits for the whole rollout; an
// operator's Ctrl-C (SIGINT), or timeout(1)'s SIGTERM, ends that wait at
// once, with 128+signal and a line saying the master goes on, and the
// rollout does go on in the master. The replacements here never get ready
// on their own (an hour's boot), so nothing but the signal can end the
// wait.
func TestFaultCtlInterrupted(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	m := startFaultMaster(t, "worker", []string{"DM_FAULT=raw", "DM_FAULT_BOOT=1h", "DM_FAULT_BOOT_GEN=2"},
		"--control", sock, "--workers", "1", "--listen", "http=tcp://127.0.0.1:0", "--ready-timeout", "1h")
	for i, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		from := len(m.events())
		ctl := exec.Command(testBinary(t), "ctl", "--control", sock, "restart")
		ctl.Env = append(os.Environ(), roleEnv+"=master", "GORACE=atexit_sleep_ms=0")
		var stdout, stderr bytes.Buffer
		ctl.Stdout, ctl.Stderr = &stdout, &stderr
		if err := ctl.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- ctl.Wait() }()
		// ctl waits once the master has taken its request.
		m.waitFor(from, "control command", map[string]any{"command": "restart"})
		if err := ctl.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		var err error
		select {
		case err = <-done:
		case <-time.After(patience):
			ctl.Process.Kill()
			<-done
			t.Fatalf("ctl restart still waiting %s after %s", patience, sig)
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 128+int(sig) {
			t.Errorf("ctl restart after %s: %v, want exit status %d\nstderr: %s", sig, err, 128+int(sig), &stderr)
		}
		want := fmt.Sprintf("%s: stopped waiting; the master goes on with the restart", sig)
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("ctl restart after %s: stderr %q, want %q", sig, &stderr, want)
		}
		if st := status(t, sock); st.Rollout == nil || st.Rollout.Generation != i+2 {
			t.Errorf("after ctl was interrupted the master shows rollout %+v, want generation %d still running", st.Rollout, i+2)
		}
	}
	m.stop()
}
