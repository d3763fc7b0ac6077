package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster/sockets"
	"github.com/dutchmaster/dutchmaster/sockets/testproc"
)

// fakeEnviron is an environment in a map, with a fixed pid.
func fakeEnviron(vars map[string]string, pid int) environ {
	return environ{
		lookup: func(k string) (string, bool) { v, ok := vars[k]; return v, ok },
		unset:  func(k string) { delete(vars, k) },
		pid:    func() int { return pid },
	}
}

func TestClaimRefusals(t *testing.T) {
	for _, tc := range []struct {
		name    string
		vars    map[string]string
		sockErr string // "" = ErrNotActivated exactly
		chErr   string
	}{
		{"nothing inherited", map[string]string{}, "", ""},
		{"LISTEN_PID of another process", map[string]string{"LISTEN_FDS": "1", "LISTEN_PID": "99"}, "LISTEN_PID=99 is not this process (pid 42)", ""},
		{"LISTEN_PID missing", map[string]string{"LISTEN_FDS": "1"}, "LISTEN_PID is not", ""},
		{"bad count", map[string]string{"LISTEN_FDS": "x", "LISTEN_PID": "42"}, `LISTEN_FDS="x" is not a count`, ""},
		{"zero count", map[string]string{"LISTEN_FDS": "0", "LISTEN_PID": "42"}, `LISTEN_FDS="0" is not a count`, ""},
		{"advanced serialization", map[string]string{"NODE_CHANNEL_FD": "3", "NODE_CHANNEL_SERIALIZATION_MODE": "advanced"}, "", `"advanced" is not supported`},
		{"bad channel fd", map[string]string{"NODE_CHANNEL_FD": "-1"}, "", `NODE_CHANNEL_FD="-1" is not a descriptor`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vars := tc.vars
			vars["LISTEN_FDNAMES"], vars["LISTEN_PIDFDID"], vars["NOTIFY_SOCKET"] = "web", "5", "/run/n.sock"
			in := claim(fakeEnviron(vars, 42))
			if tc.sockErr == "" {
				if in.socketsErr != ErrNotActivated {
					t.Errorf("sockets: %v, want ErrNotActivated", in.socketsErr)
				}
			} else if !strings.Contains(fmt.Sprint(in.socketsErr), tc.sockErr) {
				t.Errorf("sockets: %v, want %q", in.socketsErr, tc.sockErr)
			}
			if strings.Contains(tc.sockErr, "LISTEN_PID") && !errors.Is(in.socketsErr, ErrNotActivated) {
				t.Errorf("%v does not wrap ErrNotActivated", in.socketsErr)
			}
			if tc.chErr == "" && (in.chErr != nil || in.ch != nil) || tc.chErr != "" && !strings.Contains(fmt.Sprint(in.chErr), tc.chErr) {
				t.Errorf("channel: %v, want %q", in.chErr, tc.chErr)
			}
			if in.notifyAddr != "/run/n.sock" {
				t.Errorf("notify address %q", in.notifyAddr)
			}
			if len(vars) != 0 {
				t.Errorf("left in the environment: %v", vars)
			}
		})
	}
}

// pair returns a connected unix stream socket pair: the worker's end as a
// channel, the master's as a conn.
func pair(t *testing.T) (*channel, *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]*net.UnixConn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "pair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c.(*net.UnixConn)
		t.Cleanup(func() { c.Close() })
	}
	return &channel{conn: conns[0]}, conns[1]
}

func waitClosed(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(testTimeout):
		t.Fatalf("%s did not close Drained", what)
	}
}

func TestDrainedOnDisconnectMessage(t *testing.T) {
	ch, master := pair(t)
	in := &inherited{ch: ch, drained: make(chan struct{})}
	in.watch(false)
	master.Write([]byte(`{"event":"hello"}` + "\n" + strings.Repeat("x", 2<<20) + "\nnot json\n"))
	select {
	case <-in.drained:
		t.Fatal("drained by a message that is not a disconnect")
	default:
	}
	master.Write([]byte(`{"event":"disconnect"}` + "\n"))
	waitClosed(t, in.drained, "a disconnect message")
	master.Close() // ends the watcher
}

func TestDrainedOnEOF(t *testing.T) {
	ch, master := pair(t)
	in := &inherited{ch: ch, drained: make(chan struct{})}
	in.watch(false)
	master.CloseWrite()
	waitClosed(t, in.drained, "EOF on the channel")
}

func TestReadyAndRequestRestartOverIPC(t *testing.T) {
	ch, master := pair(t)
	in := &inherited{ch: ch, notifyAddr: "/nonexistent", drained: make(chan struct{})}
	for range 3 {
		if err := in.ready(); err != nil {
			t.Fatal(err)
		}
	}
	if err := in.ch.send(map[string]string{"event": "request-restart"}); err != nil {
		t.Fatal(err)
	}
	master.SetReadDeadline(time.Now().Add(testTimeout))
	buf := make([]byte, 100)
	n, _ := master.Read(buf)
	if got := string(buf[:n]); got != "{\"event\":\"ready\"}\n{\"event\":\"request-restart\"}\n" {
		t.Fatalf("master read %q: want one ready (IPC preferred, sent once), then the restart request", got)
	}
	master.Close()
	if err := in.ch.send("x"); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("send after the master closed: %v, want ErrDisconnected", err)
	}
}

