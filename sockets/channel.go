package sockets

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/dutchmaster/dutchmaster/sockets/wire"
	"golang.org/x/sys/unix"
)

// MaxLineBytes bounds one line read from a worker's IPC channel, newline
// excluded: 16 MiB. Longer lines are skipped (see Channel.ReadLine).
const MaxLineBytes = wire.MaxLineBytes

// DefaultSendTimeout bounds one Send when the worker does not read its
// channel: 5 s. See Channel.SetSendTimeout.
const DefaultSendTimeout = 5 * time.Second

// ErrLineTooLong is matched (errors.Is) by the *LineTooLongError that
// ReadLine returns for an oversized line.
var ErrLineTooLong = wire.ErrLineTooLong

// LineTooLongError reports one skipped line; reading may continue.
type LineTooLongError = wire.LineTooLongError

// ErrChannelBroken is returned by every send after one that wrote part of a
// line: the framing is lost, so nothing more may be written.
var ErrChannelBroken = errors.New("sockets: IPC channel broken by a partial write")

// Channel is the master's end of the IPC channel with one worker: a unix
// SOCK_STREAM socketpair carrying newline-delimited JSON, as Node.js's
// process.send and process.on('message') use in "json" serialization mode.
//
// Sends are safe for concurrent use; ReadLine is for one reader goroutine.
type Channel struct {
	conn  *net.UnixConn
	lines *wire.LineReader

	wmu         sync.Mutex
	sendTimeout time.Duration // guarded by wmu
	broken      bool          // guarded by wmu
}

// NewChannel creates the IPC channel for one worker. childEnd is the worker's
// end: pass it in exec.Cmd.ExtraFiles at the position PlanWorkerFiles gives
// and close it in the master once the worker has started (or failed to). Both
// ends are close-on-exec in the master.
func NewChannel() (ch *Channel, childEnd *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("ipc channel: socketpair: %w", err)
	}
	mine := os.NewFile(uintptr(fds[0]), "ipc-master")
	defer mine.Close() // net.FileConn keeps its own duplicate
	conn, err := net.FileConn(mine)
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("ipc channel: %w", err)
	}
	ch = &Channel{
		conn:        conn.(*net.UnixConn),
		lines:       wire.NewLineReader(conn, MaxLineBytes),
		sendTimeout: DefaultSendTimeout,
	}
	return ch, os.NewFile(uintptr(fds[1]), "ipc-worker"), nil
}

// SetSendTimeout sets how long one Send or SendWithFD may wait for room in
// the socket buffer (the worker not reading); 0 means no bound. The default
// is DefaultSendTimeout. A send that times out before writing anything
// returns an error wrapping os.ErrDeadlineExceeded and leaves the channel
// usable; one that wrote part of its line breaks it (ErrChannelBroken).
func (c *Channel) SetSendTimeout(d time.Duration) {
	c.wmu.Lock()
	c.sendTimeout = d
	c.wmu.Unlock()
}

// ReadLine returns the next line from the worker, without its newline. Each
// line should be one JSON value, but the bytes come back as they were sent:
// empty lines, invalid UTF-8 and invalid JSON included; judging them is the
// caller's job.
//
// Errors: a *LineTooLongError (errors.Is ErrLineTooLong) for one line over
// MaxLineBytes, which was skipped; call ReadLine again. io.EOF when the
// worker closed its end (exited, or Node's process.disconnect()); an error
// wrapping net.ErrClosed after Close. Those are final.
func (c *Channel) ReadLine() ([]byte, error) { return c.lines.ReadLine() }

// Send writes v as one JSON line (json.Marshal(v) + "\n") in a single
// write; concurrent Sends never interleave.
func (c *Channel) Send(v any) error {
	line, err := wire.Encode(v)
	if err != nil {
		return fmt.Errorf("ipc send: %w", err)
	}
	return c.write(line, nil)
}

// SendWithFD writes v as one JSON line with a duplicate of f's descriptor
// attached (SCM_RIGHTS) to the line's first byte, in the same sendmsg, as
// Node.js expects for handle passing. The worker receives its own copy; f
// stays open in the master.
func (c *Channel) SendWithFD(v any, f *os.File) error {
	line, err := wire.Encode(v)
	if err != nil {
		return fmt.Errorf("ipc send: %w", err)
	}
	if f == nil {
		return errors.New("ipc send: nil file")
	}
	return c.write(line, f)
}

