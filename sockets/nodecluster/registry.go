package nodecluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/sockets"
	"github.com/dutchmaster/dutchmaster/sockets/reuseport"
	"github.com/dutchmaster/dutchmaster/sockets/wire"
)

// Registry holds the servers of Node's cluster workers: one socket per
// handle key (in Kernel mode, one per worker slot; see Balancing), bound at the first query and kept until Close, so that every
// worker of every generation that asks for the same server shares one
// socket and its accept queue. It is safe for concurrent use; a master has
// one, for all its workers.
//
// A query is answered, in this order:
//
//   - by descriptor (listen({fd: N})): the --listen listener the worker
//     inherited as fd N (LISTEN_FDS order, from 3), never a descriptor of
//     the master's own;
//   - by a --listen listener with the same port (TCP, UDP) or path (unix),
//     when the query's address is null, unspecified (0.0.0.0, ::) or the
//     listener's own: the operator's --listen decides where the app's
//     listen(PORT) really listens;
//   - by a socket the master binds now, as Node's primary would: TCP and UDP
//     are bound, not listening (the worker's listen() does that, once for
//     all); unix sockets as --listen binds them (a stale socket file is
//     replaced, mode 0660).
//
// Every shared socket is made non-blocking, as libuv makes the sockets of
// Node's own primary. O_NONBLOCK belongs to the socket, not to a
// descriptor, and Node's worker does not set it on a handle it receives:
// on a blocking socket, a worker woken for a connection that another
// worker accepted first would block in accept(2), its event loop stuck,
// deaf to the disconnect. (A --listen listener shared this way becomes
// non-blocking for every holder, the master's copy included.)
//
// A failed bind is not remembered: the next query tries again, as in Node.
// Sockets stay bound after every worker closed them (until Close): a port
// the app no longer listens on queues connections that nobody accepts.
type Registry struct {
	listeners []*sockets.Listener
	balance   Balancing
	log       zerolog.Logger

	mu              sync.Mutex
	handles         map[string]*shared
	closed          bool
	eligibleSlots   []int                    // Kernel: the last SetEligible
	eligibleWorkers map[int]bool             // RoundRobin: the last SetEligibleWorkers
	dispatchers     map[*os.File]*dispatcher // RoundRobin: one accept loop per socket
	sessions        map[*Session]bool        // RoundRobin: sessions that asked for a dispatcher's socket
	wg              sync.WaitGroup           // the accept loops
}

// shared is one server socket and what comes with it.
type shared struct {
	file     *os.File
	typ      string          // TypeNetNative or TypeDgramNative
	data     json.RawMessage // the first worker's data, echoed to all
	owned    io.Closer       // nil for a --listen listener, which its owner closes
	listener string          // the --listen listener's name, if it is one
	where    string          // what it is bound to, for logs

	// Kernel mode, TCP: the slot sockets (file is then nil); served are
	// the slots that asked, for a group the registry bound (nil for a
	// --listen listener's group).
	group  *reuseport.Group
	served map[int]bool
	// RoundRobin mode, TCP: the accept loop on file, and file's address.
	rr       *dispatcher
	sockname *Sockname
}

// Share is the answer to one query.
type Share struct {
	// File is the socket to send (do not close it), nil on failure.
	File *os.File
	// Type is the handle type of the NODE_HANDLE message.
	Type string
	// Data is echoed to the worker in the reply.
	Data json.RawMessage
	// Errno is 0, or the negative libuv errno of the failure; Err says why.
	Errno int
	Err   error
	// Listener names the --listen listener that serves the query, "" when
	// the master bound a socket of its own.
	Listener string
	// Where is the socket's address: tcp://[::]:3000, unix:///run/app.sock.
	Where string
	// Bound is set when this query bound the socket (the key's first).
	Bound bool
	// Balance is how the worker gets the server's connections: Shared (File
	// is the one socket), Kernel (File is its slot's socket, Slot) or
	// RoundRobin (no File: the master hands each connection over;
	// Sockname is the socket's address).
	Balance  Mode
	Slot     int
	Sockname *Sockname
}

// ErrClosed is the error of a Share after Close.
var ErrClosed = errors.New("nodecluster: registry closed")

// NewRegistry returns an empty registry of shared sockets. listeners are
// the --listen listeners, in the order workers inherit them (fd 3
// onwards); the registry shares them but never closes them.
func NewRegistry(listeners []*sockets.Listener) *Registry {
	return NewBalancedRegistry(listeners, Balancing{})
}

// NewBalancedRegistry returns an empty registry that balances its TCP
// servers as b says.
func NewBalancedRegistry(listeners []*sockets.Listener, b Balancing) *Registry {
	return &Registry{
		listeners: listeners, balance: b, log: b.Log, handles: map[string]*shared{},
		eligibleWorkers: map[int]bool{}, dispatchers: map[*os.File]*dispatcher{}, sessions: map[*Session]bool{},
	}
}

