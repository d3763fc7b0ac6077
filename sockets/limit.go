package sockets

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// ErrTooManyConns is why a LimitListener refuses a connection past its
// Max.
var ErrTooManyConns = errors.New("too many connections")

// Limit is what a LimitListener admits.
type Limit struct {
	// Max is how many of its connections may be open at once; one more
	// is refused. 0: no cap.
	Max int
	// Room, if set, is asked before each connection is handed on: an
	// error refuses it (e.g. the process is near its descriptor limit).
	Room func() error
	// Refuse, if set, may say why to a refused connection before it is
	// closed (a short write; the connection is new, its buffer empty).
	Refuse func(c net.Conn, why error)
	// Refused, if set, is told of refusals: the first at once, then at
	// most one call per ReportEvery with the count since the last call,
	// so that a flood of clients cannot flood the log.
	Refused func(why error, count int)
	// ReportEvery spaces the calls of Refused. Default 10 s.
	ReportEvery time.Duration
}

// LimitListener wraps l: it refuses (accepts and closes at once) the
// connections past lim.Max open at a time or that lim.Room refuses. A
// refused client sees its connection closed instead of waiting in the
// kernel's queue. Errors of l.Accept are returned as they are.
//
// The connections it returns implement syscall.Conn when l's do.
func LimitListener(l net.Listener, lim Limit) net.Listener {
	if lim.ReportEvery <= 0 {
		lim.ReportEvery = 10 * time.Second
	}
	return &limitListener{Listener: l, lim: lim}
}

type limitListener struct {
	net.Listener
	lim Limit

	mu         sync.Mutex
	open       int
	refused    int // since the last report
	lastReport time.Time
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if why := l.admit(); why != nil {
			l.refuse(c, why)
			continue
		}
		return &limitedConn{Conn: c, l: l}, nil
	}
}

// admit takes a place for a new connection, or says why there is none.
func (l *limitListener) admit() error {
	l.mu.Lock()
	full := l.lim.Max > 0 && l.open >= l.lim.Max
	l.mu.Unlock()
	if full {
		return ErrTooManyConns
	}
	if l.lim.Room != nil {
		if err := l.lim.Room(); err != nil {
			return err
		}
	}
	l.mu.Lock()
	l.open++
	l.mu.Unlock()
	return nil
}

func (l *limitListener) refuse(c net.Conn, why error) {
	if l.lim.Refuse != nil {
		c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		l.lim.Refuse(c, why)
	}
	c.Close()
	l.mu.Lock()
	l.refused++
	now := time.Now()
	report := now.Sub(l.lastReport) >= l.lim.ReportEvery
	n := l.refused
	if report {
		l.refused, l.lastReport = 0, now
	}
	l.mu.Unlock()
	if report && l.lim.Refused != nil {
		l.lim.Refused(why, n)
	}
}

func (l *limitListener) release() {
	l.mu.Lock()
	l.open--
	l.mu.Unlock()
}

// limitedConn gives its place back once closed.
type limitedConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.l.release)
	return err
}

// SyscallConn is the wrapped connection's, for reading socket options
// (the control socket reads its peer's credentials).
func (c *limitedConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}
