package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Connection modes.
const (
	modeClose     = "close"     // a new connection per request ("Connection: close")
	modeKeepAlive = "keepalive" // one connection reused until the server closes it
)

// Failure kinds, the keys of the report's "failures".
const (
	failRefused = "refused" // connect: ECONNREFUSED
	failReset   = "reset"   // ECONNRESET or EPIPE
	failEOF     = "eof"     // the connection ended before a whole response
	failTimeout = "timeout" // no whole response within the request timeout
	failNon2xx  = "non2xx"  // a response, but not 2xx
	failOther   = "other"   // anything else (the detail says what)
)

var failKinds = []string{failRefused, failReset, failEOF, failTimeout, failNon2xx, failOther}

// sample is one finished request: when it started and how long it took,
// both in nanoseconds (start is Unix time, comparable with the master's
// log times).
type sample struct {
	start, latency int64
	pid            int // the worker that answered, from the example worker's body; 0 if unknown
}

// failure is one failed request, with what is needed to tell why.
type failure struct {
	Start   time.Time `json:"-"`
	At      string    `json:"at"`              // RFC 3339, microseconds
	Kind    string    `json:"kind"`            // one of failKinds
	Phase   string    `json:"phase"`           // dial, write, read or status
	Reused  bool      `json:"reused"`          // on a kept-alive connection that had served requests
	OnConn  int       `json:"request_on_conn"` // 1 for the first request on a connection
	Err     string    `json:"error"`
	Restart int       `json:"restart,omitempty"`        // 1-based restart window it fell in, 0 outside
	AfterMs float64   `json:"after_drain_ms"`           // since the latest "drain" logged before it (-1: none)
	Worker  int       `json:"drained_worker,omitempty"` // that drain's worker id
}

// loadSpec bounds a load in count and time: it stops at the first of stop
// being closed, maxRequests started, or deadline.
type loadSpec struct {
	addr        string
	clients     int
	mode        string
	timeout     time.Duration // per request
	maxRequests int64
	deadline    time.Time
}

// load is a closed-loop HTTP/1.1 load: each client sends a request, reads
// the whole response, and sends the next one at once. It is written on
// net.Conn (net/http only parses the response) so that every failure is
// seen as it happened: no retries, no connection pool.
type load struct {
	spec    loadSpec
	request []byte
	stop    chan struct{}
	stopped sync.Once
	wg      sync.WaitGroup
	started atomic.Int64
	began   time.Time
	ended   time.Time

	mu       sync.Mutex
	done     int64 // finished requests, good or not
	waiters  []countWaiter
	samples  []sample  // successful requests
	failures []failure // every failed request
	byKind   map[string]int64
}

type countWaiter struct {
	n  int64
	ch chan struct{}
}

func startLoad(spec loadSpec) *load {
	conn := ""
	if spec.mode == modeClose {
		conn = "Connection: close\r\n"
	}
	l := &load{
		spec:    spec,
		request: fmt.Appendf(nil, "GET / HTTP/1.1\r\nHost: %s\r\nUser-Agent: dmbench\r\n%s\r\n", spec.addr, conn),
		stop:    make(chan struct{}),
		byKind:  map[string]int64{},
		began:   time.Now(),
	}
	for range spec.clients {
		l.wg.Add(1)
		go l.client()
	}
	return l
}

// finish stops the load and waits for the requests in flight.
func (l *load) finish() {
	l.stopped.Do(func() { close(l.stop) })
	l.wg.Wait()
	if l.ended.IsZero() {
		l.ended = time.Now()
	}
}

// wait waits for a load that ends by itself (count or deadline).
func (l *load) wait() {
	l.wg.Wait()
	l.ended = time.Now()
}

// next reports whether the client may send another request.
func (l *load) next() bool {
	select {
	case <-l.stop:
		return false
	default:
	}
	if time.Now().After(l.spec.deadline) {
		return false
	}
	return l.started.Add(1) <= l.spec.maxRequests
}

// waitDone waits until n requests have finished, or the load has ended,
// or patience has passed; it reports whether n were reached.
func (l *load) waitDone(n int64, patience time.Duration) bool {
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

func (l *load) doneCount() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.done
}

func (l *load) record(s sample, f *failure) {
	l.mu.Lock()
	l.done++
	if f == nil {
		l.samples = append(l.samples, s)
	} else {
		l.failures = append(l.failures, *f)
		l.byKind[f.Kind]++
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
func (l *load) client() {
	defer l.wg.Done()
	var (
		conn   net.Conn
		br     *bufio.Reader
		onConn int // requests sent on conn so far
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
			k := classify(err)
			if phase == "status" {
				k = failNon2xx
			}
			l.record(sample{}, &failure{
				Start: start, At: start.UTC().Format("2006-01-02T15:04:05.000000Z07:00"),
				Kind: k, Phase: phase, Reused: onConn > 1, OnConn: onConn, Err: err.Error(),
			})
		}
		if conn == nil {
			c, err := net.DialTimeout("tcp", l.spec.addr, l.spec.timeout)
			if err != nil {
				onConn = 0
				fail("dial", err)
				continue
			}
			conn, br, onConn = c, bufio.NewReader(c), 0
		}
		onConn++
		conn.SetDeadline(start.Add(l.spec.timeout))
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
		if l.spec.mode == modeClose || resp.Close {
			closeConn()
		}
		l.record(sample{start: start.UnixNano(), latency: int64(end.Sub(start)), pid: servedBy(body)}, nil)
	}
}

// servedBy reads the pid in the example worker's answer, "hello from
// worker 3 (pid 1234, generation 2, up 1s)".
func servedBy(body []byte) int {
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

// classify names the kind of a network error.
func classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return failRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return failReset
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return failEOF
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return failTimeout
	}
	return failOther
}
