package osproc_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster/actors/osproc"
	"github.com/dutchmaster/dutchmaster/sockets/testproc"
)

func init() { testproc.Register("pidfile", rolePIDFile) }

// rolePIDFile takes the pidfile args[0], says so, and holds it until
// killed.
func rolePIDFile(args []string) int {
	if _, err := osproc.CreatePIDFile(args[0]); err != nil {
		fmt.Fprintln(os.Stderr, "pidfile:", err)
		return 1
	}
	fmt.Println("held")
	time.Sleep(time.Hour)
	return 0
}

// TestPIDFile: the file holds the pid while its master runs; another
// taker is refused with the holder's pid; Remove deletes it.
func TestPIDFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.pid")
	pf, err := osproc.CreatePIDFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != strconv.Itoa(os.Getpid())+"\n" {
		t.Errorf("pidfile holds %q, want this pid", got)
	}
	_, err = osproc.CreatePIDFile(path)
	want := fmt.Sprintf("%s: held by a running master (pid %d)", path, os.Getpid())
	if !errors.Is(err, osproc.ErrPIDFileHeld) || err.Error() != want {
		t.Errorf("second take: %v, want %q", err, want)
	}
	pf.Remove()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pidfile still there after Remove (%v)", err)
	}
}

// TestPIDFileOfAKilledMaster: a file left by a master killed outright (no
// Remove) is taken over, since its lock died with it; while that master
// lived, the file was refused.
func TestPIDFileOfAKilledMaster(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.pid")
	holder := helperCommand(t, "pidfile", path)
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer holder.Wait()
	defer holder.Process.Kill()
	if line, err := bufio.NewReader(out).ReadString('\n'); line != "held\n" {
		t.Fatalf("holder said %q (%v)", line, err)
	}
	_, err = osproc.CreatePIDFile(path)
	if !errors.Is(err, osproc.ErrPIDFileHeld) || !strings.Contains(err.Error(), "(pid "+strconv.Itoa(holder.Process.Pid)+")") {
		t.Fatalf("take while the holder lives: %v, want held by pid %d", err, holder.Process.Pid)
	}
	if err := holder.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	holder.Wait()
	pf, err := osproc.CreatePIDFile(path)
	if err != nil {
		t.Fatalf("take after the holder died: %v", err)
	}
	defer pf.Remove()
	if got, _ := os.ReadFile(path); string(got) != strconv.Itoa(os.Getpid())+"\n" {
		t.Errorf("pidfile holds %q, want this pid", got)
	}
}

// TestPIDFileInAMissingDirectory: the error starts with the path and says
// what is wrong.
func TestPIDFileInAMissingDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "m.pid")
	_, err := osproc.CreatePIDFile(path)
	if err == nil || err.Error() != path+": no such file or directory" {
		t.Errorf("CreatePIDFile: %v", err)
	}
}
