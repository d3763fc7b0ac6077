package nodecluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/sockets"
	"github.com/dutchmaster/dutchmaster/sockets/reuseport"
)

// The in-place upgrade (docs/upgrade.md): the master hands its registry
// and every worker's session over to the new image of itself, descriptors
// by number (execve keeps the numbers). The workers are not told: a
// worker of the old image goes on with the sockets it was given, and a
// worker forked after the upgrade that asks for the same server gets the
// same socket.

// RegistryState is a registry as the master hands it over.
type RegistryState struct {
	// Balance is the registry's mode (Mode.String): the new image must
	// balance as the old one did.
	Balance string        `json:"balance"`
	Handles []HandleState `json:"handles,omitempty"`
	// EligibleSlots is the last SetEligible (Kernel).
	EligibleSlots []int `json:"eligible_slots,omitempty"`
}

// HandleState is one server of the registry, by its key.
type HandleState struct {
	Key string `json:"key"`
	// FD is the socket the registry bound for the key (the registry owns
	// it); -1 for a --listen listener's socket (Listener names it) and
	// for a Kernel group (Group holds its sockets).
	FD   int             `json:"fd"`
	Type string          `json:"type"`           // TypeNetNative or TypeDgramNative
	Data json.RawMessage `json:"data,omitempty"` // echoed to every worker
	// Listener is the --listen listener that serves the key: the new
	// image's listener of that name.
	Listener string `json:"listener,omitempty"`
	Where    string `json:"where"`
	// Kernel: the key's workers get slot sockets (Kernel mode, TCP).
	Kernel bool `json:"kernel,omitempty"`
	// Kernel mode, a group the registry bound: the group (GroupSpec is
	// what it was bound from) and the slots it serves. A --listen
	// listener's group is its owner's (Listener names it).
	Group     *reuseport.GroupState `json:"group,omitempty"`
	GroupSpec string                `json:"group_spec,omitempty"`
	Served    []int                 `json:"served,omitempty"`
}

// SessionState is a session as the master hands it over. A session
// outside the round-robin has nothing to give back at Close: its state is
// what it told and was told.
type SessionState struct {
	Online        bool `json:"online,omitempty"`
	Listening     bool `json:"listening,omitempty"`
	Disconnecting bool `json:"disconnecting,omitempty"` // the master sent disconnect
	Leaving       bool `json:"leaving,omitempty"`       // the worker sent exitedAfterDisconnect
	Gone          bool `json:"gone,omitempty"`          // its channel ended (Close)
	// Seq is the seq of the next message to the worker.
	Seq int64 `json:"seq"`
	// Keys are the servers the worker was given and has not closed.
	Keys []string `json:"keys,omitempty"`
	// Broken is the failed send that ended the session's sending: the
	// adopted session sends nothing either (the framing may be lost).
	Broken string `json:"broken,omitempty"`
	// SchedNone is the worker's Worker.SchedNone, read from its
	// environment at its fork.
	SchedNone bool `json:"sched_none,omitempty"`
}

// ErrBusy is the error of a Session.Handover caught between a message and
// its answer: retry a moment later.
var ErrBusy = errors.New("busy")

// Handover returns the registry's state and the descriptors it owns (the
// sockets it bound, its Kernel groups'), for an in-place upgrade. They
// stay open and owned by r: the caller makes them survive the exec and,
// if the exec fails, goes on with r as it was. The --listen listeners and
// their groups are their owner's to hand over. It refuses a registry with
// a round-robin accept loop.
func (r *Registry) Handover() (RegistryState, []int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return RegistryState{}, nil, ErrClosed
	}
	if len(r.dispatchers) > 0 {
		return RegistryState{}, nil, errors.New("an upgrade under --balance round-robin is not built: connections handed to a worker and not yet accepted would be lost")
	}
	st := RegistryState{Balance: r.balance.Mode.String(), EligibleSlots: slices.Clone(r.eligibleSlots)}
	var fds []int
	for _, key := range slices.Sorted(maps.Keys(r.handles)) {
		h := r.handles[key]
		hs := HandleState{Key: key, FD: -1, Type: h.typ, Data: h.data, Listener: h.listener, Where: h.where, Kernel: h.group != nil}
		switch {
		case h.served != nil:
			gs, gfds := h.group.Handover()
			hs.Group, hs.GroupSpec = &gs, h.group.Spec().String()
			hs.Served = slices.Sorted(maps.Keys(h.served))
			fds = append(fds, gfds...)
		case h.owned != nil:
			// Fd leaves the socket's mode alone: the registry made it
			// non-blocking behind the *os.File's back (setNonblock).
			hs.FD = int(h.file.Fd())
			fds = append(fds, hs.FD)
		}
		st.Handles = append(st.Handles, hs)
	}
	return st, fds, nil
}

