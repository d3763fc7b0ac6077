//go:build unix

package worker

import (
	"fmt"
	"net"
	"os"
	"syscall"
)

// adopt turns inherited descriptor fd into a net.Listener or
// net.PacketConn. The descriptor itself is closed: the returned value holds
// a close-on-exec duplicate, so no grandchild inherits it.
func adopt(fd int, name string) (Socket, error) {
	s := Socket{Name: name, FD: fd}
	sotype, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE)
	if err != nil {
		return s, fmt.Errorf("worker: inherited fd %d (%s): not an open socket: %w", fd, name, err)
	}
	syscall.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	switch sotype {
	case syscall.SOCK_STREAM, syscall.SOCK_SEQPACKET:
		if acc, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN); err == nil && acc == 0 {
			return s, fmt.Errorf("worker: inherited fd %d (%s) is a stream socket that does not listen", fd, name)
		}
		s.Listener, err = net.FileListener(f)
	case syscall.SOCK_DGRAM:
		s.PacketConn, err = net.FilePacketConn(f)
	default:
		err = fmt.Errorf("socket type %d is neither stream nor datagram", sotype)
	}
	if err != nil {
		return s, fmt.Errorf("worker: inherited fd %d (%s): %w", fd, name, err)
	}
	return s, nil
}
