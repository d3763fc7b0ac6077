package nodecluster

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// bindInet binds a TCP or UDP socket the way libuv does for Node's
// primary, without listening: the first worker's listen() does that, on
// the shared socket, for everyone. TCP sockets get SO_REUSEADDR and, for
// IPv6, IPV6_V6ONLY as FlagIPv6Only says (so [::] is dual-stack by
// default); UDP sockets get SO_REUSEADDR with FlagReuseAddr and IPV6_V6ONLY
// with FlagIPv6Only. The descriptor is close-on-exec and blocking.
func bindInet(network string, ip netip.Addr, port, flags int) (*os.File, error) {
	domain, typ := unix.AF_INET6, unix.SOCK_STREAM
	if ip.Is4() {
		domain = unix.AF_INET
	}
	if network == "udp" {
		typ = unix.SOCK_DGRAM
	}
	sa, err := sockaddr(ip, port)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if network == "tcp" || flags&FlagReuseAddr != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return nil, os.NewSyscallError("setsockopt SO_REUSEADDR", err)
		}
	}
	if domain == unix.AF_INET6 && (network == "tcp" || flags&FlagIPv6Only != 0) {
		v6only := 0
		if flags&FlagIPv6Only != 0 {
			v6only = 1
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only); err != nil {
			return nil, os.NewSyscallError("setsockopt IPV6_V6ONLY", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return nil, os.NewSyscallError("bind", err)
	}
	ok = true
	return os.NewFile(uintptr(fd), network+"://"+netip.AddrPortFrom(ip, uint16(port)).String()), nil
}

func sockaddr(ip netip.Addr, port int) (unix.Sockaddr, error) {
	if ip.Is4() {
		return &unix.SockaddrInet4{Port: port, Addr: ip.As4()}, nil
	}
	sa := &unix.SockaddrInet6{Port: port, Addr: ip.As16()}
	if zone := ip.Zone(); zone != "" {
		if n, err := strconv.Atoi(zone); err == nil {
			sa.ZoneId = uint32(n)
		} else {
			ifi, err := net.InterfaceByName(zone)
			if err != nil {
				return nil, fmt.Errorf("zone %q: %w", zone, unix.EINVAL)
			}
			sa.ZoneId = uint32(ifi.Index)
		}
	}
	return sa, nil
}

// bindTCPAny binds Node's null address: [::] dual-stack first, 0.0.0.0
// when the host cannot (no IPv6). EADDRINUSE is final, as for Node, whose
// libuv reports it only later, at listen().
func bindTCPAny(port, flags int) (*os.File, error) {
	f, err := bindInet("tcp", netip.IPv6Unspecified(), port, flags)
	if err == nil || errors.Is(err, unix.EADDRINUSE) {
		return f, err
	}
	return bindInet("tcp", netip.IPv4Unspecified(), port, 0)
}

// boundAddr is the address a socket is bound to, for logs and tests.
func boundAddr(f *os.File) (netip.AddrPort, error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var sa unix.Sockaddr
	var serr error
	if err := raw.Control(func(fd uintptr) { sa, serr = unix.Getsockname(int(fd)) }); err != nil {
		return netip.AddrPort{}, err
	}
	if serr != nil {
		return netip.AddrPort{}, serr
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)), nil
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port)), nil
	}
	return netip.AddrPort{}, fmt.Errorf("not an inet socket: %T", sa)
}
