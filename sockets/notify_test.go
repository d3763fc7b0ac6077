package sockets

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

func init() {
	// notify-send: send args[0] with go-systemd's client, as a real worker
	// library would.
	helpers["notify-send"] = func(args []string) int {
		if ok, err := daemon.SdNotify(true, args[0]); !ok || err != nil {
			os.Stderr.WriteString("sd_notify failed\n")
			return 1
		}
		if os.Getenv("NOTIFY_SOCKET") != "" {
			return 3 // unsetEnv=true must have cleared it
		}
		return 0
	}
}

func newTestNotifySocket(t *testing.T) *NotifySocket {
	t.Helper()
	ns, err := NewNotifySocket(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// readNotification reads one datagram, failing the test after testTimeout.
func readNotification(t *testing.T, ns *NotifySocket) (Notification, error) {
	t.Helper()
	type result struct {
		n   Notification
		err error
	}
	c := make(chan result, 1)
	go func() {
		n, err := ns.Read()
		c <- result{n, err}
	}()
	select {
	case r := <-c:
		return r.n, r.err
	case <-time.After(testTimeout):
		ns.Close()
		t.Fatal("no notify datagram")
		return Notification{}, nil
	}
}

func TestNotifyFromChildCarriesItsPID(t *testing.T) {
	ns := newTestNotifySocket(t)
	if fi, err := os.Lstat(ns.Path()); err != nil || fi.Mode().Type() != fs.ModeSocket {
		t.Fatalf("Path %s: %v, %v", ns.Path(), fi, err)
	}
	cmd := helperCommand(t, "notify-send", "READY=1\nSTATUS=serving 3 listeners")
	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+ns.Path())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n, err := readNotification(t, ns)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if n.PID != cmd.Process.Pid || n.UID != os.Getuid() {
		t.Errorf("sender pid %d uid %d, want the child's %d, %d", n.PID, n.UID, cmd.Process.Pid, os.Getuid())
	}
	if status, _ := n.Status(); !n.Ready() || status != "serving 3 listeners" {
		t.Errorf("got %+v, want READY=1 and the status", n)
	}
}

// send writes one datagram to the notify socket from this process, with
// optional descriptors attached.
func send(t *testing.T, ns *NotifySocket, payload []byte, fds ...int) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(fd, payload, oob, &unix.SockaddrUnix{Name: ns.Path()}, 0); err != nil {
		t.Fatal(err)
	}
}

func TestNotifyOversizedDatagram(t *testing.T) {
	ns := newTestNotifySocket(t)
	send(t, ns, []byte("STATUS="+strings.Repeat("x", MaxNotifyDatagram)))
	send(t, ns, []byte("WATCHDOG=1"))
	n, err := readNotification(t, ns)
	if !errors.Is(err, ErrDatagramTooLarge) || n.PID != os.Getpid() || n.Payload != "" {
		t.Fatalf("oversized: %+v, %v; want ErrDatagramTooLarge with the sender and no payload", n, err)
	}
	n, err = readNotification(t, ns)
	if err != nil || !n.Watchdog() {
		t.Fatalf("the next datagram: %+v, %v", n, err)
	}
}

func TestNotifyClosesPassedDescriptors(t *testing.T) {
	ns := newTestNotifySocket(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	send(t, ns, []byte("FDSTORE=1\nFDNAME=x"), int(w.Fd()))
	w.Close()
	n, err := readNotification(t, ns)
	if err != nil || n.PID != os.Getpid() {
		t.Fatalf("got %+v, %v", n, err)
	}
	// If the master had kept the passed write end, this read would block.
	r.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := r.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("pipe read: %v; the passed descriptor was leaked", err)
	}
}

func TestNotifyClose(t *testing.T) {
	ns, err := NewNotifySocket(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := ns.Read()
		errc <- err
	}()
	if err := ns.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close: %v, want net.ErrClosed", err)
	}
	if _, err := os.Lstat(ns.Path()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Close left %s: %v", ns.Path(), err)
	}
}

func TestNewNotifySocketErrors(t *testing.T) {
	dir := t.TempDir() + "/missing"
	if _, err := NewNotifySocket(dir); err == nil || !strings.Contains(err.Error(), "directory "+dir+" does not exist") {
		t.Fatalf("missing dir: %v", err)
	}
	long := t.TempDir() + "/" + strings.Repeat("d", 100)
	if _, err := NewNotifySocket(long); err == nil || !strings.Contains(err.Error(), "use a shorter directory") {
		t.Fatalf("long dir: %v", err)
	}
}

func TestParseNotify(t *testing.T) {
	n := Notification{Assignments: ParseNotify("READY=1\n\nSTATUS=a=b c\ngarbage\n=x\nSTATUS=second\nWATCHDOG=trigger\nSTOPPING=1\n")}
	want := []Assignment{{"READY", "1"}, {"STATUS", "a=b c"}, {"STATUS", "second"}, {"WATCHDOG", "trigger"}, {"STOPPING", "1"}}
	if len(n.Assignments) != len(want) {
		t.Fatalf("got %q, want %q", n.Assignments, want)
	}
	for i := range want {
		if n.Assignments[i] != want[i] {
			t.Fatalf("got %q, want %q", n.Assignments, want)
		}
	}
	if status, _ := n.Status(); status != "second" {
		t.Errorf("Status = %q, want the last one", status)
	}
	if !n.Ready() || !n.Stopping() || n.Watchdog() {
		t.Errorf("Ready %v Stopping %v Watchdog %v, want true true false (WATCHDOG=trigger is no ping)", n.Ready(), n.Stopping(), n.Watchdog())
	}
	if (Notification{Assignments: ParseNotify("READY=0")}).Ready() {
		t.Error("READY=0 read as ready")
	}
}
