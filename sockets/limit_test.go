package sockets

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestLimitListener: past Max open connections, or when Room says no, a
// connection is told why and closed; a closed connection frees its place;
// refusals are reported, the first at once, the next ones counted.
func TestLimitListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		noRoom  error
		reports []int
	)
	l := LimitListener(inner, Limit{
		Max:     2,
		Room:    func() error { mu.Lock(); defer mu.Unlock(); return noRoom },
		Refuse:  func(c net.Conn, why error) { io.WriteString(c, why.Error()) },
		Refused: func(why error, n int) { mu.Lock(); reports = append(reports, n); mu.Unlock() },
	})
	defer l.Close()
	accepted := make(chan net.Conn)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// refused reads what a refused client is told.
	refused := func(c net.Conn) string {
		c.SetReadDeadline(time.Now().Add(testTimeout))
		b, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("a refused connection: %v", err)
		}
		return string(b)
	}
	dial()
	dial()
	a, b := <-accepted, <-accepted
	if got := refused(dial()); got != ErrTooManyConns.Error() {
		t.Fatalf("a third connection: %q, want refused", got)
	}
	if got := refused(dial()); got != ErrTooManyConns.Error() {
		t.Fatalf("a fourth connection: %q, want refused", got)
	}
	a.Close()
	a.Close() // a second Close frees nothing more
	dial()
	c := <-accepted
	mu.Lock()
	noRoom = errors.New("no descriptors to spare")
	mu.Unlock()
	b.Close()
	if got := refused(dial()); got != "no descriptors to spare" {
		t.Fatalf("with no room: %q", got)
	}
	c.Close()
	mu.Lock()
	if len(reports) != 1 || reports[0] != 1 {
		t.Errorf("reports %v: want one, of the first refusal", reports)
	}
	mu.Unlock()
	if _, ok := c.(syscall.Conn); !ok {
		t.Error("an accepted connection hides its socket (syscall.Conn)")
	}
	l.Close()
	if _, ok := <-accepted; ok {
		t.Fatal("accepted after Close")
	}
}
