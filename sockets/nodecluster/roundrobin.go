package nodecluster

import (
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The round-robin mode: what Node's primary does on Linux by default
// (lib/internal/cluster/round_robin_handle.js). The master listens on the
// server's one socket and a goroutine per socket accepts; each connection
// goes to the next eligible worker as
//
//	{cmd:'NODE_HANDLE', type:'net.Native', msg:{cmd:'NODE_CLUSTER', act:'newconn', key, seq}} + the descriptor
//
// and the worker answers {cmd:'NODE_CLUSTER', ack: seq, accepted}. The
// master closes its copy once the worker accepted; a worker that refuses
// (its server is closed) or goes away without answering gives the
// connection to the next worker. The worker's queryServer is answered
// without a handle, with the socket's address (sockname), so that its
// server.address() works.
//
// A worker is eligible when the registry was told so (SetEligibleWorkers:
// it listens and does not drain) and it asked for the server and has not
// closed it. The accept loop reads the eligible workers from an atomic
// copy, rebuilt only when the set changes: the only lock on a
// connection's path is the chosen worker's session's.

// Sockname is a TCP socket's address as Node's getsockname gives it.
type Sockname struct {
	Address string `json:"address"`
	Family  string `json:"family"` // IPv4 or IPv6
	Port    int    `json:"port"`
}

// newconnMessage hands a connection over: {cmd, act: newconn, key, seq}.
type newconnMessage struct {
	Cmd string `json:"cmd"`
	Act string `json:"act"`
	Key string `json:"key"`
	Seq int64  `json:"seq"`
}

// maxHandovers bounds the connections one worker holds unanswered; with
// every eligible worker at the bound, the accept loop waits and new
// connections wait in the kernel's accept queue. Node hands a worker one
// at a time, a round trip each; a few in flight keep a fast worker busy,
// and the bound keeps a stuck one from gathering descriptors.
const maxHandovers = 64

// backlog is the accept queue length of a socket the master listens on
// for round-robin: Node's default.
const backlog = 511

// member is a worker that asked for a dispatcher's socket, with its key.
type member struct {
	s      *Session
	key    string
	worker int
}

// dispatcher accepts on one socket and hands the connections over.
type dispatcher struct {
	reg      *Registry
	where    string
	ln       *os.File        // a duplicate of the socket in Go's poller, closed to stop
	raw      syscall.RawConn // ln's, for accept4 with the flags a worker needs
	sockname *Sockname

	all    []member                 // every worker that asked, under reg.mu
	roster atomic.Pointer[[]member] // the eligible ones, one per worker, by id
	next   atomic.Uint64

	wake   chan struct{} // a worker freed room, or the roster changed
	stop   chan struct{}
	closed atomic.Bool

	mu     sync.Mutex
	parked []*handover // connections no worker could take yet
}

// handover is one accepted connection on its way to a worker.
type handover struct {
	d     *dispatcher
	file  *os.File
	tried []*Session // workers that refused it
}

// newDispatcher prepares the accept loop of a listening socket; nil
// without an error for a socket that is not TCP.
func newDispatcher(r *Registry, f *os.File, where string) (*dispatcher, error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	dup, domain := -1, 0
	var serr error
	if err := raw.Control(func(fd uintptr) {
		if domain, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN); serr != nil {
			return
		}
		dup, serr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 3)
	}); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if serr != nil {
		return nil, fmt.Errorf("%s: %w", where, serr)
	}
	if domain != unix.AF_INET && domain != unix.AF_INET6 {
		unix.Close(dup)
		return nil, nil
	}
	// Non-blocking (the registry made it so): the copy waits in Go's
	// poller, and closing it ends a wait under way.
	ln := os.NewFile(uintptr(dup), where)
	lraw, err := ln.SyscallConn()
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	d := &dispatcher{reg: r, where: where, ln: ln, raw: lraw, sockname: sockname(f), wake: make(chan struct{}, 1), stop: make(chan struct{})}
	d.roster.Store(&[]member{})
	return d, nil
}

// join adds s's worker to d's members. Under r.mu.
func (r *Registry) join(d *dispatcher, s *Session, key string, worker int) {
	d.all = append(d.all, member{s: s, key: key, worker: worker})
	r.sessions[s] = true
	d.publish(r.eligibleWorkers)
	s.later = append(s.later, d.kick)
}

// leave takes s out of every dispatcher (its worker is gone), or only out
// of key's when key is not "" (its worker closed that server), and returns
// the dispatchers to kick once no lock is held.
func (r *Registry) leave(s *Session, key string) []*dispatcher {
	r.mu.Lock()
	defer r.mu.Unlock()
	if key == "" {
		delete(r.sessions, s)
	}
	var changed []*dispatcher
	for _, d := range r.dispatchers {
		n := len(d.all)
		d.all = slices.DeleteFunc(d.all, func(m member) bool { return m.s == s && (key == "" || m.key == key) })
		if len(d.all) != n {
			d.publish(r.eligibleWorkers)
			changed = append(changed, d)
		}
	}
	return changed
}

// SetEligibleWorkers says which workers (by id) new connections go to in
// RoundRobin mode: those that listen and do not drain. For the balance
// observer; it never blocks on a connection's path.
func (r *Registry) SetEligibleWorkers(workers []int) {
	r.mu.Lock()
	r.eligibleWorkers = make(map[int]bool, len(workers))
	for _, w := range workers {
		r.eligibleWorkers[w] = true
	}
	ds := make([]*dispatcher, 0, len(r.dispatchers))
	for _, d := range r.dispatchers {
		d.publish(r.eligibleWorkers)
		ds = append(ds, d)
	}
	r.mu.Unlock()
	for _, d := range ds {
		d.kick()
	}
}