func TestReadyOverNotifySocket(t *testing.T) {
	ns, err := sockets.NewNotifySocket()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	in := &inherited{notifyAddr: ns.Path()}
	if err := in.ready(); err != nil {
		t.Fatal(err)
	}
	n, err := ns.Read()
	if err != nil || !n.Ready() || n.PID != os.Getpid() {
		t.Fatalf("got %+v, %v, want READY=1 from this process", n, err)
	}
	if err := (&inherited{}).ready(); err != nil {
		t.Fatalf("Ready without master: %v, want nil", err)
	}
	if err := (&inherited{}).noChannel(); err != ErrNoChannel {
		t.Fatalf("no channel: %v", err)
	}
}

func init() {
	testproc.Register("claim", claimHelper)
	testproc.Register("sigterm", func([]string) int {
		d := Drained()
		fmt.Println("watching")
		<-d
		fmt.Println("drained")
		return 0
	})
}

// claimReport is what the claim helper saw.
type claimReport struct {
	Names, Kinds []string
	FDs          []int
	Env          string
	Inheritable  []int
	Err          string
}

func claimHelper([]string) int {
	var r claimReport
	socks, err := Sockets()
	if err != nil {
		r.Err = err.Error()
	}
	for _, s := range socks {
		r.Names, r.FDs = append(r.Names, s.Name), append(r.FDs, s.FD)
		if s.Listener != nil {
			r.Kinds = append(r.Kinds, "listener:"+s.Listener.Addr().Network())
		} else {
			r.Kinds = append(r.Kinds, "packet:"+s.PacketConn.LocalAddr().Network())
		}
	}
	// Descriptors a grandchild would inherit (this test binary may itself
	// have inherited some from whoever ran it: only 3, 4 and 5 matter).
	entries, _ := os.ReadDir("/proc/self/fd")
	for _, e := range entries {
		fd, _ := strconv.Atoi(e.Name())
		flags, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFD, 0)
		if fd > 2 && errno == 0 && flags&syscall.FD_CLOEXEC == 0 {
			r.Inheritable = append(r.Inheritable, fd)
		}
	}
	for _, k := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NODE_CHANNEL_FD", "NODE_CHANNEL_SERIALIZATION_MODE", "NOTIFY_SOCKET"} {
		r.Env += os.Getenv(k)
	}
	if err := Ready(); err != nil {
		r.Err += " ready: " + err.Error()
	}
	if err := RequestRestart(); err != nil {
		r.Err += " restart: " + err.Error()
	}
	if _, err := Listener("dns"); err == nil {
		r.Err += " Listener(dns) accepted a datagram socket"
	}
	if _, err := Listener("nope"); err == nil || !strings.Contains(err.Error(), "have web, dns") {
		r.Err += fmt.Sprintf(" Listener(nope): %v", err)
	}
	json.NewEncoder(os.Stdout).Encode(r)
	return 0
}

func TestClaimInAWorker(t *testing.T) {
	web, err := sockets.Bind(sockets.Spec{Name: "web", Network: "tcp", Address: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer web.Close()
	dns, err := sockets.Bind(sockets.Spec{Name: "dns", Network: "udp", Address: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	cmd, ch, out := startWorker(t, []*sockets.Listener{web, dns}, true, []string{"NOTIFY_SOCKET=/nonexistent"}, "claim")
	ipc := ipcLines(ch)
	for _, want := range []string{`{"event":"ready"}`, `{"event":"request-restart"}`} {
		select {
		case got := <-ipc:
			if got != want {
				t.Fatalf("IPC %q, want %q", got, want)
			}
		case <-time.After(testTimeout):
			t.Fatalf("no %s on IPC", want)
		}
	}
	var r claimReport
	select {
	case line := <-out:
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("report %q: %v", line, err)
		}
	case <-time.After(testTimeout):
		t.Fatal("no report")
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if r.Err != "" {
		t.Fatalf("worker: %s", r.Err)
	}
	if !slices.Equal(r.Names, []string{"web", "dns"}) || !slices.Equal(r.Kinds, []string{"listener:tcp", "packet:udp"}) || !slices.Equal(r.FDs, []int{3, 4}) {
		t.Errorf("report %+v", r)
	}
	// Nothing the master passed (listeners at 3 and 4, the channel at 5)
	// may reach a grandchild.
	if r.Env != "" || slices.ContainsFunc(r.Inheritable, func(fd int) bool { return fd >= 3 && fd <= 5 }) {
		t.Errorf("protocol variables left %q; descriptors a grandchild would inherit: %v", r.Env, r.Inheritable)
	}
}

func TestDrainedOnSIGTERM(t *testing.T) {
	cmd, _, out := startWorker(t, nil, false, nil, "sigterm")
	await(t, out, "watching")
	cmd.Process.Signal(syscall.SIGTERM)
	await(t, out, "drained")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("worker: %v (SIGTERM must drain, not kill)", err)
	}
}

func TestNoSupervisorImportsInTheWorkerPackage(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool in PATH")
	}
	out, err := exec.Command(goTool, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range strings.Fields(string(out)) {
		if p != "github.com/dutchmaster/dutchmaster/sockets/worker" && p != "github.com/dutchmaster/dutchmaster/sockets/wire" {
			t.Errorf("the worker package depends on %s; applications would link it", p)
		}
	}
}
