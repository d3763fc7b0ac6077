package sockets

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Listener is a socket bound by the master. The master keeps it open for its
// whole life and hands copies of it to workers; it never accepts on it.
//
// The descriptor is close-on-exec (a worker gets it only through
// ExtraFiles) and in blocking mode, as systemd hands sockets out: receivers
// such as Go's net.FileListener or Node.js switch it to non-blocking
// themselves, and naive blocking accept loops work unchanged.
type Listener struct {
	spec   Spec
	file   *os.File
	addr   net.Addr
	socket *unixSocketFile // unix listeners: the path to remove on Close

	closeOnce sync.Once
	closeErr  error
}

// Bind binds and, for stream sockets, listens on spec once. Errors are
// *BindError and start with the spec's URL: tcp://127.0.0.1:80: address
// already in use. The accept backlog is the kernel's maximum
// (net.core.somaxconn).
//
// For unix sockets Bind handles the path (see bindUnix): a stale socket file
// that nobody accepts on is replaced, a live one or a path that is not a
// socket is refused, and the file gets spec.Mode before any client can
// connect.
func Bind(spec Spec) (*Listener, error) {
	if spec.Network == "unix" {
		return bindUnix(spec)
	}
	var (
		sock   syscall.Conn
		closer interface{ Close() error }
		addr   net.Addr
		err    error
	)
	var lc net.ListenConfig
	if spec.Stream() {
		var ln net.Listener
		ln, err = lc.Listen(context.Background(), spec.Network, spec.Address)
		if err == nil {
			sock, closer, addr = ln.(syscall.Conn), ln, ln.Addr()
		}
	} else {
		var pc net.PacketConn
		pc, err = lc.ListenPacket(context.Background(), spec.Network, spec.Address)
		if err == nil {
			sock, closer, addr = pc.(syscall.Conn), pc, pc.LocalAddr()
		}
	}
	if err != nil {
		return nil, bindError(spec, err)
	}
	defer closer.Close() // the master keeps its own blocking duplicate
	file, err := blockingDup(sock, spec)
	if err != nil {
		return nil, &BindError{Spec: spec, Reason: "duplicate the socket: " + err.Error(), Err: err}
	}
	return &Listener{spec: spec, file: file, addr: addr}, nil
}

// BindAll binds specs in order. A spec without a name gets DefaultName(i).
// If one fails, the listeners already bound are closed and its error is
// returned.
func BindAll(specs []Spec) ([]*Listener, error) {
	listeners := make([]*Listener, 0, len(specs))
	for i, spec := range specs {
		if spec.Name == "" {
			spec.Name = DefaultName(i)
		}
		l, err := Bind(spec)
		if err != nil {
			for _, done := range listeners {
				done.Close()
			}
			return nil, err
		}
		listeners = append(listeners, l)
	}
	return listeners, nil
}

// Name is the spec's name ("" if it had none; BindAll always sets one).
func (l *Listener) Name() string { return l.spec.Name }

// Spec is the spec the listener was bound from.
func (l *Listener) Spec() Spec { return l.spec }

// Addr is the bound address; for port 0 it carries the port the kernel
// picked.
func (l *Listener) Addr() net.Addr { return l.addr }

// File is the master's copy of the socket, for exec.Cmd.ExtraFiles and
// Channel.SendWithFD. It stays owned by the Listener: do not close it.
func (l *Listener) File() *os.File { return l.file }

func (l *Listener) String() string { return l.spec.String() }

// Close closes the master's copy of the socket; workers' copies stay open
// until they close them. A unix listener's socket file is removed first,
// unless the path now names another file (someone rebound it). Close is for
// shutdown, once no worker needs the socket any more; later calls return the
// first call's result.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		var errRemove error
		if l.socket != nil {
			errRemove = l.socket.remove()
		}
		l.closeErr = errors.Join(errRemove, l.file.Close())
	})
	return l.closeErr
}

// blockingDup returns a close-on-exec, blocking-mode duplicate of sock's
// descriptor (numbered 3 or above), leaving sock itself untouched.
func blockingDup(sock syscall.Conn, spec Spec) (*os.File, error) {
	raw, err := sock.SyscallConn()
	if err != nil {
		return nil, err
	}
	dup := -1
	var dupErr error
	if err := raw.Control(func(fd uintptr) {
		dup, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 3)
	}); err != nil {
		return nil, err
	}
	if dupErr != nil {
		return nil, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", dupErr)
	}
	if err := unix.SetNonblock(dup, false); err != nil {
		unix.Close(dup)
		return nil, os.NewSyscallError("fcntl O_NONBLOCK", err)
	}
	return os.NewFile(uintptr(dup), spec.String()), nil
}

// bindError turns an error from net.Listen into a *BindError that reads
// "tcp://127.0.0.1:80: address already in use" and still unwraps to the
// errno.
func bindError(spec Spec, err error) error {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		var dns *net.DNSError
		if errors.As(err, &dns) {
			return &BindError{Spec: spec, Reason: fmt.Sprintf("cannot resolve host %q: %s", dns.Name, dns.Err), Err: err}
		}
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return &BindError{Spec: spec, Reason: ae.Err, Err: err}
		}
		return &BindError{Spec: spec, Err: err}
	}
	reason := errno.Error()
	switch errno {
	case syscall.EACCES:
		reason += " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
	case syscall.EADDRNOTAVAIL:
		reason += " (no local interface has this address)"
	case syscall.EAFNOSUPPORT:
		reason += " (this address family is not available on this host)"
	}
	return &BindError{Spec: spec, Reason: reason, Err: errno}
}
