package loadtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Connection modes.
const (
	ModeClose     = "close"     // a new connection per request ("Connection: close")
	ModeKeepAlive = "keepalive" // one connection reused until the server closes it (or Spec.MaxPerConn)
)

// Failure kinds.
const (
	FailRefused = "refused" // connect: ECONNREFUSED
	FailReset   = "reset"   // ECONNRESET or EPIPE
	FailEOF     = "eof"     // the connection ended before a whole response
	FailTimeout = "timeout" // no whole response within the request timeout
	FailNon2xx  = "non2xx"  // a response, but not 2xx
	FailOther   = "other"   // anything else (the detail says what)
)

// FailKinds lists every failure kind, in report order.
var FailKinds = []string{FailRefused, FailReset, FailEOF, FailTimeout, FailNon2xx, FailOther}

// Sample is one finished request: when it started and how long it took,
// both in nanoseconds (Start is Unix time, comparable with the master's
// log times).
type Sample struct {
	Start, Latency int64
	PID            int // the worker that answered (X-Worker-Pid, or the example worker's body); 0 if unknown
}

// Failure is one failed request, with what is needed to tell why.
type Failure struct {
	Start   time.Time `json:"-"`
	At      string    `json:"at"`              // RFC 3339, microseconds
	Kind    string    `json:"kind"`            // one of FailKinds
	Phase   string    `json:"phase"`           // dial, write, read or status
	Reused  bool      `json:"reused"`          // on a kept-alive connection that had served requests
	OnConn  int       `json:"request_on_conn"` // 1 for the first request on a connection
	Err     string    `json:"error"`
	Restart int       `json:"restart,omitempty"`        // 1-based restart window it fell in, 0 outside
	AfterMs float64   `json:"after_drain_ms"`           // since the latest "drain" logged before it (-1: none)
	Worker  int       `json:"drained_worker,omitempty"` // that drain's worker id

	// The connection it failed on (zero for a failed dial): its local
	// (client-side) port, when it was dialed, and the worker that answered
	// the connection's previous request, if any.
	LocalPort int       `json:"local_port,omitempty"`
	Dialed    time.Time `json:"-"`
	ConnPID   int       `json:"conn_pid,omitempty"`
	End       time.Time `json:"end"` // when the failure was seen
}

// Spec bounds a load in count and time: it stops at the first of Finish,
// MaxRequests started, or Deadline.
type Spec struct {
	Addr        string
	Clients     int
	Mode        string        // ModeClose or ModeKeepAlive
	MaxPerConn  int           // keep-alive: a client closes its connection after this many requests (0: never)
	Timeout     time.Duration // per request
	MaxRequests int64
	Deadline    time.Time
}

// Load is a closed-loop HTTP/1.1 load: each client sends a request, reads
// the whole response, and sends the next one at once. It is written on
// net.Conn (net/http only parses the response) so that every failure is
// seen as it happened: no retries, no connection pool.
//
// Samples, Failures, ByKind, Began and Ended are the results: read them
// once Finish or Wait has returned.
type Load struct {
	Spec     Spec
	Began    time.Time
	Ended    time.Time
	Samples  []Sample  // successful requests
	Failures []Failure // every failed request
	ByKind   map[string]int64

	request []byte
	stop    chan struct{}
	stopped sync.Once
	wg      sync.WaitGroup
	started atomic.Int64

	mu      sync.Mutex
	done    int64 // finished requests, good or not
	waiters []countWaiter
}

type countWaiter struct {
	n  int64
	ch chan struct{}
}

// Start starts the clients.
func Start(spec Spec) *Load {
	conn := ""
	if spec.Mode == ModeClose {
		conn = "Connection: close\r\n"
	}
	l := &Load{
		Spec:    spec,
		request: fmt.Appendf(nil, "GET / HTTP/1.1\r\nHost: %s\r\nUser-Agent: dutchmaster-loadtest\r\n%s\r\n", spec.Addr, conn),
		stop:    make(chan struct{}),
		ByKind:  map[string]int64{},
		Began:   time.Now(),
	}
	for range spec.Clients {
		l.wg.Add(1)
		go l.client()
	}
	return l
}

// Finish stops the load and waits for the requests in flight.
func (l *Load) Finish() {
	l.stopped.Do(func() { close(l.stop) })
	l.wg.Wait()
	if l.Ended.IsZero() {
		l.Ended = time.Now()
	}
}

// Wait waits for a load that ends by itself (count or deadline).
func (l *Load) Wait() {
	l.wg.Wait()
	l.Ended = time.Now()
}

