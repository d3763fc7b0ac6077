package control

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	ctl "github.com/dutchmaster/dutchmaster/sockets/control"
)

// TestUpgradeCommand: an accepted upgrade is answered with the master's
// pid, its version and the binary, and only then does the exec run
// (UpgradeStarted.Exec); a refusal is the reply's error as the
// Supervisor gave it; a relative binary is refused before the
// Supervisor is asked; a Supervisor that cannot upgrade refuses.
func TestUpgradeCommand(t *testing.T) {
	st := start(t, 1, Options{})
	c := dial(t, st.path)

	rep, err := c.Do(ctl.Request{Command: ctl.CommandUpgrade, Binary: "/opt/new/dutchmaster"})
	if err != nil || rep.OK || rep.Error != "upgrade refused: not in this test" {
		t.Fatalf("refused: %+v %v", rep, err)
	}
	rep, err = c.Do(ctl.Request{Command: ctl.CommandUpgrade, Binary: "bin/dutchmaster"})
	if err != nil || rep.OK || !strings.Contains(rep.Error, `binary "bin/dutchmaster": want an absolute path`) {
		t.Fatalf("relative binary: %+v %v", rep, err)
	}

	replied := make(chan struct{})
	execd := make(chan bool, 1)
	st.f.mu.Lock()
	st.f.upgrade = func(binary string) (UpgradeStarted, error) {
		if binary == "" {
			binary = "/proc/self/exe"
		}
		return UpgradeStarted{Version: "v1.2.0", Binary: binary, Exec: func() {
			// The exec must not cut the reply short: the client has it
			// before the exec runs.
			select {
			case <-replied:
				execd <- true
			case <-time.After(patience):
				execd <- false
			}
		}}, nil
	}
	st.f.mu.Unlock()
	rep, err = c.Do(ctl.Request{Command: ctl.CommandUpgrade})
	close(replied)
	if err != nil || !rep.OK || rep.Upgrade == nil || *rep.Upgrade != (ctl.UpgradeAccepted{PID: os.Getpid(), Version: "v1.2.0", Binary: "/proc/self/exe"}) {
		t.Fatalf("accepted: %+v %+v %v", rep, rep.Upgrade, err)
	}
	select {
	case ok := <-execd:
		if !ok {
			t.Fatal("the exec ran before the reply was read")
		}
	case <-time.After(patience):
		t.Fatal("the exec did not run")
	}
	st.f.mu.Lock()
	asked := strings.Join(st.f.upgrades, ",")
	st.f.mu.Unlock()
	if asked != "/opt/new/dutchmaster," {
		t.Fatalf("the Supervisor was asked for %q, want the absolute binary and the default", asked)
	}
	if !strings.Contains(st.logs.String(), `"command":"upgrade"`) || !strings.Contains(st.logs.String(), `"binary":"/opt/new/dutchmaster"`) {
		t.Fatalf("the upgrade is not logged:\n%s", st.logs.String())
	}
	// After an exec that failed, the connection goes on.
	if rep, err := c.Do(ctl.Request{Command: ctl.CommandStatus}); err != nil || !rep.OK {
		t.Fatalf("status after: %+v %v", rep, err)
	}

	// A master whose Supervisor cannot upgrade says so.
	path := filepath.Join(t.TempDir(), "plain.sock")
	s, err := Listen(Options{Path: path, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Serve(struct{ Supervisor }{st.f})
	rep, err = dial(t, path).Do(ctl.Request{Command: ctl.CommandUpgrade})
	if err != nil || rep.OK || rep.Error != "upgrade: this master cannot upgrade in place" {
		t.Fatalf("no upgrader: %+v %v", rep, err)
	}
}

// TestStatusVersionUpgrades: status reports the master's version and its
// upgrades as Options give them, and no upgrades without.
func TestStatusVersionUpgrades(t *testing.T) {
	last := time.Date(2026, 5, 1, 10, 0, 4, 0, time.UTC)
	st := start(t, 1, Options{Version: "v1.3.0", Upgrades: func() ctl.UpgradeStatus {
		return ctl.UpgradeStatus{Count: 2, Last: last, Failed: 1, LastError: "exec: permission denied"}
	}})
	rep, err := dial(t, st.path).Do(ctl.Request{Command: ctl.CommandStatus})
	if err != nil || !rep.OK {
		t.Fatalf("%+v %v", rep, err)
	}
	want := ctl.UpgradeStatus{Count: 2, Last: last, Failed: 1, LastError: "exec: permission denied"}
	if s := rep.Status; s.Version != "v1.3.0" || s.Upgrades == nil || *s.Upgrades != want {
		t.Fatalf("version %q, upgrades %+v", s.Version, s.Upgrades)
	}
	plain := start(t, 1, Options{})
	rep, err = dial(t, plain.path).Do(ctl.Request{Command: ctl.CommandStatus})
	if err != nil || !rep.OK || rep.Status.Version != "" || rep.Status.Upgrades != nil {
		t.Fatalf("without: %+v %v", rep.Status, err)
	}
}

// TestListenFD: the old image pauses its server (Pause: a connection
// that comes waits in the socket's queue; Unpause serves it, as after a
// failed exec), then the new image serves the listening socket handed
// over (a duplicate of the old server's descriptor, as the exec keeps
// it): a client that connected while the old server was paused is
// answered by the new one; the socket file is the same file, not bound
// again; the new server's Close removes it.
func TestListenFD(t *testing.T) {
	old := start(t, 1, Options{})
	var before syscall.Stat_t
	must(t, syscall.Lstat(old.path, &before))

	pauseWithin(t, old.s)
	rep := recv(t, func() chan ctl.Reply {
		ch := async(t, old.path, ctl.Request{Command: ctl.CommandStatus})
		old.s.Unpause()
		return ch
	}())
	if !rep.OK || rep.Status.Name != "web" {
		t.Fatalf("after Unpause: %+v", rep)
	}

	pauseWithin(t, old.s)
	waiting := async(t, old.path, ctl.Request{Command: ctl.CommandStatus})
	fd, err := syscall.Dup(old.s.ListenerFD())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ListenFD(Options{Path: old.path, Name: "new", Logger: zerolog.Nop()}, fd)
	if err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	f := newFakeCluster(t, s, 1)
	s.Serve(f)
	if rep := recv(t, waiting); !rep.OK || rep.Status.Name != "new" {
		t.Fatalf("the client that waited: %+v, want the new server's status", rep)
	}
	if rep, err := dial(t, old.path).Do(ctl.Request{Command: ctl.CommandStatus}); err != nil || !rep.OK || rep.Status.Name != "new" {
		t.Fatalf("a new client: %+v %v", rep, err)
	}
	var after syscall.Stat_t
	must(t, syscall.Lstat(old.path, &after))
	if after.Ino != before.Ino || after.Dev != before.Dev || after.Mode != before.Mode {
		t.Fatalf("the socket file changed: %+v, was %+v", after, before)
	}
	if s.ListenerFD() != fd {
		t.Fatalf("ListenerFD %d, want the inherited %d", s.ListenerFD(), fd)
	}
	must(t, s.Close())
	if _, err := os.Lstat(old.path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file after Close: %v", err)
	}
}

// pauseWithin pauses s, failing the test if Pause does not return.
func pauseWithin(t *testing.T, s *Server) {
	t.Helper()
	done := make(chan struct{})
	go func() { s.Pause(); close(done) }()
	select {
	case <-done:
	case <-time.After(patience):
		t.Fatalf("Pause did not return within %s", patience)
	}
}

// TestListenFDRefuses: a descriptor that is not the control socket at
// the path is refused with what it is.
func TestListenFDRefuses(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ctl.sock")
	old, err := Listen(Options{Path: path, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	fd, err := syscall.Dup(old.ListenerFD())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ListenFD(Options{Path: filepath.Join(dir, "other.sock")}, fd); err == nil || !strings.Contains(err.Error(), "is bound at "+path) {
		t.Fatalf("another path: %v", err)
	}
	// The refused descriptor was closed.
	var stat syscall.Stat_t
	if err := syscall.Fstat(fd, &stat); !errors.Is(err, syscall.EBADF) {
		t.Fatalf("fd %d after the refusal: %v, want it closed", fd, err)
	}

	f, err := os.CreateTemp(dir, "file")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := ListenFD(Options{Path: path}, int(f.Fd())); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("a file: %v", err)
	}
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw, _ := conn.(*net.UnixConn).File()
	defer raw.Close()
	if _, err := ListenFD(Options{Path: path}, int(raw.Fd())); err == nil || !strings.Contains(err.Error(), "not listening") {
		t.Fatalf("a connection: %v", err)
	}
}