// AdoptRegistry is the registry that st describes, in the new image after
// an in-place upgrade: a later query of a key it holds gets the same
// socket, and Close closes what the old registry owned. listeners are the
// new image's --listen listeners (adopted already) and groups their
// groups, as Balancing.Groups (b.Groups, when set, must be the same); b
// must balance as st says. The state's descriptors are the registry's
// from now on, made close-on-exec again (and closed if AdoptRegistry
// fails). Every shared socket is made non-blocking again: adopting a
// --listen listener made it blocking.
func AdoptRegistry(listeners []*sockets.Listener, groups []*reuseport.Group, b Balancing, st RegistryState) (_ *Registry, err error) {
	left := st.Handles // not adopted yet: their descriptors are closed on failure
	defer func() {
		if err != nil {
			for _, hs := range left {
				closeHandle(hs)
			}
		}
	}()
	switch {
	case b.Groups == nil:
		b.Groups = groups
	case !slices.Equal(b.Groups, groups):
		return nil, errors.New("adopt the Node.js servers: the balancing's groups are not the listeners' groups")
	}
	if st.Balance != b.Mode.String() {
		return nil, fmt.Errorf("adopt the Node.js servers: handed over under %s balance, adopted under %s", st.Balance, b.Mode)
	}
	r := NewBalancedRegistry(listeners, b)
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	r.eligibleSlots = slices.Clone(st.EligibleSlots)
	for len(left) > 0 {
		hs := left[0]
		left = left[1:]
		if r.handles[hs.Key] != nil {
			closeHandle(hs)
			return nil, fmt.Errorf("adopt the Node.js servers: key %q handed over twice", hs.Key)
		}
		h, err := r.adopt(hs)
		if err != nil {
			return nil, fmt.Errorf("adopt the Node.js server %s (key %q): %w", hs.Where, hs.Key, err)
		}
		r.handles[hs.Key] = h
	}
	return r, nil
}

// adopt rebuilds one handle; its descriptors are consumed, on failure too.
func (r *Registry) adopt(hs HandleState) (_ *shared, err error) {
	h := &shared{typ: hs.Type, data: hs.Data, listener: hs.Listener, where: hs.Where}
	if hs.Type != TypeNetNative && hs.Type != TypeDgramNative {
		closeHandle(hs)
		return nil, fmt.Errorf("handle type %q", hs.Type)
	}
	if hs.Group != nil {
		if !hs.Kernel || hs.Listener != "" {
			closeHandle(hs)
			return nil, errors.New("a group of slot sockets for a shared server")
		}
		spec, err := sockets.ParseSpec(hs.GroupSpec)
		if err != nil {
			closeHandle(hs)
			return nil, err
		}
		g, err := reuseport.AdoptGroup(spec, *hs.Group)
		if err != nil {
			return nil, err
		}
		h.group, h.owned, h.served = g, g, map[int]bool{}
		for _, s := range hs.Served {
			h.served[s] = true
		}
		return h, nil
	}
	if hs.Listener == "" {
		if hs.Kernel {
			closeHandle(hs)
			return nil, errors.New("slot sockets without their group")
		}
		if h.file, h.owned, err = adoptSocket(hs); err != nil {
			return nil, err
		}
		// It is still so (the mode belongs to the socket): made sure of
		// all the same, as for every shared socket.
		if err := setNonblock(h.file); err != nil {
			h.owned.Close()
			return nil, err
		}
		return h, nil
	}
	i := slices.IndexFunc(r.listeners, func(l *sockets.Listener) bool { return l.Name() == hs.Listener })
	if i < 0 {
		return nil, fmt.Errorf("no --listen listener %q", hs.Listener)
	}
	var g *reuseport.Group
	if r.balance.Mode == Kernel && i < len(r.balance.Groups) {
		g = r.balance.Groups[i]
	}
	switch {
	case hs.Kernel != (g != nil):
		return nil, fmt.Errorf("--listen %s: slot sockets handed over %v, a group now %v", hs.Listener, hs.Kernel, g != nil)
	case g != nil:
		h.group = g
		return h, nil
	}
	h.file = r.listeners[i].File()
	return h, setNonblock(h.file)
}