// next reports whether the client may send another request.
func (l *Load) next() bool {
	select {
	case <-l.stop:
		return false
	default:
	}
	if time.Now().After(l.Spec.Deadline) {
		return false
	}
	return l.started.Add(1) <= l.Spec.MaxRequests
}

// WaitDone waits until n requests have finished, or the load has ended,
// or patience has passed; it reports whether n were reached.
func (l *Load) WaitDone(n int64, patience time.Duration) bool {
	l.mu.Lock()
	if l.done >= n {
		l.mu.Unlock()
		return true
	}
	ch := make(chan struct{})
	l.waiters = append(l.waiters, countWaiter{n, ch})
	l.mu.Unlock()
	ended := make(chan struct{})
	go func() { l.wg.Wait(); close(ended) }()
	timer := time.NewTimer(patience)
	defer timer.Stop()
	select {
	case <-ch:
		return true
	case <-ended:
	case <-timer.C:
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.done >= n
}

// DoneCount is the number of requests finished so far, good or not.
func (l *Load) DoneCount() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.done
}

// FailedCount is the number of failed requests so far.
func (l *Load) FailedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.Failures)
}

func (l *Load) record(s Sample, f *Failure) {
	l.mu.Lock()
	l.done++
	if f == nil {
		l.Samples = append(l.Samples, s)
	} else {
		l.Failures = append(l.Failures, *f)
		l.ByKind[f.Kind]++
	}
	kept := l.waiters[:0]
	for _, w := range l.waiters {
		if l.done >= w.n {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	l.waiters = kept
	l.mu.Unlock()
}

// client is one closed-loop client.
func (l *Load) client() {
	defer l.wg.Done()
	var (
		conn    net.Conn
		br      *bufio.Reader
		onConn  int // requests sent on conn so far
		port    int
		dialed  time.Time
		connPID int
	)
	closeConn := func() {
		if conn != nil {
			conn.Close()
			conn = nil
		}
	}
	defer closeConn()
	for l.next() {
		start := time.Now()
		fail := func(phase string, err error) {
			closeConn()
			k := Classify(err)
			if phase == "status" {
				k = FailNon2xx
			}
			l.record(Sample{}, &Failure{
				Start: start, At: start.UTC().Format("2006-01-02T15:04:05.000000Z07:00"),
				Kind: k, Phase: phase, Reused: onConn > 1, OnConn: onConn, Err: err.Error(),
				LocalPort: port, Dialed: dialed, ConnPID: connPID, End: time.Now(),
			})
		}
		if conn == nil {
			port, connPID = 0, 0
			dialed = time.Now()
			c, err := net.DialTimeout("tcp", l.Spec.Addr, l.Spec.Timeout)
			if err != nil {
				onConn = 0
				fail("dial", err)
				continue
			}
			conn, br, onConn = c, bufio.NewReader(c), 0
			if a, ok := c.LocalAddr().(*net.TCPAddr); ok {
				port = a.Port
			}
		}
		onConn++
		conn.SetDeadline(start.Add(l.Spec.Timeout))
		if _, err := conn.Write(l.request); err != nil {
			fail("write", err)
			continue
		}
		resp, err := http.ReadResponse(br, nil)
		var body []byte
		if err == nil {
			body, err = io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
		}
		if err != nil {
			fail("read", err)
			continue
		}
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			fail("status", fmt.Errorf("status %s", resp.Status))
			continue
		}
		end := time.Now()
		connPID = servedBy(resp.Header, body)
		if l.Spec.Mode == ModeClose || resp.Close || (l.Spec.MaxPerConn > 0 && onConn >= l.Spec.MaxPerConn) {
			closeConn()
		}
		l.record(Sample{Start: start.UnixNano(), Latency: int64(end.Sub(start)), PID: connPID}, nil)
	}
}

// ServedBy reads the pid of the worker that answered, for a client of
// one's own (see servedBy).
func ServedBy(h http.Header, body []byte) int { return servedBy(h, body) }

// servedBy reads the pid of the worker that answered: the X-Worker-Pid
// header, or the example worker's body, "hello from worker 3 (pid 1234,
// generation 2, up 1s)".
func servedBy(h http.Header, body []byte) int {
	if pid, err := strconv.Atoi(h.Get("X-Worker-Pid")); err == nil {
		return pid
	}
	_, rest, ok := bytes.Cut(body, []byte("(pid "))
	if !ok {
		return 0
	}
	n := 0
	for _, c := range rest {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// Classify names the kind of a network error.
func Classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return FailRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return FailReset
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return FailEOF
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return FailTimeout
	}
	return FailOther
}
