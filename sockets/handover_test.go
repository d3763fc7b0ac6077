package sockets

import (
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster/sockets/testproc"
	"golang.org/x/sys/unix"
)

// TestChannelInterruptKeepsThePartialLine: Interrupt stops a blocked
// ReadLine with the start of a line already read; Pending holds it, and a
// Channel taken over from a duplicate of the descriptor with those bytes
// reads the line whole, then the next. The first Channel, resumed
// instead, would read on as well.
func TestChannelInterruptKeepsThePartialLine(t *testing.T) {
	ch, worker := newTestChannel(t)
	if _, err := worker.Write([]byte("{\"a\":1}\n{\"b\":")); err != nil {
		t.Fatal(err)
	}
	if line, err := ch.ReadLine(); err != nil || string(line) != `{"a":1}` {
		t.Fatalf("first line %q, %v", line, err)
	}
	read := make(chan error, 1)
	go func() {
		_, err := ch.ReadLine() // blocks with {"b": read
		read <- err
	}()
	// Wait until the reader has the partial line: nothing left unread in
	// the socket.
	testproc.WaitFor(t, testTimeout, "the reader to take the partial line", func() bool {
		n, err := unix.IoctlGetInt(ch.FD(), unix.SIOCINQ)
		return err == nil && n == 0
	})
	if err := ch.Interrupt(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-read:
		if !Interrupted(err) {
			t.Fatalf("interrupted ReadLine: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Interrupt did not stop ReadLine")
	}
	if _, err := ch.ReadLine(); !Interrupted(err) {
		t.Fatalf("ReadLine after Interrupt: %v, want interrupted", err)
	}
	pending := ch.Pending()
	if string(pending) != `{"b":` {
		t.Fatalf("pending %q", pending)
	}

	fd, err := unix.Dup(ch.FD()) // as an exec keeps it
	if err != nil {
		t.Fatal(err)
	}
	next, err := ChannelFromFD(fd, pending)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if _, err := worker.Write([]byte("2}\n{\"c\":3}\n")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`{"b":2}`, `{"c":3}`} {
		if line, err := next.ReadLine(); err != nil || string(line) != want {
			t.Fatalf("taken-over channel: %q, %v; want %q", line, err, want)
		}
	}
	// The taken-over end sends too.
	if err := next.Send(map[string]int{"d": 4}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	worker.SetReadDeadline(time.Now().Add(testTimeout))
	if n, err := worker.Read(buf); err != nil || string(buf[:n]) != "{\"d\":4}\n" {
		t.Fatalf("worker read %q, %v", buf[:n], err)
	}

	// Resume on the first one: it reads again (here EOF once the worker
	// end closes).
	if err := ch.Resume(); err != nil {
		t.Fatal(err)
	}
	worker.CloseWrite()
	if _, err := ch.ReadLine(); Interrupted(err) {
		t.Fatalf("ReadLine after Resume: %v", err)
	}
}

// TestNotifyInterruptAndTakeOver: Interrupt stops a blocked Read, the
// datagrams stay queued, and a NotifySocket taken over from a duplicate
// of the descriptor reads them, with the sender's credentials, at the same
// address.
func TestNotifyInterruptAndTakeOver(t *testing.T) {
	ns := newTestNotifySocket(t)
	read := make(chan error, 1)
	go func() {
		_, err := ns.Read()
		read <- err
	}()
	if err := ns.Interrupt(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-read:
		if !Interrupted(err) {
			t.Fatalf("interrupted Read: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Interrupt did not stop Read")
	}
	send(t, ns, []byte("READY=1"))
	fd, err := unix.Dup(ns.FD())
	if err != nil {
		t.Fatal(err)
	}
	next, err := NotifySocketFromFD(fd, ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if next.Path() != ns.Path() {
		t.Fatalf("path %q, want %q", next.Path(), ns.Path())
	}
	n, err := readNotification(t, next)
	if err != nil || n.Payload != "READY=1" || n.PID != unix.Getpid() {
		t.Fatalf("taken-over socket read %+v, %v", n, err)
	}
	if err := ns.Resume(); err != nil {
		t.Fatal(err)
	}
	send(t, ns, []byte("STATUS=x"))
	if n, err := readNotification(t, ns); err != nil || n.Payload != "STATUS=x" {
		t.Fatalf("resumed socket read %+v, %v", n, err)
	}
}

// TestFromFDRefusesABadDescriptor: a closed descriptor, or one that is
// not a socket, is refused with an error.
func TestFromFDRefusesABadDescriptor(t *testing.T) {
	if _, err := ChannelFromFD(-1, nil); err == nil {
		t.Error("ChannelFromFD(-1): no error")
	}
	r, w, err := osPipe(t)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(w)
	if _, err := NotifySocketFromFD(r, "@x"); err == nil {
		t.Error("NotifySocketFromFD(a pipe): no error")
	}
}

func osPipe(t *testing.T) (int, int, error) {
	var p [2]int
	err := unix.Pipe2(p[:], unix.O_CLOEXEC)
	return p[0], p[1], err
}
