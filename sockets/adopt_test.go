package sockets

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// dupFD returns a duplicate of a listener's descriptor, as systemd would
// pass it: the caller's copy stays open.
func dupFD(t *testing.T, c syscall.Conn) int {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	raw.Control(func(f uintptr) { fd, err = unix.Dup(int(f)) })
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// TestAdoptTCP: an inherited TCP listener becomes a Listener with its own
// address, the spec's name, close-on-exec and blocking; connections made
// to it are accepted through the adopted descriptor.
func TestAdoptTCP(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l, err := Adopt(dupFD(t, ln.(*net.TCPListener)), Spec{Name: "http", Network: "tcp"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Name() != "http" || l.Addr().String() != ln.Addr().String() || l.Spec().Network != "tcp" {
		t.Fatalf("adopted %s at %s, want http at %s", l, l.Addr(), ln.Addr())
	}
	fd := int(l.File().Fd())
	if flags, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); flags&unix.FD_CLOEXEC == 0 {
		t.Error("adopted descriptor is not close-on-exec")
	}
	if fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); fl&unix.O_NONBLOCK != 0 {
		t.Error("adopted descriptor is non-blocking")
	}
}

// TestAdoptUnixKeepsFile: closing an adopted unix listener leaves its
// socket file, which belongs to whoever created it.
func TestAdoptUnixKeepsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	defer ln.Close()
	l, err := Adopt(dupFD(t, ln), Spec{Name: "app"})
	if err != nil {
		t.Fatal(err)
	}
	if l.Spec().Network != "unix" || l.Addr().String() != path {
		t.Fatalf("adopted %s at %s", l, l.Addr())
	}
	l.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("socket file gone after Close: %v", err)
	}
}

// TestTakeOverUnixOwnsFile: a unix socket the master bound, taken over
// in the new image of an upgrade, is still the master's to remove: Close
// removes its file (and leaves one that replaced it).
func TestTakeOverUnixOwnsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	bound, err := Bind(Spec{Name: "app", Network: "unix", Address: path, Mode: 0o660})
	if err != nil {
		t.Fatal(err)
	}
	l, err := TakeOver(dupFD(t, bound.File()), Spec{Name: "app", Network: "unix"}, true)
	if err != nil {
		t.Fatal(err)
	}
	bound.file.Close() // the old image's copy: gone at the exec, its file left
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("socket file still there after Close of the taken-over listener: %v", err)
	}
}

// TestTakeOverKeepsTheMode: a listener a worker made non-blocking stays
// so when the new image takes it over (Adopt alone would make it blocking
// under the worker).
func TestTakeOverKeepsTheMode(t *testing.T) {
	bound, err := Bind(Spec{Name: "http", Network: "tcp", Address: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer bound.Close()
	fd := dupFD(t, bound.File())
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	l, err := TakeOver(fd, Spec{Name: "http", Network: "tcp"}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil || flags&unix.O_NONBLOCK == 0 {
		t.Fatalf("flags %#x, %v after TakeOver: want O_NONBLOCK kept", flags, err)
	}
}

// TestAdoptRefuses: what is not a listening socket of the wanted kind is
// refused with a reason.
func TestAdoptRefuses(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	file, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	unlistened, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		fd   int
		want Spec
		err  string
	}{
		{"tcp as unix", dupFD(t, tcp.(*net.TCPListener)), Spec{Name: "a", Network: "unix"}, "a tcp4 socket, but --listen a wants unix"},
		{"tcp4 as tcp6", dupFD(t, tcp.(*net.TCPListener)), Spec{Name: "a", Network: "tcp6"}, "wants tcp6"},
		{"udp as tcp", dupFD(t, udp.(*net.UDPConn)), Spec{Name: "a", Network: "tcp"}, "a udp4 socket"},
		{"a file", int(file.Fd()), Spec{Name: "a"}, "not a socket"},
		{"not listening", unlistened, Spec{Name: "a"}, "not listening"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Adopt(c.fd, c.want)
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("got %v, want %q", err, c.err)
			}
			if c.name != "a file" && c.name != "not listening" {
				unix.Close(c.fd) // a refused descriptor stays the caller's
			}
		})
	}
	unix.Close(unlistened)
	// The udp case is adopted fine when nothing is asked of its kind.
	l, err := Adopt(dupFD(t, udp.(*net.UDPConn)), Spec{Name: "dns"})
	if err != nil || l.Spec().Network != "udp4" {
		t.Fatalf("udp: %v, %v", l, err)
	}
	l.Close()
}
