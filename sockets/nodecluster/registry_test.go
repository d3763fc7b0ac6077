package nodecluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/sockets"
)

// tcpQuery is what a worker's listen(port, address) sends (index 0).
func tcpQuery(address string, port int) Query {
	addr, typ := "null", 4
	if address != "" {
		addr = address
		if netip.MustParseAddr(address).Is6() {
			typ = 6
		}
	}
	return Query{Key: fmt.Sprintf("%s:%d:%d:undefined:0", addr, port, typ), Network: "tcp", Address: address, Port: port, IPv6: typ == 6, FD: -1}
}

func newRegistry(t *testing.T, listeners ...*sockets.Listener) *Registry {
	t.Helper()
	r := NewRegistry(listeners)
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r
}

func mustShare(t *testing.T, r *Registry, q Query) Share {
	t.Helper()
	sh := r.Share(q)
	if sh.Err != nil || sh.File == nil || sh.Errno != 0 {
		t.Fatalf("Share(%s) = errno %d (%s): %v", q.Key, sh.Errno, ErrnoName(sh.Errno), sh.Err)
	}
	return sh
}

// workerCopy is what a worker does with a received socket: its own
// descriptor for it (SCM_RIGHTS gives a duplicate), listen(), accept.
func workerCopy(t *testing.T, f *os.File) net.Listener {
	t.Helper()
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 511); err != nil {
		t.Fatal(err)
	}
	dup := os.NewFile(uintptr(fd), "worker copy")
	defer dup.Close()
	ln, err := net.FileListener(dup)
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func mustBind(t *testing.T, spec string) *sockets.Listener {
	t.Helper()
	s, err := sockets.ParseSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	l, err := sockets.Bind(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TestRegistrySharesOneSocketAcrossGenerations is the package's guarantee:
// every query of a key gets the one socket the master bound, and a
// connection that arrives while no worker holds it waits in its queue for
// the next worker.
func TestRegistrySharesOneSocketAcrossGenerations(t *testing.T) {
	r := newRegistry(t)
	q := tcpQuery("127.0.0.1", 0)
	first := mustShare(t, r, q)
	if !first.Bound || first.Type != TypeNetNative || first.Listener != "" {
		t.Errorf("first share %+v: want a socket bound now, net.Native", first)
	}
	again := mustShare(t, r, q)
	if again.File != first.File || again.Bound {
		t.Fatalf("second query of %s got another socket (bound %v)", q.Key, again.Bound)
	}
	other := q
	other.Key = "127.0.0.1:0:4:undefined:1" // a second server on port 0: its own port
	if sh := mustShare(t, r, other); sh.File == first.File {
		t.Fatal("index 1 shares index 0's socket")
	}
	if r.Len() != 2 {
		t.Errorf("Len() = %d, want 2", r.Len())
	}

	addr, err := boundAddr(first.File)
	if err != nil || addr.Addr() != netip.MustParseAddr("127.0.0.1") || addr.Port() == 0 {
		t.Fatalf("bound to %v, %v; want 127.0.0.1 and a picked port", addr, err)
	}
	// Bound, not listening: Node's primary leaves listen() to the worker.
	if c, err := net.DialTimeout("tcp", addr.String(), time.Second); err == nil {
		c.Close()
		t.Fatal("the master's socket accepts connections before any worker listens")
	}

	gen1 := workerCopy(t, first.File)
	c1, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	a1, err := gen1.Accept()
	if err != nil {
		t.Fatal(err)
	}
	a1.Close()
	gen1.Close() // the old worker is gone

	c2, err := net.Dial("tcp", addr.String()) // queued in the master's socket
	if err != nil {
		t.Fatalf("connect with no worker holding the socket: %v", err)
	}
	defer c2.Close()
	gen2 := workerCopy(t, mustShare(t, r, q).File)
	defer gen2.Close()
	a2, err := gen2.Accept()
	if err != nil {
		t.Fatal(err)
	}
	a2.Close()
}

func TestRegistryBindFailure(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := held.Addr().(*net.TCPAddr).Port
	r := newRegistry(t)
	q := tcpQuery("127.0.0.1", port)
	sh := r.Share(q)
	if sh.File != nil || sh.Errno != UVEADDRINUSE || !errors.Is(sh.Err, syscall.EADDRINUSE) {
		t.Fatalf("Share of a held port = %+v, want EADDRINUSE (-98)", sh)
	}
	if string(sh.Data) != "null" && len(sh.Data) != 0 {
		t.Errorf("data %s", sh.Data)
	}
	// The failure is not remembered: once the port is free, the next
	// query binds it.
	held.Close()
	if sh := mustShare(t, r, q); !sh.Bound {
		t.Error("the retry did not bind")
	}
}

func TestRegistryNullAddress(t *testing.T) {
	r := newRegistry(t)
	sh := mustShare(t, r, tcpQuery("", 0))
	addr, err := boundAddr(sh.File)
	if err != nil {
		t.Fatal(err)
	}
	if !addr.Addr().IsUnspecified() || addr.Port() == 0 {
		t.Fatalf("null address bound to %v, want [::] (or 0.0.0.0 without IPv6)", addr)
	}
	if addr.Addr().Is6() {
		raw, _ := sh.File.SyscallConn()
		v6only := -1
		raw.Control(func(fd uintptr) { v6only, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY) })
		if v6only != 0 {
			t.Errorf("[::] has IPV6_V6ONLY=%d, want dual-stack", v6only)
		}
	}
	if sh.Where != "tcp://"+addr.String() {
		t.Errorf("Where = %q, want tcp://%s", sh.Where, addr)
	}
}

func TestRegistryIPv6(t *testing.T) {
	probe, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	probe.Close()
	r := newRegistry(t)
	q := tcpQuery("::1", 0)
	q.Flags = FlagIPv6Only
	sh := mustShare(t, r, q)
	ln := workerCopy(t, sh.File)
	defer ln.Close()
	c, err := net.Dial("tcp6", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestRegistryAddressTypeMismatch(t *testing.T) {
	r := newRegistry(t)
	q := tcpQuery("127.0.0.1", 0)
	q.IPv6 = true // listen(port, '127.0.0.1') never sends 6; Node's bind6 refuses it
	if sh := r.Share(q); sh.Errno != UVEINVAL {
		t.Fatalf("IPv4 address with address type 6: errno %d, want EINVAL", sh.Errno)
	}
}

func TestRegistryUDP(t *testing.T) {
	r := newRegistry(t)
	q := Query{Key: "127.0.0.1:0:udp4:-1:0", Network: "udp", Address: "127.0.0.1", FD: -1, Flags: FlagReuseAddr}
	sh := mustShare(t, r, q)
	if sh.Type != TypeDgramNative {
		t.Fatalf("type %q, want dgram.Native", sh.Type)
	}
	addr, err := boundAddr(sh.File)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Dup(int(sh.File.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.FilePacketConn(os.NewFile(uintptr(fd), "worker copy"))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, err := net.Dial("udp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 8)
	n, _, err := pc.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	q6 := Query{Key: "127.0.0.1:0:udp6:-1:0", Network: "udp", Address: "127.0.0.1", IPv6: true, FD: -1}
	if sh := r.Share(q6); sh.Errno != UVEINVAL {
		t.Errorf("udp6 with an IPv4 address: errno %d, want EINVAL", sh.Errno)
	}
}

func TestRegistryUnix(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.sock")
	r := newRegistry(t)
	q := Query{Key: path + ":-1:-1:undefined:0", Network: "unix", Address: path, Port: -1, FD: -1}
	sh := mustShare(t, r, q)
	if sh.Type != TypeNetNative || sh.Where != "unix://"+path {
		t.Errorf("share %+v", sh)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != fs.ModeSocket {
		t.Fatalf("socket file: %v, %v", fi, err)
	}
	ln := workerCopy(t, sh.File)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	ln.Close()

	// Something that is not a socket at the path: EADDRINUSE, as Node's
	// bind(2) would say.
	taken := filepath.Join(dir, "data")
	if err := os.WriteFile(taken, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := Query{Key: taken + ":-1:-1:undefined:0", Network: "unix", Address: taken, Port: -1, FD: -1}
	if sh := r.Share(bad); sh.Errno != UVEADDRINUSE {
		t.Errorf("regular file at the path: errno %d (%v), want EADDRINUSE", sh.Errno, sh.Err)
	}

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Close left the socket file: %v", err)
	}
	if sh := r.Share(q); !errors.Is(sh.Err, ErrClosed) || sh.File != nil {
		t.Errorf("Share after Close = %+v", sh)
	}
}

// TestRegistryReusesListenListeners: the operator's --listen decides
// where a listen(PORT) listens; a query by descriptor gets the listener
// the worker inherited there.
func TestRegistryReusesListenListeners(t *testing.T) {
	web := mustBind(t, "web=tcp://127.0.0.1:0")
	metrics := mustBind(t, "metrics=udp://127.0.0.1:0")
	sock := mustBind(t, "unix://"+filepath.Join(t.TempDir(), "s.sock"))
	r := newRegistry(t, web, metrics, sock)
	port := web.Addr().(*net.TCPAddr).Port

	for _, q := range []Query{tcpQuery("", port), tcpQuery("127.0.0.1", port), tcpQuery("0.0.0.0", port)} {
		if sh := mustShare(t, r, q); sh.File != web.File() || sh.Listener != "web" || sh.Bound {
			t.Errorf("%s: got %+v, want the web listener", q.Key, sh)
		}
	}
	if sh := mustShare(t, r, tcpQuery("127.0.0.2", port)); sh.File == web.File() {
		t.Error("a query for another address got the web listener")
	}
	udp := Query{Key: "0.0.0.0:x", Network: "udp", Address: "0.0.0.0", Port: metrics.Addr().(*net.UDPAddr).Port, FD: -1}
	if sh := mustShare(t, r, udp); sh.File != metrics.File() || sh.Type != TypeDgramNative {
		t.Errorf("udp: got %+v, want the metrics listener", sh)
	}
	path := sock.Addr().String()
	if sh := mustShare(t, r, Query{Key: path, Network: "unix", Address: path, Port: -1, FD: -1}); sh.File != sock.File() {
		t.Errorf("unix: got %+v, want the --listen unix listener", sh)
	}

	for _, tc := range []struct {
		q     Query
		want  *sockets.Listener
		errno int
	}{
		{Query{Key: "fd3", Network: "tcp", FD: 3}, web, 0},
		{Query{Key: "fd4", Network: "udp", FD: 4}, metrics, 0},
		{Query{Key: "fd5", Network: "tcp", FD: 5}, sock, 0},
		{Query{Key: "fd4tcp", Network: "tcp", FD: 4}, nil, UVEINVAL}, // a UDP socket for listen()
		{Query{Key: "fd6", Network: "tcp", FD: 6}, nil, UVEINVAL},    // the channel, or nothing
		{Query{Key: "fd0", Network: "tcp", FD: 0}, nil, UVEINVAL},
	} {
		sh := r.Share(tc.q)
		if sh.Errno != tc.errno || (tc.want != nil && sh.File != tc.want.File()) {
			t.Errorf("fd %d: got errno %d file %v (%v), want errno %d, %v", tc.q.FD, sh.Errno, sh.File, sh.Err, tc.errno, tc.want)
		}
	}

	// Close leaves the --listen listeners to their owner.
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp", web.Addr().String()); err != nil {
		t.Errorf("the web listener was closed with the registry: %v", err)
	} else {
		c.Close()
	}
}

// TestRegistryData: the first truthy data of a key is echoed to every
// worker (TLS session ticket keys), as Node's primary does.
func TestRegistryData(t *testing.T) {
	r := newRegistry(t)
	q := tcpQuery("127.0.0.1", 0)
	for i, tc := range []struct{ give, want string }{
		{"null", "null"},
		{`{"k":1}`, `{"k":1}`},
		{`{"k":2}`, `{"k":1}`},
		{"", `{"k":1}`},
	} {
		q.Data = nil
		if tc.give != "" {
			q.Data = json.RawMessage(tc.give)
		}
		if sh := mustShare(t, r, q); string(sh.Data) != tc.want {
			t.Errorf("query %d with data %s: echoed %s, want %s", i, tc.give, sh.Data, tc.want)
		}
	}
}

// TestRegistrySocketsAreNonBlocking: every shared socket is non-blocking,
// as libuv's are. A Node worker woken for a connection another worker
// accepted first must get EAGAIN from accept(2), not block its event loop
// (where it would never read its disconnect). os/exec's File.Fd at every
// fork must not undo it.
func TestRegistrySocketsAreNonBlocking(t *testing.T) {
	web := mustBind(t, "web=tcp://127.0.0.1:0")
	r := newRegistry(t, web)
	dir := t.TempDir()
	for _, q := range []Query{
		tcpQuery("127.0.0.1", 0),
		{Key: "udp", Network: "udp", Address: "127.0.0.1", FD: -1},
		{Key: "unix", Network: "unix", Address: filepath.Join(dir, "u.sock"), Port: -1, FD: -1},
		{Key: "fd3", Network: "tcp", FD: 3},
	} {
		sh := mustShare(t, r, q)
		_ = sh.File.Fd() // what os/exec does with ExtraFiles
		fd, err := unix.Dup(int(sh.File.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK == 0 {
			t.Errorf("%s: flags %#x, %v: want O_NONBLOCK", q.Key, fl, err)
		}
		if q.Network != "udp" {
			if err := unix.Listen(fd, 8); err != nil {
				t.Fatal(err)
			}
			if _, _, err := unix.Accept(fd); err != unix.EAGAIN {
				t.Errorf("%s: accept with nothing queued: %v, want EAGAIN", q.Key, err)
			}
		}
		unix.Close(fd)
	}
}
