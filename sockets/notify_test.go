package sockets

import (
	"errors"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/dutchmaster/dutchmaster/sockets/testproc"
	"golang.org/x/sys/unix"
)

func init() {
	// notify-send: send args[0] with go-systemd's client, as a real worker
	// library would.
	testproc.Register("notify-send", func(args []string) int {
		if ok, err := daemon.SdNotify(true, args[0]); !ok || err != nil {
			os.Stderr.WriteString("sd_notify failed\n")
			return 1
		}
		if os.Getenv("NOTIFY_SOCKET") != "" {
			return 3 // unsetEnv=true must have cleared it
		}
		return 0
	})
}

func newTestNotifySocket(t *testing.T) *NotifySocket {
	t.Helper()
	ns, err := NewNotifySocket()
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
	if !notifyAddress.MatchString(ns.Path()) {
		t.Fatalf("Path %q, want @dutchmaster-notify-<32 hex>", ns.Path())
	}
	// go-systemd's client reads the leading '@' as the abstract namespace.
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

// notifyAddress is the form of every notify socket's address.
var notifyAddress = regexp.MustCompile(`^@dutchmaster-notify-[0-9a-f]{32}$`)

// TestNotifyClose: Close ends a blocked Read and frees the name: nothing
// receives on it any more, and it can be bound again.
func TestNotifyClose(t *testing.T) {
	ns, err := NewNotifySocket()
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
	if _, err := net.Dial("unixgram", ns.Path()); !errors.Is(err, unix.ECONNREFUSED) {
		t.Fatalf("dial %s after Close: %v, want connection refused", ns.Path(), err)
	}
	again, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ns.Path(), Net: "unixgram"})
	if err != nil {
		t.Fatalf("binding %s after Close: %v", ns.Path(), err)
	}
	again.Close()
}

// TestNewNotifySocketDrawsAgainWhenTaken: a name some other socket holds
// is passed over for a fresh one; when every name drawn is taken, the
// error says which and why.
func TestNewNotifySocketDrawsAgainWhenTaken(t *testing.T) {
	squatter := newTestNotifySocket(t)
	draw := newNotifyName
	t.Cleanup(func() { newNotifyName = draw })

	drawn := 0
	newNotifyName = func() string {
		drawn++
		if drawn == 1 {
			return squatter.Path()
		}
		return draw()
	}
	ns := newTestNotifySocket(t)
	if drawn != 2 || ns.Path() == squatter.Path() || !notifyAddress.MatchString(ns.Path()) {
		t.Fatalf("%d names drawn, got %q (taken: %q); want a second, fresh one", drawn, ns.Path(), squatter.Path())
	}
	send(t, ns, []byte("READY=1"))
	if n, err := readNotification(t, ns); err != nil || !n.Ready() {
		t.Fatalf("the fresh socket read %+v, %v", n, err)
	}

	drawn = 0
	newNotifyName = func() string { drawn++; return squatter.Path() }
	if _, err := NewNotifySocket(); !errors.Is(err, unix.EADDRINUSE) || !strings.Contains(err.Error(), squatter.Path()) {
		t.Fatalf("every name taken: %v, want address in use naming %s", err, squatter.Path())
	}
	if drawn != notifyBindAttempts {
		t.Errorf("%d names drawn, want %d", drawn, notifyBindAttempts)
	}
}