// Share answers a query as for a worker of slot 0 that asks for shared
// handles: the key's socket, bound now if it is the first query of its
// key.
func (r *Registry) Share(q Query) Share { return r.serve(q, nil, Worker{SchedNone: true}) }

// serve answers worker w's query (from session s, which a round-robin
// server joins). Under s's lock: it never calls into a session.
func (r *Registry) serve(q Query, s *Session, w Worker) Share {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return Share{Errno: UVEBADF, Err: ErrClosed, Data: q.Data}
	}
	h := r.handles[q.Key]
	bound := false
	if h == nil {
		var err error
		if h, err = r.open(q); err != nil {
			return Share{Errno: UVErrno(err), Err: err, Data: q.Data}
		}
		r.handles[q.Key] = h
		bound = h.owned != nil
	}
	if falsy(h.data) {
		h.data = q.Data
	}
	data := h.data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	sh := Share{File: h.file, Type: h.typ, Data: data, Listener: h.listener, Where: h.where, Bound: bound}
	switch {
	case h.group != nil:
		f, err := r.slotSocket(h, w.Slot)
		if err != nil {
			return Share{Errno: UVErrno(err), Err: err, Data: data}
		}
		sh.File, sh.Balance, sh.Slot = f, Kernel, w.Slot
	case h.rr != nil && !w.SchedNone && s != nil:
		r.join(h.rr, s, q.Key, w.ID)
		sh.File, sh.Balance, sh.Sockname = nil, RoundRobin, h.sockname
	}
	return sh
}

// Len is the number of sockets (keys) the registry holds.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.handles)
}

// Close stops the round-robin accept loops, closes the connections they
// hold and every socket the registry bound (and removes its unix socket
// files); the --listen listeners and their groups stay open. Later
// queries fail. Call it once no worker needs a socket any more.
func (r *Registry) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	var errs []error
	for _, d := range r.dispatchers {
		if err := d.close(); err != nil {
			errs = append(errs, err)
		}
	}
	sessions := r.sessions
	r.sessions = map[*Session]bool{}
	r.mu.Unlock()
	r.wg.Wait()
	for s := range sessions {
		s.dropHandovers()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, h := range r.handles {
		if h.owned != nil {
			errs = append(errs, h.owned.Close())
		}
	}
	r.handles = nil
	return errors.Join(errs...)
}

// setNonblock sets O_NONBLOCK on the socket behind f without changing what
// the *os.File believes (its Fd, which os/exec calls, must not undo it).
func setNonblock(f *os.File) error {
	raw, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = unix.SetNonblock(int(fd), true) }); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("%s: %w", f.Name(), os.NewSyscallError("fcntl O_NONBLOCK", serr))
	}
	return nil
}

// inUse reports a path taken by something that is not a socket as
// EADDRINUSE, keeping the reason.
type inUse struct{ error }

func (e inUse) Unwrap() []error { return []error{syscall.EADDRINUSE, e.error} }

// falsy is JavaScript's !value for a JSON value (absent is undefined):
// Node's primary keeps a key's data only once it is truthy.
func falsy(raw json.RawMessage) bool {
	switch string(bytes.TrimSpace(raw)) {
	case "", "null", "false", "0", `""`:
		return true
	}
	return false
}

// open finds or binds the socket of a key's first query, made
// non-blocking; in Kernel mode a TCP server is a group of slot sockets, in
// RoundRobin mode a TCP socket gets its accept loop.
func (r *Registry) open(q Query) (*shared, error) {
	if q.Network == "tcp" && r.balance.Mode == Kernel {
		l, i, err := r.listenerFor(q)
		switch {
		case err != nil:
			return nil, err
		case l == nil:
			g, err := kernelGroup(q)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", q, err)
			}
			return &shared{typ: TypeNetNative, owned: g, where: "tcp://" + g.Addr().String(), group: g, served: map[int]bool{}}, nil
		case i < len(r.balance.Groups) && r.balance.Groups[i] != nil:
			return &shared{typ: TypeNetNative, listener: l.Name(), where: l.Spec().URL(), group: r.balance.Groups[i]}, nil
		}
	}
	h, err := r.openShared(q)
	if err != nil {
		return nil, err
	}
	if err = setNonblock(h.file); err == nil && q.Network == "tcp" && r.balance.Mode == RoundRobin {
		err = r.roundRobin(h)
	}
	if err != nil {
		if h.owned != nil {
			h.owned.Close()
		}
		return nil, err
	}
	return h, nil
}

// listenerFor is the --listen listener that serves q, and its index; nil
// when the master binds q itself.
func (r *Registry) listenerFor(q Query) (*sockets.Listener, int, error) {
	l := r.match(q)
	if q.FD >= 0 {
		var err error
		if l, err = r.byFD(q); err != nil {
			return nil, 0, err
		}
	}
	return l, slices.Index(r.listeners, l), nil
}

