package worker

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Why this file exists. An HTTP/1.1 server may close an idle keep-alive
// connection at any time, and a client may send a request on it at the
// same moment. If that request reaches a socket the server has closed, the
// kernel answers with a reset: the client sees ECONNRESET, a proxy a 502,
// and the reset may even destroy a response still in the client's receive
// buffer. http.Server.Shutdown closes idle connections exactly that way
// (and SetKeepAlivesEnabled(false) does too, at once), so a drain that only
// calls Shutdown loses requests whenever clients reuse connections.
//
// The drain avoids it in two steps:
//
//   - Grace (ServeHTTPWith step 3): idle connections are left open and every
//     response says "Connection: close". A client that sends during the
//     grace is answered, and the server closes that connection after the
//     response, at a moment the client knows about. Busy keep-alive clients
//     (proxies, load generators) all move to other workers this way. (The
//     header is decided when a handler starts: a request already running
//     when the drain began is answered without it, and its connection is
//     then an idle one like the others, covered by the rest of the grace.)
//   - Lingering close: every connection the server closes once the drain
//     has begun (after a "Connection: close" response, or when Shutdown
//     closes one still idle after the grace) is first half-closed (FIN),
//     then whatever the client still sends is read and discarded until the
//     client closes its side or Linger passes, and only then closed. A
//     client that raced a request against the close therefore sees a clean
//     end of stream, never a reset, and that request is never half-handled:
//     its bytes are discarded unread by the server, so clients may retry it
//     on a new connection (Go's Transport does for idempotent requests,
//     browsers and proxies likewise).
//
// TLS connections are wrapped beneath the TLS layer, so they get the same
// treatment when ServeHTTPWith terminates TLS itself; connections of a
// listener that already yields *tls.Conn are left as they are.

// drainState is shared by the listener, its connections and the handler.
type drainState struct {
	draining  atomic.Bool
	linger    time.Duration
	lingering sync.WaitGroup

	mu      sync.Mutex
	open    int           // connections not yet closed or hijacked
	changed chan struct{} // closed and replaced whenever open changes
}

func newDrainState(linger time.Duration) *drainState {
	return &drainState{linger: linger, changed: make(chan struct{})}
}

// install wraps srv's handler (adding "Connection: close" while draining)
// and its ConnState hook (counting open connections).
func (d *drainState) install(srv *http.Server) {
	next := srv.Handler
	if next == nil {
		next = http.DefaultServeMux
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// HTTP/2 has no such header (it drains with GOAWAY at Shutdown).
		if r.ProtoMajor == 1 && d.draining.Load() {
			w.Header().Set("Connection", "close")
		}
		next.ServeHTTP(w, r)
	})
	prev := srv.ConnState
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			d.addOpen(1)
		case http.StateClosed, http.StateHijacked:
			d.addOpen(-1)
		}
		if prev != nil {
			prev(c, s)
		}
	}
}

func (d *drainState) begin() { d.draining.Store(true) }

func (d *drainState) addOpen(delta int) {
	d.mu.Lock()
	d.open += delta
	close(d.changed)
	d.changed = make(chan struct{})
	d.mu.Unlock()
}

// waitGrace returns after grace, or as soon as no connection is open.
func (d *drainState) waitGrace(grace time.Duration) {
	if grace <= 0 {
		return
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	for {
		d.mu.Lock()
		open, changed := d.open, d.changed
		d.mu.Unlock()
		if open <= 0 {
			return
		}
		select {
		case <-timer.C:
			return
		case <-changed:
		}
	}
}

// drainListener reports when Serve starts accepting and wraps accepted
// connections for the lingering close.
type drainListener struct {
	net.Listener
	d         *drainState
	once      sync.Once
	accepting chan struct{}
}

func (l *drainListener) Accept() (net.Conn, error) {
	l.once.Do(func() { close(l.accepting) })
	c, err := l.Listener.Accept()
	if err != nil || l.d.linger < 0 {
		return c, err
	}
	if _, isTLS := c.(*tls.Conn); isTLS {
		return c, nil // http.Server must see the *tls.Conn itself
	}
	cw, ok := c.(closeWriter)
	if !ok {
		return c, nil
	}
	return &lingerConn{Conn: c, cw: cw, d: l.d}, nil
}

type closeWriter interface{ CloseWrite() error }

// lingerConn closes gracefully once the drain has begun (see the top of
// this file).
type lingerConn struct {
	net.Conn
	cw      closeWriter
	d       *drainState
	closing atomic.Bool
}

// Read hides whatever arrives after the close began: those bytes belong to
// a request the server will not handle.
func (c *lingerConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.closing.Load() {
		return 0, net.ErrClosed
	}
	return n, err
}

// ReadFrom keeps http.Server's sendfile path (it looks for io.ReaderFrom).
func (c *lingerConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

func (c *lingerConn) CloseWrite() error { return c.cw.CloseWrite() }

// Close is a plain close before the drain. During the drain it half-closes
// at once and finishes the close in the background, because http.Server
// calls Close while holding its own lock; serveHTTP waits for those
// background closes before it returns.
func (c *lingerConn) Close() error {
	if !c.d.draining.Load() {
		return c.Conn.Close()
	}
	if !c.closing.CompareAndSwap(false, true) {
		return nil
	}
	if err := c.cw.CloseWrite(); err != nil {
		return c.Conn.Close()
	}
	c.d.lingering.Add(1)
	go func() {
		defer c.d.lingering.Done()
		defer c.Conn.Close()
		c.Conn.SetReadDeadline(time.Now().Add(c.d.linger))
		io.Copy(io.Discard, c.Conn)
	}()
	return nil
}
