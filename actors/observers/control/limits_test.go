package control

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	ctl "github.com/dutchmaster/dutchmaster/sockets/control"
)

// flakyListener fails its first accepts as a process out of descriptors
// does.
type flakyListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestAcceptRetries: failed accepts (too many open files) pause the
// control socket, never end it; it says so once, and once it accepts
// again.
func TestAcceptRetries(t *testing.T) {
	logs := &lockedBuffer{}
	path := filepath.Join(t.TempDir(), "ctl.sock")
	s, err := Listen(Options{Path: path, Name: "web", Logger: zerolog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	flaky := &flakyListener{Listener: s.ln}
	flaky.fails.Store(8)
	s.ln = flaky
	f := newFakeCluster(t, s, 2)
	s.Serve(f)
	f.do(func() { must(t, f.d.SettleWorkers()) })

	rep, err := dial(t, path).Do(ctl.Request{Command: ctl.CommandStatus})
	if err != nil || !rep.OK {
		t.Fatalf("status after failed accepts: %+v, %v", rep, err)
	}
	log := logs.String()
	if n := strings.Count(log, "control socket: accept failed; retrying"); n != 1 || !strings.Contains(log, "too many open files") {
		t.Errorf("%d lines of accept failures, want one with the cause:\n%s", n, log)
	}
	if !strings.Contains(log, `"failures":8,`) || !strings.Contains(log, "control socket: accepting again") {
		t.Errorf("no line that the socket accepts again after 8 failures:\n%s", log)
	}
}

// TestIdleConnectionClosed: a client that sends nothing is closed after
// IdleTimeout; one that asks is answered.
func TestIdleConnectionClosed(t *testing.T) {
	st := start(t, 2, Options{IdleTimeout: 50 * time.Millisecond})
	c, err := net.Dial("unix", st.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(patience))
	if b, err := io.ReadAll(c); err != nil || len(b) > 0 {
		t.Fatalf("idle connection: read %q, %v; want it closed", b, err)
	}
	if rep, err := dial(t, st.path).Do(ctl.Request{Command: ctl.CommandStatus}); err != nil || !rep.OK {
		t.Fatalf("%+v %v", rep, err)
	}
}

// TestMaxConns: past MaxConns open connections, one more is refused with
// a reply that says why; a place freed is taken again.
func TestMaxConns(t *testing.T) {
	st := start(t, 2, Options{MaxConns: 2})
	held := []*ctl.Client{dial(t, st.path), dial(t, st.path)}
	for _, c := range held {
		// Served, so the server counts them.
		if rep, err := c.Do(ctl.Request{Command: ctl.CommandStatus}); err != nil || !rep.OK {
			t.Fatalf("%+v %v", rep, err)
		}
	}
	rep, err := dial(t, st.path).Do(ctl.Request{Command: ctl.CommandStatus})
	if err != nil || rep.OK || !strings.Contains(rep.Error, "control connection refused: too many connections") {
		t.Fatalf("a third connection: %+v, %v; want refused", rep, err)
	}
	held[0].Close()
	deadline := time.Now().Add(patience)
	for {
		rep, err := dial(t, st.path).Do(ctl.Request{Command: ctl.CommandStatus})
		if err == nil && rep.OK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no place after a client left: %+v, %v", rep, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(st.logs.String(), "control connection refused") {
		t.Errorf("the refusal is not logged:\n%s", st.logs)
	}
}

// TestRoomRefuses: a connection Room refuses is told why.
func TestRoomRefuses(t *testing.T) {
	st := start(t, 2, Options{Room: func() error { return errors.New("60 of 64 descriptors open") }})
	rep, err := dial(t, st.path).Do(ctl.Request{Command: ctl.CommandStatus})
	if err != nil || rep.OK || !strings.Contains(rep.Error, "60 of 64 descriptors open") {
		t.Fatalf("%+v, %v; want refused with the reason", rep, err)
	}
}