func (c *Channel) write(line []byte, f *os.File) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.broken {
		return ErrChannelBroken
	}
	var deadline time.Time
	if c.sendTimeout > 0 {
		deadline = time.Now().Add(c.sendTimeout)
	}
	if err := c.conn.SetWriteDeadline(deadline); err != nil {
		return fmt.Errorf("ipc send: %w", err)
	}
	n := 0
	var err error
	if f != nil {
		n, err = c.writeWithRights(line, f)
	}
	if err == nil && n < len(line) {
		var m int
		m, err = c.conn.Write(line[n:])
		n += m
	}
	if err != nil {
		if n > 0 {
			c.broken = true
			return fmt.Errorf("ipc send: wrote %d of %d bytes: %w (%w)", n, len(line), err, ErrChannelBroken)
		}
		return fmt.Errorf("ipc send: %w", err)
	}
	return nil
}

// writeWithRights sends as much of line as the socket takes in one sendmsg,
// with f's descriptor attached, and returns how much was written.
func (c *Channel) writeWithRights(line []byte, f *os.File) (int, error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var werr error
	if err := raw.Control(func(fd uintptr) {
		n, _, werr = c.conn.WriteMsgUnix(line, unix.UnixRights(int(fd)), nil)
	}); err != nil {
		return 0, err
	}
	return n, werr
}

// Disconnect asks the worker to drain the way Node.js workers understand:
// it sends {"event":"disconnect"} and then closes the master's sending side,
// so the worker reads the message and then EOF (Node's 'disconnect' event).
// The master can still read what the worker sends until it closes its end.
//
// Never use it on a Node.js cluster worker: closing its channel makes it exit
// at once, without draining (docs/protocol.md).
func (c *Channel) Disconnect() error {
	return errors.Join(c.Send(wire.Event{Event: wire.EventDisconnect}), c.CloseWrite())
}

// CloseWrite closes the master's sending side (shutdown SHUT_WR): the worker
// reads EOF, and the master keeps reading.
func (c *Channel) CloseWrite() error {
	if err := c.conn.CloseWrite(); err != nil {
		return fmt.Errorf("ipc channel: %w", err)
	}
	return nil
}

// Close closes the master's end entirely; a blocked ReadLine returns an
// error wrapping net.ErrClosed.
func (c *Channel) Close() error { return c.conn.Close() }

// ChannelFromFD takes over the master's end of an IPC channel from a
// descriptor inherited across an exec (the master's previous image held
// it): pending are the bytes that image had read and not yet returned as
// lines (Pending), read first. The descriptor is the Channel's from now
// on (closed by Close).
func ChannelFromFD(fd int, pending []byte) (*Channel, error) {
	conn, err := unixConnFromFD(fd, "ipc-master")
	if err != nil {
		return nil, fmt.Errorf("ipc channel fd %d: %w", fd, err)
	}
	var r io.Reader = conn
	if len(pending) > 0 {
		r = io.MultiReader(bytes.NewReader(slices.Clone(pending)), conn)
	}
	return &Channel{conn: conn, lines: wire.NewLineReader(r, MaxLineBytes), sendTimeout: DefaultSendTimeout}, nil
}

// unixConnFromFD wraps a unix socket descriptor in a *net.UnixConn that
// owns it. (net.FileConn works on a duplicate; the original is closed.)
func unixConnFromFD(fd int, name string) (*net.UnixConn, error) {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	conn, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		conn.Close()
		return nil, fmt.Errorf("not a unix socket (%T)", conn)
	}
	return uc, nil
}

// Interrupt makes a ReadLine under way, and every later one, return at
// once with an error for which Interrupted is true, keeping the part of a
// line read so far: the reader stops at a line's boundary or keeps what
// it has of the line, and nothing is lost. Resume undoes it.
func (c *Channel) Interrupt() error { return c.conn.SetReadDeadline(pastDeadline) }

// Resume lets ReadLine wait for lines again after Interrupt.
func (c *Channel) Resume() error { return c.conn.SetReadDeadline(time.Time{}) }

// Pending returns the bytes read from the worker and not yet returned as
// lines (ChannelFromFD takes them). Only while no ReadLine runs (after an
// interrupted one).
func (c *Channel) Pending() []byte { return c.lines.Pending() }

// FD is the number of the master's end's descriptor, for a handover
// across an exec; it stays the Channel's.
func (c *Channel) FD() int { return FD(c.conn) }

// pastDeadline is a read deadline long past: a read returns at once.
var pastDeadline = time.Unix(1, 0)

// Interrupted reports whether err is a read stopped by Interrupt (its
// deadline), after which reading may go on.
func Interrupted(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// FD is the descriptor number under a connection, listener or file, or
// -1. Unlike (*os.File).Fd it leaves the descriptor's mode alone (Fd makes
// it blocking for good, so that its reads could no longer be interrupted),
// as a handover across an exec needs.
func FD(c syscall.Conn) int {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1
	}
	fd := -1
	if rc.Control(func(u uintptr) { fd = int(u) }) != nil {
		return -1
	}
	return fd
}