// publish rebuilds the roster from the members and the eligible workers.
// Under reg.mu.
func (d *dispatcher) publish(eligible map[int]bool) {
	var ro []member
	for _, m := range d.all {
		if eligible[m.worker] && !slices.ContainsFunc(ro, func(o member) bool { return o.s == m.s }) {
			ro = append(ro, m)
		}
	}
	slices.SortFunc(ro, func(a, b member) int { return a.worker - b.worker })
	d.roster.Store(&ro)
}

// run is the accept loop.
func (d *dispatcher) run() {
	defer d.reg.wg.Done()
	pause := 5 * time.Millisecond
	for {
		d.flush()
		if !d.ready() {
			select {
			case <-d.wake:
				continue
			case <-d.stop:
				return
			}
		}
		f, err := d.accept()
		switch {
		case err == nil:
			pause = 5 * time.Millisecond
			d.handOver(&handover{d: d, file: f})
		case d.closed.Load():
			return // the copy was closed: Close
		default:
			// Out of descriptors, most likely: wait for some to close,
			// as net/http's server does, rather than spin.
			d.reg.log.Warn().Str("address", d.where).Err(err).Dur("retry_in", pause).Msg("round-robin: accept failed")
			select {
			case <-time.After(pause):
			case <-d.stop:
				return
			}
			pause = min(2*pause, time.Second)
		}
	}
}

// ready says whether a worker can take a connection now.
func (d *dispatcher) ready() bool {
	d.mu.Lock()
	parked := len(d.parked)
	d.mu.Unlock()
	if parked > 0 {
		return false
	}
	for _, m := range *d.roster.Load() {
		if m.s.handovers.Load() < maxHandovers {
			return true
		}
	}
	return false
}

// accept takes the next connection, close-on-exec and non-blocking as
// libuv accepts: the descriptor the worker gets is its socket.
func (d *dispatcher) accept() (*os.File, error) {
	for {
		var nfd int
		var aerr error
		err := d.raw.Read(func(fd uintptr) bool {
			nfd, aerr = accept4(int(fd))
			return aerr != unix.EAGAIN
		})
		if err != nil {
			return nil, err
		}
		switch aerr {
		case nil:
			// The worker gets it non-blocking, as libuv accepts; the
			// flag is set once the master's File is made, so that it
			// stays out of Go's poller (the master never reads it).
			f := os.NewFile(uintptr(nfd), "conn")
			if err := unix.SetNonblock(nfd, true); err != nil {
				f.Close()
				return nil, os.NewSyscallError("fcntl O_NONBLOCK", err)
			}
			return f, nil
		case unix.ECONNABORTED, unix.EINTR:
			continue // the client gave up before the accept
		}
		return nil, os.NewSyscallError("accept4", aerr)
	}
}

func accept4(fd int) (int, error) {
	nfd, _, errno := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(fd), 0, 0, unix.SOCK_CLOEXEC, 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(nfd), nil
}

// handOver gives h to the next eligible worker that takes it. With none
// that can now, h waits (parked) for one; refused by every eligible
// worker, it is closed (its client sees a reset).
func (d *dispatcher) handOver(h *handover) {
	members := *d.roster.Load()
	n := uint64(len(members))
	refused := 0
	start := d.next.Add(1)
	for i := range n {
		m := members[(start+i)%n]
		if slices.Contains(h.tried, m.s) {
			refused++
			continue
		}
		if m.s.offer(h, m.key) {
			return
		}
	}
	if n > 0 && refused == int(n) {
		d.reg.log.Warn().Str("address", d.where).Int("workers", int(n)).
			Msg("round-robin: every eligible worker refused a connection; closed")
		h.file.Close()
		return
	}
	d.park(h)
}

// retry gives back a connection that s did not take.
func (h *handover) retry(s *Session) {
	h.tried = append(h.tried, s)
	h.d.handOver(h)
}

func (d *dispatcher) park(h *handover) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed.Load() {
		h.file.Close()
		return
	}
	d.parked = append(d.parked, h)
}

// flush hands the parked connections over again.
func (d *dispatcher) flush() {
	d.mu.Lock()
	ps := d.parked
	d.parked = nil
	d.mu.Unlock()
	for _, h := range ps {
		d.handOver(h)
	}
}

// kick follows a change that may let a worker take a connection: room
// freed, the roster changed.
func (d *dispatcher) kick() {
	d.mu.Lock()
	parked := len(d.parked) > 0
	d.mu.Unlock()
	if parked {
		d.flush()
	}
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// close stops the accept loop (the caller waits for it) and closes the
// parked connections: nobody will take them.
func (d *dispatcher) close() error {
	d.mu.Lock()
	d.closed.Store(true)
	ps := d.parked
	d.parked = nil
	d.mu.Unlock()
	close(d.stop)
	err := d.ln.Close()
	for _, h := range ps {
		h.file.Close()
	}
	return err
}

// sockname is the socket's address for the worker's server.address().
func sockname(f *os.File) *Sockname {
	a, err := boundAddr(f)
	if err != nil {
		return nil
	}
	family := "IPv6"
	if a.Addr().Is4() {
		family = "IPv4"
	}
	return &Sockname{Address: a.Addr().String(), Family: family, Port: int(a.Port())}
}

// listenFor makes a socket the master bound listen, for its own accept loop.
func listenFor(f *os.File) error {
	raw, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var lerr error
	if err := raw.Control(func(fd uintptr) { lerr = unix.Listen(int(fd), backlog) }); err != nil {
		return err
	}
	return os.NewSyscallError("listen", lerr)
}
