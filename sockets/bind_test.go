package sockets

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func mustSpec(t *testing.T, s string) Spec {
	t.Helper()
	spec, err := ParseSpec(s)
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func mustBind(t *testing.T, s string) *Listener {
	t.Helper()
	l, err := Bind(mustSpec(t, s))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// fdFlags returns the descriptor flags (FD_CLOEXEC) and status flags
// (O_NONBLOCK) of f.
func fdFlags(t *testing.T, f *os.File) (cloexec, nonblock bool) {
	t.Helper()
	raw, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	raw.Control(func(fd uintptr) {
		fdfl, _ := unix.FcntlInt(fd, unix.F_GETFD, 0)
		fl, _ := unix.FcntlInt(fd, unix.F_GETFL, 0)
		cloexec, nonblock = fdfl&unix.FD_CLOEXEC != 0, fl&unix.O_NONBLOCK != 0
	})
	return
}

func TestBindTCP(t *testing.T) {
	l := mustBind(t, "web=tcp://127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	if port == 0 {
		t.Fatalf("Addr() = %v, want the picked port", l.Addr())
	}
	if cloexec, nonblock := fdFlags(t, l.File()); !cloexec || nonblock {
		t.Errorf("master's copy: close-on-exec %v (want true), non-blocking %v (want false)", cloexec, nonblock)
	}
	if l.Name() != "web" || l.Spec().Network != "tcp" {
		t.Errorf("Name %q, Spec %+v", l.Name(), l.Spec())
	}

	// The master's copy really listens: a connection waits in its queue and
	// a duplicate of the file accepts it.
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ln, err := net.FileListener(l.File())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	// Binding the same port again fails with the errno and a plain message.
	_, err = Bind(mustSpec(t, fmt.Sprintf("tcp://127.0.0.1:%d", port)))
	want := fmt.Sprintf("tcp://127.0.0.1:%d: address already in use", port)
	if err == nil || err.Error() != want || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("second bind: %v, want %q matching EADDRINUSE", err, want)
	}
}

func TestBindTCP6(t *testing.T) {
	probe, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	probe.Close()
	l := mustBind(t, "tcp6://[::1]:0")
	conn, err := net.Dial("tcp6", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
}

func TestBindUDP(t *testing.T) {
	l := mustBind(t, "udp://127.0.0.1:0")
	pc, err := net.FilePacketConn(l.File())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, err := net.Dial("udp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, _, err := pc.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("ReadFrom = %q, %v", buf[:n], err)
	}
}

func TestBindAllClosesOnFailure(t *testing.T) {
	taken := mustBind(t, "tcp://127.0.0.1:0")
	first := mustSpec(t, "tcp://127.0.0.1:0")
	dir := t.TempDir()
	sock := mustSpec(t, "unix://"+filepath.Join(dir, "a.sock"))
	clash := mustSpec(t, "tcp://"+taken.Addr().String())
	_, err := BindAll([]Spec{first, sock, clash})
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("BindAll: %v, want address already in use", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "a.sock")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the unix listener bound before the failure was not closed: %v", err)
	}

	ls, err := BindAll([]Spec{first, sock})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	if ls[0].Name() != "listen0" || ls[1].Name() != "listen1" {
		t.Errorf("names %q, %q, want default names by position", ls[0].Name(), ls[1].Name())
	}
}

func TestBindUnix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	l := mustBind(t, "unix://"+path+"?mode=0604")
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o604 {
		t.Errorf("socket file mode %v, want a socket with 0604", fi.Mode())
	}
	if cloexec, nonblock := fdFlags(t, l.File()); !cloexec || nonblock {
		t.Errorf("close-on-exec %v (want true), non-blocking %v (want false)", cloexec, nonblock)
	}
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial the bound socket: %v", err)
	}
	conn.Close()

	// Someone accepts on it: a second bind is refused and leaves it alone.
	_, err = Bind(mustSpec(t, "unix://"+path))
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("bind over a live socket: %v, want in use", err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("the live socket's file was touched: %v", err)
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Close left the socket file: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestBindUnixDefaultMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.sock")
	old := syscall.Umask(0o077) // the mode must not depend on the umask
	defer syscall.Umask(old)
	mustBind(t, "unix://"+path)
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Perm() != DefaultUnixMode {
		t.Fatalf("mode %v, %v, want %v", fi.Mode(), err, DefaultUnixMode)
	}
	// A Spec built in code, without a mode, gets the default too.
	other := filepath.Join(filepath.Dir(path), "e.sock")
	l, err := Bind(Spec{Network: "unix", Address: other})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if fi, err := os.Lstat(other); err != nil || fi.Mode().Perm() != DefaultUnixMode {
		t.Fatalf("zero Mode: %v, %v, want %v", fi.Mode(), err, DefaultUnixMode)
	}
}

func TestBindUnixReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stale.sock")
	// A socket file left behind by a dead server: bound, never removed.
	old, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	old.(*net.UnixListener).SetUnlinkOnClose(false)
	old.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatal("setup: the stale socket file is missing")
	}

	mustBind(t, "unix://"+path)
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial after replacing the stale socket: %v", err)
	}
	conn.Close()
}

func TestBindUnixRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data.sock")
	if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Bind(mustSpec(t, "unix://"+path))
	if err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Fatalf("bind over a regular file: %v, want a refusal", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "precious" {
		t.Fatal("the regular file was replaced")
	}
}

func TestBindUnixMissingDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nope")
	_, err := Bind(mustSpec(t, "unix://"+dir+"/a.sock"))
	want := "unix://" + dir + "/a.sock: directory " + dir + " does not exist"
	if err == nil || err.Error() != want || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("got %v\nwant %s", err, want)
	}
}

func TestBindUnixUnwritableDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	spec := mustSpec(t, "unix://"+dir+"/a.sock")
	var err error
	withoutDACOverride(t, func() { _, err = Bind(spec) })
	if !errors.Is(err, syscall.EACCES) || !strings.Contains(err.Error(), "permission denied creating the socket file in "+dir) {
		t.Fatalf("got %v, want permission denied naming %s", err, dir)
	}
}

// withoutDACOverride runs fn so that file permissions apply even when the
// tests run as root: on a dedicated OS thread that drops the capabilities
// which bypass them. The thread is never reused (the goroutine exits locked,
// so the runtime terminates it).
func withoutDACOverride(t *testing.T, fn func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		fn()
		return
	}
	done := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			done <- err
			return
		}
		for _, c := range []uint{unix.CAP_DAC_OVERRIDE, unix.CAP_DAC_READ_SEARCH, unix.CAP_FOWNER} {
			data[c/32].Effective &^= 1 << (c % 32)
		}
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			done <- err
			return
		}
		fn()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Skipf("cannot drop capabilities: %v", err)
	}
}

func TestCloseKeepsSomeoneElsesSocketFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shared.sock")
	first := mustBind(t, "unix://"+path)
	// An operator removes the file and a new server binds the same path.
	os.Remove(path)
	mustBind(t, "unix://"+path)
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("closing the old listener removed the new server's socket file: %v", err)
	}
}

func TestBindErrorsNameTheSpec(t *testing.T) {
	_, err := Bind(mustSpec(t, "tcp://192.0.2.1:0")) // TEST-NET-1: on no interface
	if err == nil || !strings.HasPrefix(err.Error(), "tcp://192.0.2.1:0: ") || !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Fatalf("got %v, want tcp://192.0.2.1:0: cannot assign requested address", err)
	}
}
