package worker

import (
	"fmt"
	"net"
	"strings"
)

// Socket is one inherited socket: exactly one of Listener (tcp, unix) and
// PacketConn (udp) is set.
type Socket struct {
	Name       string // from LISTEN_FDNAMES; "LISTEN_FD_<fd>" when unnamed
	FD         int    // the descriptor it was inherited at (3, 4, ...)
	Listener   net.Listener
	PacketConn net.PacketConn
}

// Sockets returns every inherited socket, in the master's --listen order.
// The first call of any function of this package claims them (and unsets
// LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES); later calls return the same
// values, so closing one closes it for everyone. The error wraps
// ErrNotActivated when there is nothing meant for this process.
func Sockets() ([]Socket, error) {
	in := current()
	return append([]Socket(nil), in.sockets...), in.socketsErr
}

// Listeners returns the inherited stream listeners by name.
func Listeners() (map[string]net.Listener, error) {
	in := current()
	if in.socketsErr != nil {
		return nil, in.socketsErr
	}
	m := map[string]net.Listener{}
	for _, s := range in.sockets {
		if _, dup := m[s.Name]; s.Listener != nil && !dup {
			m[s.Name] = s.Listener
		}
	}
	return m, nil
}

// Listener returns the inherited stream listener called name (the first,
// if two share it). Outside dutchmaster the error wraps ErrNotActivated:
//
//	l, err := worker.Listener("web")
//	if errors.Is(err, worker.ErrNotActivated) {
//		l, err = net.Listen("tcp", ":8080") // running by hand
//	}
func Listener(name string) (net.Listener, error) {
	s, err := lookup(name)
	if err != nil {
		return nil, err
	}
	if s.Listener == nil {
		return nil, fmt.Errorf("worker: inherited socket %q is a datagram socket; use PacketConn", name)
	}
	return s.Listener, nil
}

// PacketConn returns the inherited datagram socket called name.
func PacketConn(name string) (net.PacketConn, error) {
	s, err := lookup(name)
	if err != nil {
		return nil, err
	}
	if s.PacketConn == nil {
		return nil, fmt.Errorf("worker: inherited socket %q is a stream listener; use Listener", name)
	}
	return s.PacketConn, nil
}

func lookup(name string) (Socket, error) {
	in := current()
	if in.socketsErr != nil {
		return Socket{}, in.socketsErr
	}
	var names []string
	for _, s := range in.sockets {
		if s.Name == name {
			return s, nil
		}
		names = append(names, s.Name)
	}
	return Socket{}, fmt.Errorf("worker: no inherited socket named %q (have %s)", name, strings.Join(names, ", "))
}
