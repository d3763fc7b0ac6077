package control

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// MaxReply bounds a reply line the client reads (a status of thousands of
// workers fits many times over).
const MaxReply = 16 << 20

// Client is one connection to a master's control socket.
type Client struct {
	conn net.Conn
	r    *bufio.Reader
	path string
}

// DialError says in the operator's terms why Dial failed; errors.Is
// finds the system's error in it (syscall.ECONNREFUSED: a stale socket).
type DialError struct {
	msg string
	err error
}

func (e *DialError) Error() string { return e.msg }
func (e *DialError) Unwrap() error { return e.err }

// Dial connects to the control socket at path. Errors say what is wrong
// in the operator's terms: no master there, a stale socket, no permission.
func Dial(path string, timeout time.Duration) (*Client, error) {
	d := net.Dialer{Timeout: timeout}
	conn, err := d.Dial("unix", path)
	if err != nil {
		switch {
		case errors.Is(err, syscall.ENOENT):
			return nil, &DialError{fmt.Sprintf("%s: no control socket (is the master running, with this --name or --control?)", path), err}
		case errors.Is(err, syscall.ECONNREFUSED):
			return nil, &DialError{fmt.Sprintf("%s: no master accepts on this socket (it is stale: the master died)", path), err}
		case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
			return nil, &DialError{fmt.Sprintf("%s: permission denied (the control socket is for the master's user and root)", path), err}
		}
		return nil, err
	}
	return &Client{conn: conn, r: bufio.NewReaderSize(conn, 64<<10), path: path}, nil
}

// Do sends one request and reads its reply. A reply with OK false is
// returned as is, with a nil error: the master answered.
func (c *Client) Do(req Request) (Reply, error) {
	return c.DoStream(req, nil)
}

// DoStream is Do that passes each progress line before the reply to
// progress (nil: they are skipped). Progress lines come only when
// req.Progress asks for them.
func (c *Client) DoStream(req Request, progress func(Progress)) (Reply, error) {
	return c.DoLines(req, progress, nil)
}

// DoLines is DoStream that also passes each log line before the reply
// to logs (nil: they are skipped); a logs request's lines come so.
func (c *Client) DoLines(req Request, progress func(Progress), logs func(LogLine)) (Reply, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return Reply{}, err
	}
	_, werr := c.conn.Write(append(b, '\n'))
	// Even when the write fails, the master may have answered first (a
	// refused peer is told why, and the connection closed): read it.
	for {
		line, err := readLine(c.r, MaxReply)
		var ll LogLineMessage
		if err == nil && bytes.HasPrefix(line, []byte(`{"log":`)) && json.Unmarshal(line, &ll) == nil && ll.Log != nil {
			if logs != nil {
				logs(*ll.Log)
			}
			continue
		}
		rep, p, err := c.decode(line, err, werr)
		if err != nil || p == nil {
			return rep, err
		}
		if progress != nil {
			progress(*p)
		}
	}
}

// decode reads one line from the master: a reply, or a progress line.
func (c *Client) decode(line []byte, err, werr error) (Reply, *Progress, error) {
	if err != nil && werr != nil {
		return Reply{}, nil, fmt.Errorf("%s: %w", c.path, werr)
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			return Reply{}, nil, fmt.Errorf("%s: the master closed the connection without a reply", c.path)
		}
		return Reply{}, nil, fmt.Errorf("%s: %w", c.path, err)
	}
	var pl ProgressLine
	if json.Unmarshal(line, &pl) == nil && pl.Progress != nil {
		return Reply{}, pl.Progress, nil
	}
	var rep Reply
	if err := json.Unmarshal(line, &rep); err != nil {
		return Reply{}, nil, fmt.Errorf("%s: malformed reply: %w", c.path, err)
	}
	return rep, nil, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// readLine reads one line of at most limit bytes.
func readLine(r *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > limit {
			return nil, fmt.Errorf("reply longer than %d bytes", limit)
		}
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF && len(line) > 0:
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

// SetDeadline bounds the requests still to come on this connection.
func (c *Client) SetDeadline(t time.Time) error { return c.conn.SetDeadline(t) }