// roundRobin starts the accept loop of h's socket, or joins the one
// another key of the same --listen listener started. A TCP socket only: a
// unix one stays shared.
func (r *Registry) roundRobin(h *shared) error {
	if d := r.dispatchers[h.file]; d != nil {
		h.rr, h.sockname = d, d.sockname
		return nil
	}
	if h.listener == "" {
		if err := listenFor(h.file); err != nil {
			return fmt.Errorf("%s: %w", h.where, err)
		}
	}
	d, err := newDispatcher(r, h.file, h.where)
	if err != nil || d == nil {
		return err // nil for a --listen unix socket: it stays shared
	}
	r.dispatchers[h.file] = d
	h.rr, h.sockname = d, d.sockname
	r.wg.Add(1)
	go d.run()
	return nil
}

// openShared finds or binds the one socket of a key.
func (r *Registry) openShared(q Query) (*shared, error) {
	typ := TypeNetNative
	if q.Network == "udp" {
		typ = TypeDgramNative
	}
	if q.FD >= 0 {
		l, err := r.byFD(q)
		if err != nil {
			return nil, err
		}
		return &shared{file: l.File(), typ: typ, listener: l.Name(), where: l.Spec().URL()}, nil
	}
	if l := r.match(q); l != nil {
		return &shared{file: l.File(), typ: typ, listener: l.Name(), where: l.Spec().URL()}, nil
	}
	switch q.Network {
	case "unix":
		l, err := sockets.Bind(sockets.Spec{Network: "unix", Address: q.Address})
		if err != nil {
			// Node's bind(2) on an existing path says EADDRINUSE, whatever
			// the file is.
			if errors.Is(err, syscall.EEXIST) {
				err = inUse{err}
			}
			return nil, err
		}
		return &shared{file: l.File(), typ: typ, owned: l, where: l.Spec().URL()}, nil
	case "tcp", "udp":
		f, err := r.bindInet(q)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", q, err)
		}
		where := q.String()
		if a, err := boundAddr(f); err == nil {
			where = q.Network + "://" + a.String()
		}
		return &shared{file: f, typ: typ, owned: f, where: where}, nil
	}
	return nil, fmt.Errorf("query %s: unknown network %q: %w", q.Key, q.Network, syscall.EINVAL)
}

// bindInet binds a TCP or UDP query's address as Node's primary would.
func (r *Registry) bindInet(q Query) (*os.File, error) {
	if q.Network == "tcp" && q.Address == "" {
		return bindTCPAny(q.Port, q.Flags)
	}
	var ip netip.Addr
	switch {
	case q.Address != "":
		var err error
		if ip, err = netip.ParseAddr(q.Address); err != nil {
			return nil, fmt.Errorf("address %q: %w", q.Address, syscall.EINVAL)
		}
	case q.IPv6:
		ip = netip.IPv6Unspecified()
	default:
		ip = netip.IPv4Unspecified()
	}
	if q.IPv6 == ip.Is4() {
		return nil, fmt.Errorf("address %s is not of address type %s: %w", ip, map[bool]string{true: "6", false: "4"}[q.IPv6], syscall.EINVAL)
	}
	return bindInet(q.Network, ip, q.Port, q.Flags)
}

// byFD is the --listen listener a worker inherited as q.FD.
func (r *Registry) byFD(q Query) (*sockets.Listener, error) {
	i := q.FD - wire.FirstFD
	if i < 0 || i >= len(r.listeners) {
		return nil, fmt.Errorf("fd %d is not a --listen listener of the worker (it has %d, from fd %d): %w",
			q.FD, len(r.listeners), wire.FirstFD, syscall.EINVAL)
	}
	l := r.listeners[i]
	if l.Spec().Stream() != (q.Network != "udp") {
		return nil, fmt.Errorf("fd %d is %s, not a %s socket: %w", q.FD, l.Spec().URL(), q.Network, syscall.EINVAL)
	}
	return l, nil
}

// match is the --listen listener that serves q, if any (the first).
func (r *Registry) match(q Query) *sockets.Listener {
	for _, l := range r.listeners {
		switch a := l.Addr().(type) {
		case *net.UnixAddr:
			if q.Network == "unix" && a.Name == q.Address {
				return l
			}
		case *net.TCPAddr:
			if q.Network == "tcp" && q.Port > 0 && a.Port == q.Port && sameHost(a.IP, q.Address) {
				return l
			}
		case *net.UDPAddr:
			if q.Network == "udp" && q.Port > 0 && a.Port == q.Port && sameHost(a.IP, q.Address) && strings.HasPrefix(l.Spec().Network, "udp") {
				return l
			}
		}
	}
	return nil
}

// sameHost says whether a listener bound to ip serves a query for address:
// the null or an unspecified address means any, else they must be equal.
func sameHost(ip net.IP, address string) bool {
	if address == "" {
		return true
	}
	want, err := netip.ParseAddr(address)
	if err != nil {
		return false
	}
	if want.IsUnspecified() {
		return true
	}
	got, ok := netip.AddrFromSlice(ip)
	return ok && got.Unmap() == want.Unmap().WithZone("")
}