// adoptSocket wraps the socket the registry bound for a key and checks
// that it is the one the state says (its kind and address).
func adoptSocket(hs HandleState) (*os.File, io.Closer, error) {
	fd := hs.FD
	if fd < 0 {
		return nil, nil, fmt.Errorf("descriptor %d", fd)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return nil, nil, fmt.Errorf("descriptor %d: %w", fd, err)
	}
	// NewFile keeps the socket non-blocking without Go's believing it
	// put it so: Fd, which os/exec calls, then never makes it blocking.
	f := os.NewFile(uintptr(fd), hs.Where)
	fail := func(format string, args ...any) (*os.File, io.Closer, error) {
		f.Close()
		return nil, nil, fmt.Errorf("fd %d: %s", fd, fmt.Sprintf(format, args...))
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fail("not a socket: %v", err)
	}
	if want := map[string]int{TypeNetNative: unix.SOCK_STREAM, TypeDgramNative: unix.SOCK_DGRAM}[hs.Type]; typ != want {
		return fail("a socket of type %d, not %s", typ, hs.Type)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname: %v", err)
	}
	if u, ok := sa.(*unix.SockaddrUnix); ok {
		if where := "unix://" + u.Name; where != hs.Where {
			return fail("bound to %s, not %s", where, hs.Where)
		}
		return f, adoptedUnix(f, u.Name), nil
	}
	network := map[int]string{unix.SOCK_STREAM: "tcp", unix.SOCK_DGRAM: "udp"}[typ]
	if a, err := boundAddr(f); err != nil || network+"://"+a.String() != hs.Where {
		return fail("bound to %v (%v), not %s", a, err, hs.Where)
	}
	return f, f, nil
}

// unixOwned is a unix socket the registry bound, adopted: Close removes
// its file, as the listener that bound it would have, if the file at the
// path is still the one it was at the upgrade.
type unixOwned struct {
	file     *os.File
	path     string
	dev, ino uint64
	known    bool
}

func adoptedUnix(f *os.File, path string) *unixOwned {
	u := &unixOwned{file: f, path: path}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK {
		u.dev, u.ino, u.known = st.Dev, st.Ino, true
	}
	return u
}

func (u *unixOwned) Close() error {
	var st unix.Stat_t
	var errRemove error
	if u.known && unix.Lstat(u.path, &st) == nil && st.Dev == u.dev && st.Ino == u.ino {
		if err := os.Remove(u.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errRemove = fmt.Errorf("remove socket file: %w", err)
		}
	}
	return errors.Join(errRemove, u.file.Close())
}

// closeHandle closes a handle's descriptors that were not adopted.
func closeHandle(hs HandleState) {
	var fds []int
	if hs.Listener == "" && hs.FD >= 0 {
		fds = append(fds, hs.FD)
	}
	if g := hs.Group; g != nil {
		fds = append(fds, g.Program, g.SocketArray, g.EligibleMap, g.StateMap)
		fds = append(fds, slices.Collect(maps.Values(g.Sockets))...)
	}
	for _, fd := range slices.Compact(slices.Sorted(slices.Values(fds))) {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// Handover returns the session's state, for an in-place upgrade. It
// refuses (ErrBusy) a session caught between a message and its answer:
// a handle that waits for the worker's NODE_HANDLE_ACK (and what is
// queued behind it), a metrics request that waits for the worker's
// answer, a connection handed over and not answered. Those last a round
// trip: retry a moment later. s must not change between Handover and the
// exec.
func (s *Session) Handover() (SessionState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.waiting != nil || len(s.queue) > 0:
		return SessionState{}, fmt.Errorf("%w: a handle waits for its NODE_HANDLE_ACK (%d messages behind it); retry", ErrBusy, len(s.queue))
	case len(s.metricsWait) > 0:
		return SessionState{}, fmt.Errorf("%w: %d metrics requests wait for the worker's answer; retry", ErrBusy, len(s.metricsWait))
	case len(s.handed) > 0:
		return SessionState{}, fmt.Errorf("%w: %d connections handed over wait for the worker's answer; retry", ErrBusy, len(s.handed))
	}
	st := SessionState{SchedNone: s.worker.SchedNone,
		Online: s.online, Listening: s.listening, Disconnecting: s.disconnecting, Leaving: s.leaving, Gone: s.gone,
		Seq: s.seq, Keys: slices.Clone(s.keys),
	}
	if s.broken != nil {
		st.Broken = s.broken.Error()
	}
	return st, nil
}

// AdoptSession is the session that st describes, in the new image after
// an in-place upgrade: out writes on the worker's channel (rebuilt on the
// same descriptor), reg is the adopted registry, w the worker. Disconnect,
// Online, the metrics request and Close behave as they would have in the
// old image.
func AdoptSession(out Sender, reg *Registry, w Worker, st SessionState) *Session {
	w.SchedNone = w.SchedNone || st.SchedNone
	s := NewWorkerSession(out, reg, w)
	s.online, s.listening, s.disconnecting, s.leaving, s.gone = st.Online, st.Listening, st.Disconnecting, st.Leaving, st.Gone
	s.seq, s.keys = st.Seq, slices.Clone(st.Keys)
	if st.Broken != "" {
		s.broken = fmt.Errorf("before the upgrade: %s", st.Broken)
	}
	return s
}
