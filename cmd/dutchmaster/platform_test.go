//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestOtherPlatformsBuild: where the master cannot run, the binary still
// builds, without the Linux code, and says so in one line (exit 2) in
// place of a build error.
func TestOtherPlatformsBuild(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("no go tool in PATH")
	}
	out := filepath.Join(t.TempDir(), "dutchmaster")
	cmd := exec.Command(goTool, "build", "-o", out, ".")
	cmd.Env = append(os.Environ(), "GOOS=darwin", "GOARCH=arm64", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GOOS=darwin go build ./cmd/dutchmaster: %v\n%s", err, b)
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if msg := fmt.Sprintf(unsupported, "", ""); !bytes.Contains(bin, []byte(unsupported)) {
		t.Fatalf("the darwin binary does not carry %q", msg)
	}
}
