package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/dutchmaster/dutchmaster/sockets/wire"
)

// sendTimeout bounds one message to the master: 10 s. The master reads its
// channels continuously, so only a stuck master makes a send wait.
const sendTimeout = 10 * time.Second

// channel is the worker's end of the IPC channel.
type channel struct {
	conn *net.UnixConn
	wmu  sync.Mutex
}

func claimChannel(e environ) (*channel, error) {
	fdStr, ok := e.lookup(wire.EnvChannelFD)
	mode, _ := e.lookup(wire.EnvChannelSerialization)
	e.unset(wire.EnvChannelFD)
	e.unset(wire.EnvChannelSerialization)
	if !ok {
		return nil, nil
	}
	if mode != "" && mode != wire.SerializationJSON {
		return nil, fmt.Errorf("worker: %s=%q is not supported (only %q)", wire.EnvChannelSerialization, mode, wire.SerializationJSON)
	}
	fd, err := strconv.Atoi(fdStr)
	if err != nil || fd < 0 {
		return nil, fmt.Errorf("worker: %s=%q is not a descriptor", wire.EnvChannelFD, fdStr)
	}
	f := os.NewFile(uintptr(fd), "ipc")
	defer f.Close() // net.FileConn keeps a close-on-exec duplicate
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("worker: %s=%d: %w", wire.EnvChannelFD, fd, err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("worker: %s=%d is not a unix socket", wire.EnvChannelFD, fd)
	}
	return &channel{conn: uc}, nil
}

// send writes v as one JSON line; concurrent sends never interleave.
func (c *channel) send(v any) error {
	line, err := wire.Encode(v)
	if err != nil {
		return fmt.Errorf("worker: send: %w", err)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.conn.SetWriteDeadline(time.Now().Add(sendTimeout))
	if _, err := c.conn.Write(line); err != nil {
		if peerGone(err) || errors.Is(err, net.ErrClosed) {
			return fmt.Errorf("%w: %w", ErrDisconnected, err)
		}
		return fmt.Errorf("worker: send: %w", err)
	}
	return nil
}

// watch reads the master's messages until the channel ends, calling drain
// on {"event":"disconnect"} and at EOF. Other messages are ignored.
func (c *channel) watch(drain func()) {
	lines := wire.NewLineReader(c.conn, wire.MaxLineBytes)
	for {
		line, err := lines.ReadLine()
		if errors.Is(err, wire.ErrLineTooLong) {
			continue
		}
		if err != nil {
			drain()
			return
		}
		var ev wire.Event
		if json.Unmarshal(line, &ev) == nil && ev.Event == wire.EventDisconnect {
			drain()
		}
	}
}

// Send writes v to the master as one JSON line (json.Marshal(v) + "\n"),
// like Node.js's process.send(v). Safe for concurrent use. It returns
// ErrNoChannel without an IPC channel, and an error wrapping
// ErrDisconnected once the master has closed it.
func Send(v any) error {
	in := current()
	if in.ch == nil {
		return in.noChannel()
	}
	return in.ch.send(v)
}

// RequestRestart asks the master to replace this worker:
// {"event":"request-restart"}. The master starts a replacement and, once it
// is ready, drains this worker (Drained closes). It needs the IPC channel.
func RequestRestart() error {
	return Send(wire.Event{Event: wire.EventRequestRestart})
}

func (in *inherited) noChannel() error {
	if in.chErr != nil {
		return in.chErr
	}
	return ErrNoChannel
}
