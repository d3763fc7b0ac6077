package sockets

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

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
// The socket file's mode is 0666, like systemd's own notify socket: senders
// are told apart by pid, not by file permission. Whoever can reach the
// directory can send, so put it in a directory only the master's user (and
// its workers' users) can traverse.
type NotifySocket struct {
	conn *net.UnixConn
	path string
	file *unixSocketFile
}

// NewNotifySocket binds a fresh notify socket in dir (which must exist),
// named notify-<random>.sock. Path gives the value for NOTIFY_SOCKET.
func NewNotifySocket(dir string) (*NotifySocket, error) {
	var rnd [8]byte
	rand.Read(rnd[:])
	path := filepath.Join(dir, "notify-"+hex.EncodeToString(rnd[:])+".sock")
	fail := func(what string, err error) (*NotifySocket, error) {
		return nil, fmt.Errorf("notify socket %s: %s: %w", path, what, err)
	}
	if len(path) > maxUnixPath {
		return nil, fmt.Errorf("notify socket %s: path is %d bytes, more than the %d a unix socket allows; use a shorter directory", path, len(path), maxUnixPath)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail("socket", err)
	}
	f := os.NewFile(uintptr(fd), "notify")
	defer f.Close() // net.FileConn keeps its own duplicate
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		return fail("setsockopt SO_PASSCRED", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		if err == unix.ENOENT {
			return fail("bind", fmt.Errorf("directory %s does not exist: %w", dir, err))
		}
		return fail("bind", err)
	}
	ok := false
	defer func() {
		if !ok {
			os.Remove(path)
		}
	}()
	if err := os.Chmod(path, 0o666); err != nil {
		return fail("chmod", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return fail("stat", err)
	}
	conn, err := net.FileConn(f)
	if err != nil {
		return fail("wrap", err)
	}
	ok = true
	return &NotifySocket{
		conn: conn.(*net.UnixConn),
		path: path,
		file: &unixSocketFile{path: path, dev: st.Dev, ino: st.Ino},
	}, nil
}

// Path is the socket's path, the value for a worker's NOTIFY_SOCKET.
func (n *NotifySocket) Path() string { return n.path }

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
	msg.Assignments = ParseNotify(msg.Payload)
	if !creds {
		return msg, ErrNoCredentials
	}
	return msg, nil
}

// Close removes the socket file (if it is still this socket's) and closes
// the socket; a blocked Read returns.
func (n *NotifySocket) Close() error {
	return errors.Join(n.file.remove(), n.conn.Close())
}
