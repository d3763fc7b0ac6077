package sockets

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/dutchmaster/dutchmaster/sockets/testproc"
	"golang.org/x/sys/unix"
)

func init() {
	// report-fds: print the descriptors this process inherited, i.e. the
	// open ones without close-on-exec (everything Go itself opens has it).
	testproc.Register("report-fds", func([]string) int {
		fmt.Println(strings.Trim(fmt.Sprint(inheritedFDs()), "[]"))
		return 0
	})
	// sweep: leak a descriptor, start report-fds before and after
	// CloseOnExecAll, and print both reports.
	testproc.Register("sweep", sweepHelper)
}

func inheritedFDs() []int {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		panic(err)
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	var fds []int
	for _, n := range names {
		fd, _ := strconv.Atoi(n)
		if fd == int(d.Fd()) {
			continue
		}
		if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil && flags&unix.FD_CLOEXEC == 0 {
			fds = append(fds, fd)
		}
	}
	slices.Sort(fds)
	return fds
}

func sweepHelper([]string) int {
	leak, err := unix.Open("/dev/null", unix.O_RDONLY, 0) // no O_CLOEXEC: a launcher's leak
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	l, err := Bind(Spec{Name: "web", Network: "tcp", Address: "127.0.0.1:0"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	report := func() string {
		cmd := execHelper("report-fds")
		cmd.ExtraFiles = []*os.File{l.File()}
		out, err := cmd.Output()
		if err != nil {
			return "error: " + err.Error()
		}
		return strings.TrimSpace(string(out))
	}
	before := report()
	if err := CloseOnExecAll(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	after := report()
	fmt.Printf("leak=%d\nbefore=%s\nafter=%s\n", leak, before, after)
	return 0
}

func TestCloseOnExecAll(t *testing.T) {
	out, err := helperCommand(t, "sweep").Output()
	if err != nil {
		t.Fatal(err)
	}
	report := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		report[k] = v
	}
	// The control: without the sweep the leaked descriptor reaches the child.
	if before := strings.Fields(report["before"]); !slices.Contains(before, report["leak"]) {
		t.Fatalf("report %q: the leaked fd did not reach the child before the sweep; the test proves nothing", out)
	}
	if report["after"] != "0 1 2 3" {
		t.Fatalf("after the sweep the child inherited %q, want exactly 0 1 2 3 (stdio and its listener)", report["after"])
	}
}

// execHelper starts this test binary as a helper from inside a helper.
func execHelper(name string) *exec.Cmd {
	exe, _ := os.Executable()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), testproc.Environ(name)...)
	cmd.Stderr = os.Stderr
	return cmd
}
