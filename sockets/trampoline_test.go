package sockets

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/dutchmaster/dutchmaster/sockets/testproc"
)

func init() {
	// trampoline: what dutchmaster's hidden subcommand does.
	testproc.Register("trampoline", func(args []string) int {
		err := ExecWithListenPID(args)
		fmt.Fprintln(os.Stderr, err)
		return 127
	})
	testproc.Register("activation-child", activationChild)
}

// activationReport is what activation-child saw.
type activationReport struct {
	PID       int
	ListenPID string
	Names     []string
	EnvAfter  string // LISTEN_* after activation.Files(true): must be empty
	Notify    string
}

// activationChild takes its listeners with go-systemd's activation.Files,
// says ready on the IPC channel, answers one connection per listener with
// the listener's name, and prints what it saw.
func activationChild([]string) int {
	r := activationReport{PID: os.Getpid(), ListenPID: os.Getenv("LISTEN_PID"), Notify: os.Getenv("NOTIFY_SOCKET")}
	chanFD, err := strconv.Atoi(os.Getenv("NODE_CHANNEL_FD"))
	if err != nil || os.Getenv("NODE_CHANNEL_SERIALIZATION_MODE") != "json" {
		fmt.Fprintln(os.Stderr, "no IPC channel in the environment")
		return 1
	}
	files := activation.Files(true)
	r.EnvAfter = os.Getenv("LISTEN_FDS") + os.Getenv("LISTEN_PID") + os.Getenv("LISTEN_FDNAMES")
	for _, f := range files {
		r.Names = append(r.Names, f.Name())
	}
	ipc, err := net.FileConn(os.NewFile(uintptr(chanFD), "ipc"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Fprintf(ipc, "{\"event\":\"ready\",\"pid\":%d}\n", os.Getpid())
	for _, f := range files {
		ln, err := net.FileListener(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		io.WriteString(c, f.Name())
		c.Close()
	}
	json.NewEncoder(os.Stdout).Encode(r)
	return 0
}

func TestListenersReachAChildThroughTheTrampoline(t *testing.T) {
	web := mustBind(t, "web=tcp://127.0.0.1:0")
	admin := mustBind(t, "admin=unix://"+filepath.Join(t.TempDir(), "admin.sock"))
	ch, child, err := NewChannel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	plan := PlanWorkerFiles([]*Listener{web, admin}, child, "")

	cmd := helperCommand(t, "trampoline"+testproc.Chain+"activation-child", testBinary(t))
	// Stale values from the master's own environment must not survive.
	cmd.Env = plan.Environ(append(cmd.Env, "LISTEN_PID=1", "NOTIFY_SOCKET=/run/systemd/notify"))
	cmd.ExtraFiles = plan.ExtraFiles
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child.Close()

	// Readiness over IPC, from the very process the master started: exec
	// through the trampoline kept the pid.
	line, err := ch.ReadLine()
	if err != nil {
		t.Fatalf("IPC: %v", err)
	}
	var ready struct {
		Event string
		PID   int
	}
	if json.Unmarshal(line, &ready); ready.Event != "ready" || ready.PID != cmd.Process.Pid {
		t.Fatalf("IPC line %q, want ready from pid %d", line, cmd.Process.Pid)
	}
	for _, l := range []*Listener{web, admin} {
		c, err := net.Dial(l.Addr().Network(), l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(testTimeout))
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(got) != l.Name() {
			t.Fatalf("%s answered %q, %v", l, got, err)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	var r activationReport
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("report %q: %v", stdout.String(), err)
	}
	if r.ListenPID != strconv.Itoa(r.PID) || r.PID != cmd.Process.Pid {
		t.Errorf("LISTEN_PID=%s in pid %d (started as %d)", r.ListenPID, r.PID, cmd.Process.Pid)
	}
	if !slices.Equal(r.Names, []string{"web", "admin"}) || r.EnvAfter != "" || r.Notify != "" {
		t.Errorf("report %+v: want names web, admin; LISTEN_* unset; no NOTIFY_SOCKET", r)
	}
}

func TestTrampolineResolvesPATHAndSetsListenPID(t *testing.T) {
	l := mustBind(t, "tcp://127.0.0.1:0")
	plan := PlanWorkerFiles([]*Listener{l}, nil, "")
	cmd := helperCommand(t, "trampoline", "sh", "-c", `echo "$LISTEN_PID $$ $LISTEN_FDS"`)
	cmd.Env = plan.Environ(cmd.Env)
	cmd.ExtraFiles = plan.ExtraFiles
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(out))
	if len(f) != 3 || f[0] != f[1] || f[0] != strconv.Itoa(cmd.Process.Pid) || f[2] != "1" {
		t.Fatalf("sh printed %q, want its own pid twice and LISTEN_FDS=1", out)
	}

	// Without listeners no LISTEN_PID, even a stale one from the master.
	cmd = helperCommand(t, "trampoline", "sh", "-c", `echo "[${LISTEN_PID-unset}]"`)
	cmd.Env = append(cmd.Env, "LISTEN_PID=1")
	if out, err := cmd.Output(); err != nil || string(out) != "[unset]\n" {
		t.Fatalf("got %q, %v, want LISTEN_PID unset", out, err)
	}
}

func TestTrampolineFailures(t *testing.T) {
	for _, tc := range []struct {
		name string
		argv []string
		env  []string
		want string
	}{
		{"unknown command", []string{"no-such-command-dutchmaster"}, nil, `"no-such-command-dutchmaster": executable file not found in $PATH`},
		{"channel fd not open", []string{"sh", "-c", "true"}, []string{"NODE_CHANNEL_FD=200"}, "inherited fd 200"},
		{"bad count", []string{"sh", "-c", "true"}, []string{"LISTEN_FDS=x"}, `LISTEN_FDS="x" is not a count`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := helperCommand(t, "trampoline", tc.argv...)
			cmd.Env = append(cmd.Env, tc.env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			if err == nil || !strings.Contains(stderr.String(), tc.want) || !strings.HasPrefix(stderr.String(), "exec worker") {
				t.Fatalf("exit %v, stderr %q; want a failure saying %q", err, stderr.String(), tc.want)
			}
		})
	}
	if err := ExecWithListenPID(nil); err == nil || err.Error() != "exec worker: no command" {
		t.Fatalf("ExecWithListenPID(nil) = %v", err)
	}
}
