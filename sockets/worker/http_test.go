package worker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// testServer runs serveHTTP in-process on a loopback listener with a drain
// channel the test controls.
type testServer struct {
	addr     string
	drain    chan struct{}
	draining chan struct{} // closed by OnDrain
	done     chan error
	readies  atomic.Int32
}

func startServer(t *testing.T, h http.Handler, o HTTPOptions) *testServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{addr: l.Addr().String(), drain: make(chan struct{}), draining: make(chan struct{}), done: make(chan error, 1)}
	o.OnDrain = func() { close(s.draining) }
	srv := &http.Server{Handler: h}
	go func() {
		s.done <- serveHTTP(srv, l, o, s.drain, func() error { s.readies.Add(1); return nil }, healthPlan{})
	}()
	t.Cleanup(func() {
		select {
		case <-s.drain:
		default:
			close(s.drain)
		}
		select {
		case <-s.done:
		case <-time.After(testTimeout):
			t.Error("serveHTTP did not return")
		}
	})
	return s
}

// startDrain closes the drain channel and waits for the listener to close.
func (s *testServer) startDrain(t *testing.T) {
	t.Helper()
	close(s.drain)
	select {
	case <-s.draining:
	case <-time.After(testTimeout):
		t.Fatal("drain did not begin")
	}
}

func (s *testServer) result(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
		return err
	case <-time.After(testTimeout):
		t.Fatal("serveHTTP did not return")
		return nil
	}
}

// client is one raw HTTP/1.1 connection, so the test decides exactly when
// requests go out on it.
type client struct {
	net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(testTimeout))
	return &client{Conn: c, r: bufio.NewReader(c)}
}

func (c *client) send(t *testing.T, path string) {
	t.Helper()
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
}

func (c *client) response(t *testing.T) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		t.Fatalf("reading a response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// end reads what follows on the connection and reports how it ended.
func (c *client) end() error {
	n, err := c.r.Read(make([]byte, 1))
	if n > 0 {
		return errors.New("unexpected data")
	}
	return err
}

func hello(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello "+r.URL.Path) }

func TestServeHTTPReadyAfterAccepting(t *testing.T) {
	s := startServer(t, http.HandlerFunc(hello), HTTPOptions{})
	c := dial(t, s.addr)
	c.send(t, "/a")
	if resp, body := c.response(t); resp.StatusCode != 200 || body != "hello /a" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if n := s.readies.Load(); n != 1 {
		t.Fatalf("ready reported %d times, want once", n)
	}
}

func TestServeHTTPKeepAliveClientsGetConnectionClose(t *testing.T) {
	// A long grace: the test must end long before it, because the grace ends
	// as soon as no connection is open.
	s := startServer(t, http.HandlerFunc(hello), HTTPOptions{Grace: testTimeout})
	c := dial(t, s.addr)
	c.send(t, "/before")
	if resp, _ := c.response(t); resp.Close {
		t.Fatal("Connection: close before any drain")
	}

	s.startDrain(t)
	if _, err := net.Dial("tcp", s.addr); err == nil {
		t.Fatal("the listener still accepts after the drain began")
	}
	// The idle keep-alive connection was left open for the grace: a request
	// on it is answered, with Connection: close, and then it ends cleanly.
	c.send(t, "/during")
	resp, body := c.response(t)
	if resp.StatusCode != 200 || body != "hello /during" || !resp.Close {
		t.Fatalf("during the grace: %d %q close=%v, want 200 with Connection: close", resp.StatusCode, body, resp.Close)
	}
	if err := c.end(); err != io.EOF {
		t.Fatalf("after the last response: %v, want a clean EOF", err)
	}
	c.Close()
	if err := s.result(t); err != nil {
		t.Fatalf("serveHTTP: %v", err)
	}
}

func TestServeHTTPInFlightRequestFinishes(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "finished")
	})
	s := startServer(t, h, HTTPOptions{Grace: -1})
	c := dial(t, s.addr)
	c.send(t, "/slow")
	<-started
	s.startDrain(t)
	close(release)
	resp, body := c.response(t)
	if resp.StatusCode != 200 || body != "finished" {
		t.Fatalf("in-flight request: %d %q", resp.StatusCode, body)
	}
	if err := c.end(); err != io.EOF {
		t.Fatalf("after the response: %v, want a clean EOF", err)
	}
	c.Close()
	if err := s.result(t); err != nil {
		t.Fatalf("serveHTTP: %v", err)
	}
}

// TestServeHTTPIdleCloseIsClean is the race the lingering close exists for:
// a client sends on an idle keep-alive connection just as the server closes
// it after the grace.
func TestServeHTTPIdleCloseIsClean(t *testing.T) {
	for _, tc := range []struct {
		name   string
		linger time.Duration
		reset  bool
	}{
		{"lingering close", 0, false},
		{"plain close (control: the kernel resets)", -1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1); hello(w, r) })
			s := startServer(t, h, HTTPOptions{Grace: time.Millisecond, Linger: tc.linger})
			c := dial(t, s.addr)
			c.send(t, "/first")
			c.response(t)

			s.startDrain(t)
			// Idle through the grace: Shutdown closes it; the client sees
			// the end of the stream ...
			if err := c.end(); err != io.EOF {
				t.Fatalf("idle connection at shutdown: %v, want EOF", err)
			}
			// ... and sends a request anyway (it had not seen the FIN yet).
			// After a plain close the server's kernel answers with a reset,
			// which a further write reports; a lingering server reads and
			// discards, so writes go on succeeding until it closes.
			c.send(t, "/raced")
			n, err := writesUntilError(c, 1000)
			reset := errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
			if reset != tc.reset || (!reset && n < 1000) {
				t.Fatalf("after sending on the closing connection: %d writes then %v; want reset %v", n, err, tc.reset)
			}
			if !tc.reset {
				if err := c.end(); err != io.EOF {
					t.Fatalf("lingering connection: %v, want EOF", err)
				}
			}
			if n := calls.Load(); n != 1 {
				t.Fatalf("handler ran %d times, want once: the raced request must not be processed", n)
			}
			c.Close()
			if err := s.result(t); err != nil {
				t.Fatalf("serveHTTP: %v", err)
			}
		})
	}
}

func TestServeHTTPShutdownTimeout(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
	})
	s := startServer(t, h, HTTPOptions{Grace: -1, ShutdownTimeout: 50 * time.Millisecond})
	c := dial(t, s.addr)
	c.send(t, "/stuck")
	<-started
	s.startDrain(t)
	if err := s.result(t); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "cut short") {
		t.Fatalf("serveHTTP: %v, want the shutdown bound reported", err)
	}
}

func TestServeHTTPReadyFailure(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err = serveHTTP(&http.Server{}, l, HTTPOptions{}, make(chan struct{}), func() error { return boom }, healthPlan{})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want the ready error", err)
	}
	if _, err := net.Dial("tcp", l.Addr().String()); err == nil {
		t.Fatal("still listening after a ready failure")
	}
}

func TestServeHTTPServeError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	err = serveHTTP(&http.Server{}, l, HTTPOptions{}, make(chan struct{}), func() error { return nil }, healthPlan{})
	if !errors.Is(err, net.ErrClosed) {
		t.Fatalf("serving a closed listener: %v", err)
	}
}

// writesUntilError writes one byte at a time, up to max times, and returns
// how many writes succeeded and the first error.
func writesUntilError(c net.Conn, max int) (int, error) {
	for i := range max {
		if _, err := c.Write([]byte{'\n'}); err != nil {
			return i, err
		}
	}
	return max, nil
}
