package sockets

import (
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Adopt wraps fd, a listening socket this process inherited (systemd's
// socket activation), as a Listener. want says what it should be: its
// Name is the listener's name; its Network, if set, must agree with the
// socket (tcp takes an IPv4 or IPv6 TCP socket, tcp4 and tcp6 only their
// family, udp likewise, unix a unix stream socket). The Listener's
// address is the socket's own: whoever created it (the socket unit)
// decides where it listens.
//
// The descriptor becomes the Listener's, close-on-exec and in blocking
// mode like a bound one. Close closes it but never removes a unix
// socket's file: it belongs to whoever created it, and outlives this
// process (that is the point of socket activation: connections wait in
// the socket's queue while no master runs).
func Adopt(fd int, want Spec) (*Listener, error) {
	fail := func(format string, args ...any) (*Listener, error) {
		return nil, fmt.Errorf("inherited fd %d (%s): %s", fd, want.Name, fmt.Sprintf(format, args...))
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fail("%v", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fail("not a socket")
	}
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return fail("SO_DOMAIN: %v", err)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fail("SO_TYPE: %v", err)
	}
	network, err := socketNetwork(domain, typ)
	if err != nil {
		return fail("%v", err)
	}
	if want.Network != "" && !compatible(want.Network, network) {
		return fail("a %s socket, but --listen %s wants %s", network, want.Name, want.Network)
	}
	if typ == unix.SOCK_STREAM {
		if on, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || on == 0 {
			return fail("a stream socket that is not listening")
		}
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname: %v", err)
	}
	addr, address := sockaddr(sa, network)
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return fail("close-on-exec: %v", err)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		return fail("blocking mode: %v", err)
	}
	spec := Spec{Name: want.Name, Network: network, Address: address, Mode: want.Mode}
	if want.Network != "" {
		spec.Network = want.Network
	}
	return &Listener{spec: spec, file: os.NewFile(uintptr(fd), spec.String()), addr: addr}, nil
}

// TakeOver is Adopt for a listener the previous image of this master
// held, in the new image of an upgrade in place. The socket's open file
// description is the workers' too, and they run on it in whatever mode
// they set (a Go worker makes it non-blocking; made blocking under it, its
// accept could not be interrupted by its drain): the takeover leaves the
// mode as it is. ownsFile says the master bound it (not systemd): a unix
// socket's file is then the master's, removed by Close as a bound one's is
// (if the path still names the same file then).
func TakeOver(fd int, want Spec, ownsFile bool) (*Listener, error) {
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return nil, fmt.Errorf("inherited fd %d (%s): %w", fd, want.Name, os.NewSyscallError("fcntl F_GETFL", err))
	}
	l, err := Adopt(fd, want)
	if err != nil {
		return nil, err
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags); err != nil {
		l.Close()
		return nil, fmt.Errorf("inherited fd %d (%s): %w", fd, want.Name, os.NewSyscallError("fcntl F_SETFL", err))
	}
	if !ownsFile || l.spec.Network != "unix" {
		return l, nil
	}
	var st unix.Stat_t
	if unix.Lstat(l.spec.Address, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK {
		l.socket = &unixSocketFile{path: l.spec.Address, dev: st.Dev, ino: st.Ino}
	}
	return l, nil
}

// socketNetwork names a socket's kind the way specs do.
func socketNetwork(domain, typ int) (string, error) {
	switch {
	case domain == unix.AF_INET && typ == unix.SOCK_STREAM:
		return "tcp4", nil
	case domain == unix.AF_INET6 && typ == unix.SOCK_STREAM:
		return "tcp6", nil
	case domain == unix.AF_INET && typ == unix.SOCK_DGRAM:
		return "udp4", nil
	case domain == unix.AF_INET6 && typ == unix.SOCK_DGRAM:
		return "udp6", nil
	case domain == unix.AF_UNIX && typ == unix.SOCK_STREAM:
		return "unix", nil
	}
	return "", fmt.Errorf("socket of domain %d and type %d: only TCP, UDP and unix stream sockets are supported", domain, typ)
}

// compatible: a spec's network accepts a socket of the given kind.
func compatible(want, got string) bool {
	switch want {
	case "tcp":
		return got == "tcp4" || got == "tcp6"
	case "udp":
		return got == "udp4" || got == "udp6"
	}
	return want == got
}

func sockaddr(sa unix.Sockaddr, network string) (net.Addr, string) {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		ip := net.IP(sa.Addr[:])
		if network[:3] == "udp" {
			return &net.UDPAddr{IP: ip, Port: sa.Port}, net.JoinHostPort(ip.String(), strconv.Itoa(sa.Port))
		}
		return &net.TCPAddr{IP: ip, Port: sa.Port}, net.JoinHostPort(ip.String(), strconv.Itoa(sa.Port))
	case *unix.SockaddrInet6:
		ip := net.IP(sa.Addr[:])
		if network[:3] == "udp" {
			return &net.UDPAddr{IP: ip, Port: sa.Port}, net.JoinHostPort(ip.String(), strconv.Itoa(sa.Port))
		}
		return &net.TCPAddr{IP: ip, Port: sa.Port}, net.JoinHostPort(ip.String(), strconv.Itoa(sa.Port))
	case *unix.SockaddrUnix:
		return &net.UnixAddr{Name: sa.Name, Net: "unix"}, sa.Name
	}
	return nil, ""
}
