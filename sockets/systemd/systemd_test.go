package systemd

import (
	"net"
	"os"
	"slices"
	"strconv"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/sockets"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestListenFDs: the variables are taken only when LISTEN_PID is this
// process, and unset in every case.
func TestListenFDs(t *testing.T) {
	set := func(pid int) {
		t.Setenv("LISTEN_FDS", "2")
		t.Setenv("LISTEN_PID", strconv.Itoa(pid))
		t.Setenv("LISTEN_FDNAMES", "http:admin")
	}
	set(os.Getpid())
	got, err := ListenFDs()
	if err != nil {
		t.Fatal(err)
	}
	if want := []Socket{{3, "http"}, {4, "admin"}}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for _, k := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} {
		if _, ok := os.LookupEnv(k); ok {
			t.Errorf("%s still set", k)
		}
	}
	set(os.Getpid() + 1)
	if got, _ := ListenFDs(); got != nil {
		t.Fatalf("took %v meant for another process", got)
	}
	if _, ok := os.LookupEnv("LISTEN_FDS"); ok {
		t.Error("LISTEN_FDS still set")
	}
	set(os.Getpid())
	t.Setenv("LISTEN_PIDFDID", "1")
	if got, _ := ListenFDs(); got != nil {
		t.Fatalf("took %v despite a LISTEN_PIDFDID of another process", got)
	}
}

// TestMatch: sockets pair with specs by name; a spec without one is left
// to bind, a socket nobody named is returned unused; with no specs every
// socket is adopted under its name.
func TestMatch(t *testing.T) {
	listen := func() (net.Listener, int) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		raw, _ := l.(*net.TCPListener).SyscallConn()
		fd := -1
		raw.Control(func(f uintptr) { fd, _ = unix.Dup(int(f)) })
		return l, fd
	}
	httpL, httpFD := listen()
	_, extraFD := listen()
	specs, err := sockets.ParseSpecs([]string{"http=tcp://127.0.0.1:1", "admin=tcp://127.0.0.1:2"})
	if err != nil {
		t.Fatal(err)
	}
	ls, unused, err := Match(specs, []Socket{{extraFD, "other"}, {httpFD, "http"}})
	if err != nil {
		t.Fatal(err)
	}
	if ls[0] == nil || ls[0].Addr().String() != httpL.Addr().String() || ls[1] != nil {
		t.Fatalf("got %v", ls)
	}
	if len(unused) != 1 || unused[0].Name != "other" {
		t.Fatalf("unused %v", unused)
	}
	ls[0].Close()

	_, fd := listen()
	ls, _, err = Match(nil, []Socket{{extraFD, "unknown"}, {fd, "web"}})
	if err != nil || len(ls) != 2 || ls[0].Name() != "listen0" || ls[1].Name() != "web" {
		t.Fatalf("got %v, %v", ls, err)
	}
	for _, l := range ls {
		l.Close()
	}
}
