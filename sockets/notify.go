package sockets

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/dutchmaster/dutchmaster/sockets/wire"
	"golang.org/x/sys/unix"
)

// MaxNotifyDatagram is the largest sd_notify datagram read whole: 4096
// bytes, systemd's own bound. A larger one is reported as
// ErrDatagramTooLarge and dropped.
const MaxNotifyDatagram = 4096

// maxPassedFDs is how many descriptors a datagram may carry (FDSTORE=1)
// before the kernel drops the rest; all of them are closed on receipt.
const maxPassedFDs = 32

var (
	// ErrDatagramTooLarge: one datagram exceeded MaxNotifyDatagram and was
	// dropped; the Notification still carries the sender's credentials.
	ErrDatagramTooLarge = errors.New("sockets: notify datagram larger than 4096 bytes; dropped")
	// ErrNoCredentials: one datagram came without SCM_CREDENTIALS (the
	// kernel always attaches them while SO_PASSCRED is on, so this is not
	// expected); its sender is unknown.
	ErrNoCredentials = errors.New("sockets: notify datagram without sender credentials")
)

// NotifySocket receives sd_notify datagrams (READY=1, STATUS=..., ...) from
// workers on one AF_UNIX SOCK_DGRAM socket. SO_PASSCRED is on, so the kernel
// attaches each sender's pid, uid and gid; senders cannot forge them.
//
// The socket lives in Linux's abstract namespace (@dutchmaster-notify-<32
// hex>), not in a directory: it has no file, so a master that is killed
// leaves nothing behind, and the name goes when the socket is closed. An
// abstract socket has no permissions either: any process in the master's
// network namespace can send to it, as any user could to a 0666 socket
// file. Senders are told apart by the kernel's pid, never by who could
// reach the socket, so a stranger's datagram is attributed to no worker.
type NotifySocket struct {
	conn *net.UnixConn
	addr string
}

// notifyNamePrefix starts every notify socket's address; '@' marks the
// abstract namespace, as NOTIFY_SOCKET writes it.
const notifyNamePrefix = "@dutchmaster-notify-"

// notifyBindAttempts bounds the fresh names tried when one is taken. With
// 128 random bits a collision is all but impossible by chance; it takes a
// process that binds the names it sees in /proc/net/unix, and the bound
// keeps such a squatter from holding up the master's start for ever.
const notifyBindAttempts = 8

// newNotifyName draws a fresh notify socket address; tests replace it to
// make names collide.
var newNotifyName = func() string {
	var rnd [16]byte
	rand.Read(rnd[:])
	return notifyNamePrefix + hex.EncodeToString(rnd[:])
}

// NewNotifySocket binds a fresh notify socket in the abstract namespace,
// @dutchmaster-notify-<32 hex>, drawing another name if one is in use
// (up to 8). Path gives the value for NOTIFY_SOCKET.
func NewNotifySocket() (*NotifySocket, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("notify socket: socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), "notify")
	defer f.Close() // net.FileConn keeps its own duplicate
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		return nil, fmt.Errorf("notify socket: setsockopt SO_PASSCRED: %w", err)
	}
	var addr string
	for range notifyBindAttempts {
		addr = newNotifyName()
		// x/sys/unix turns the leading '@' into the NUL byte that makes
		// the address abstract.
		err = unix.Bind(fd, &unix.SockaddrUnix{Name: addr})
		if err != unix.EADDRINUSE {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("notify socket %s: bind: %w", addr, err)
	}
	conn, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("notify socket %s: wrap: %w", addr, err)
	}
	return &NotifySocket{conn: conn.(*net.UnixConn), addr: addr}, nil
}

// Path is the socket's address, the value for a worker's NOTIFY_SOCKET:
// "@" and the abstract name, the form sd_notify clients (libsystemd,
// go-systemd, Go's net package) read as an abstract address.
func (n *NotifySocket) Path() string { return n.addr }

// Read waits for the next datagram and returns it with its sender's
// credentials and its assignments parsed (ParseNotify). Descriptors a sender
// attached (FDSTORE=1) are closed: the master stores none.
//
// Errors about one datagram leave the socket usable: ErrDatagramTooLarge
// (the Notification has the sender but no payload) and ErrNoCredentials.
// After Close, Read returns an error wrapping net.ErrClosed. Read is for one
// reader goroutine.
func (n *NotifySocket) Read() (Notification, error) {
	buf := make([]byte, MaxNotifyDatagram)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(4*maxPassedFDs))
	nb, noob, flags, _, err := n.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return Notification{}, fmt.Errorf("notify socket: %w", err)
	}
	var msg Notification
	creds := false
	cmsgs, _ := unix.ParseSocketControlMessage(oob[:noob])
	for i := range cmsgs {
		if fds, err := unix.ParseUnixRights(&cmsgs[i]); err == nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
			continue
		}
		if uc, err := unix.ParseUnixCredentials(&cmsgs[i]); err == nil {
			msg.PID, msg.UID, msg.GID = int(uc.Pid), int(uc.Uid), int(uc.Gid)
			creds = true
		}
	}
	if flags&unix.MSG_TRUNC != 0 {
		return msg, ErrDatagramTooLarge
	}
	msg.Payload = string(buf[:nb])
	msg.Assignments = wire.ParseNotify(msg.Payload)
	if !creds {
		return msg, ErrNoCredentials
	}
	return msg, nil
}

// NotifySocketFromFD takes over a notify socket from a descriptor
// inherited across an exec (the master's previous image bound it at
// path, which stays its address: an abstract name belongs to the socket,
// not to a process). The descriptor is the NotifySocket's from now on.
func NotifySocketFromFD(fd int, path string) (*NotifySocket, error) {
	conn, err := unixConnFromFD(fd, "notify")
	if err != nil {
		return nil, fmt.Errorf("notify socket fd %d: %w", fd, err)
	}
	if err := unix.SetsockoptInt(FD(conn), unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		conn.Close()
		return nil, fmt.Errorf("notify socket fd %d: setsockopt SO_PASSCRED: %w", fd, err)
	}
	return &NotifySocket{conn: conn, addr: path}, nil
}

// Interrupt makes a Read under way, and every later one, return at once
// with an error for which Interrupted is true; the datagrams stay queued
// in the socket. Resume undoes it.
func (n *NotifySocket) Interrupt() error { return n.conn.SetReadDeadline(pastDeadline) }

// Resume lets Read wait for datagrams again after Interrupt.
func (n *NotifySocket) Resume() error { return n.conn.SetReadDeadline(time.Time{}) }

// FD is the number of the socket's descriptor, for a handover across an
// exec; it stays the NotifySocket's.
func (n *NotifySocket) FD() int { return FD(n.conn) }

// Close closes the socket, which frees its name; a blocked Read returns.
func (n *NotifySocket) Close() error {
	return n.conn.Close()
}
