// Package reuseport spreads a TCP listener's connections evenly over
// worker slots, decided in the kernel: one SO_REUSEPORT socket per slot on
// the same address, and a socket-selection program attached to the group
// that picks, round-robin, among the slots said to be eligible. With no
// eligible slot the program does not choose and the kernel's own hash over
// the group does: a connection is never refused because of it.
//
// The package knows nothing of workers: the caller says which slots are
// eligible (SetEligible) and hands each slot's socket to whoever serves it.
package reuseport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/sockets"
)

// Group is one TCP listener bound as one socket per slot, the sockets in one
// reuseport group with the selection program attached. Its methods are safe
// for concurrent use.
type Group struct {
	spec sockets.Spec
	addr net.Addr // the first socket's address: every slot binds to it

	mu       sync.Mutex
	objs     *objects
	files    []*os.File // by slot, nil for a closed slot; open until CloseSlot or Close
	eligible []int      // the last list given to SetEligible
	active   uint32     // the eligible buffer the program reads
	closed   bool
}

// Bind binds spec (a TCP listener) once per slot, slots ≥ 1, each socket with
// SO_REUSEPORT on the same address, and attaches the selection program to
// the group. With port 0 the first socket gets a port from the kernel and
// the others bind to it. No slot is eligible yet: until SetEligible, the
// kernel's hash spreads connections over all the slots.
//
// Errors are *sockets.BindError for the binding (address in use, ...) and
// plain errors for the program (see Available).
func Bind(spec sockets.Spec, slots int) (_ *Group, err error) {
	switch spec.Network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("%s: only TCP listeners can be balanced", spec)
	}
	if slots < 1 || slots > MaxSlots {
		return nil, fmt.Errorf("%s: %d slots (want 1 to %d)", spec, slots, MaxSlots)
	}
	objs, err := newObjects()
	if err != nil {
		return nil, explain(err)
	}
	g := &Group{spec: spec, objs: objs}
	defer func() {
		if err != nil {
			g.Close()
		}
	}()
	// Both buffers empty, the first one current: nothing eligible.
	if err := g.writeList(0, nil); err != nil {
		return nil, err
	}
	for range slots {
		if _, err := g.addSlot(); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// Migrates says whether closing a slot's socket moves its queued
// connections to an eligible slot (the program is attached as
// SELECT_OR_MIGRATE, Linux 5.14 on) rather than resetting them.
func (g *Group) Migrates() bool { return g.objs.migrates }

// Spec is the listener the group was bound from.
func (g *Group) Spec() sockets.Spec { return g.spec }

// Addr is the address every slot's socket is bound to; for port 0 it
// carries the port the kernel picked.
func (g *Group) Addr() net.Addr { return g.addr }

// Slots is how many slot indexes the group has, closed ones included.
func (g *Group) Slots() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.files)
}

// Open counts the slots whose socket is open.
func (g *Group) Open() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, f := range g.files {
		if f != nil {
			n++
		}
	}
	return n
}

// Socket is the listening socket of slot, close-on-exec and in blocking mode
// (as sockets.Listener.File): for a worker's ExtraFiles. It stays owned by
// the group: do not close it. nil if there is no such slot or it is closed.
func (g *Group) Socket(slot int) *os.File {
	g.mu.Lock()
	defer g.mu.Unlock()
	if slot < 0 || slot >= len(g.files) {
		return nil
	}
	return g.files[slot]
}

// AddSlot binds one more socket into the group and returns its slot index.
// The new slot is not eligible until SetEligible says so.
func (g *Group) AddSlot() (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return 0, errClosed
	}
	return g.addSlot()
}

// OpenSlot binds slot's socket into the group unless it is open: a new
// slot, or one closed by CloseSlot that comes back. Like AddSlot's, the
// slot is not eligible until SetEligible says so.
func (g *Group) OpenSlot(slot int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return errClosed
	}
	if slot < 0 || slot >= MaxSlots {
		return fmt.Errorf("%s: slot %d (want 0 to %d)", g.spec, slot, MaxSlots-1)
	}
	for len(g.files) <= slot {
		g.files = append(g.files, nil)
	}
	if g.files[slot] != nil {
		return nil
	}
	return g.bindSlot(slot)
}

// CloseSlot takes slot's socket out of the group and closes it, copies held
// elsewhere included: the kernel stops listening on it, so no connection
// can reach it any more. What its queue still held (see QueueLen) moves to
// an eligible slot where the group migrates (Migrates), and is reset
// otherwise. Call it once the slot is out of the eligible list and no
// worker accepts on it. A slot that is not open is left alone.
func (g *Group) CloseSlot(slot int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed || slot < 0 || slot >= len(g.files) || g.files[slot] == nil {
		return nil
	}
	if slices.Contains(g.eligible, slot) {
		return fmt.Errorf("%s: slot %d is still eligible", g.spec, slot)
	}
	f := g.files[slot]
	g.files[slot] = nil
	var errs []error
	if err := g.objs.slots.Delete(uint32(slot)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		errs = append(errs, fmt.Errorf("%s: take slot %d's socket out of the socket array: %w", g.spec, slot, err))
	}
	// A worker's copy of the descriptor may still be open (a process it
	// left behind): a shutdown stops the listening for every copy.
	if err := unix.Shutdown(int(f.Fd()), unix.SHUT_RD); err != nil && !errors.Is(err, unix.ENOTCONN) {
		errs = append(errs, fmt.Errorf("%s: stop listening on slot %d: %w", g.spec, slot, os.NewSyscallError("shutdown", err)))
	}
	errs = append(errs, f.Close())
	return errors.Join(errs...)
}

// QueueLen is how many connections wait in slot's accept queue (the
// kernel's TCP_INFO on a listening socket: tcpi_unacked); 0 for a slot
// that is not open.
func (g *Group) QueueLen(slot int) (int, error) {
	f := g.Socket(slot)
	if f == nil {
		return 0, nil
	}
	raw, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var info *unix.TCPInfo
	var ierr error
	if err := raw.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		return 0, err
	}
	if ierr != nil {
		return 0, fmt.Errorf("%s: slot %d's queue: %w", g.spec, slot, os.NewSyscallError("getsockopt TCP_INFO", ierr))
	}
	return int(info.Unacked), nil
}

var errClosed = errors.New("reuseport: group closed")

func (g *Group) addSlot() (int, error) {
	slot := len(g.files)
	if slot >= MaxSlots {
		return 0, fmt.Errorf("%s: more than %d slots", g.spec, MaxSlots)
	}
	g.files = append(g.files, nil)
	if err := g.bindSlot(slot); err != nil {
		g.files = g.files[:slot]
		return 0, err
	}
	return slot, nil
}

// bindSlot binds slot's socket, an index of g.files that holds nil.
func (g *Group) bindSlot(slot int) error {
	address := g.spec.Address
	if g.addr != nil {
		// The later sockets bind where the first one is: the port it got
		// for port 0, the address a host name resolved to.
		address = g.addr.String()
	}
	f, addr, err := listen(g.spec, address)
	if err != nil {
		return err
	}
	// Attached through every socket, not only the first: the program
	// belongs to the group, which lives as long as one of its sockets, and
	// attaching it again to a group that has it changes nothing.
	if err := unix.SetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_EBPF, g.objs.prog.FD()); err != nil {
		f.Close()
		return fmt.Errorf("%s: attach the socket-selection program: %w", g.spec, os.NewSyscallError("setsockopt SO_ATTACH_REUSEPORT_EBPF", err))
	}
	if g.addr == nil {
		g.addr = addr
	}
	if err := g.objs.slots.Update(uint32(slot), uint64(f.Fd()), ebpf.UpdateAny); err != nil {
		f.Close()
		return fmt.Errorf("%s: put slot %d's socket in the socket array: %w", g.spec, slot, err)
	}
	g.files[slot] = f
	return nil
}

// SetEligible says which slots new connections go to, round-robin in the
// order given; a slot left out receives no new connection (what is already
// in its queue stays there). An empty list hands the choice back to the
// kernel's hash over every slot. Each slot must exist, at most once.
func (g *Group) SetEligible(slots []int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return errClosed
	}
	seen := make(map[int]bool, len(slots))
	for _, s := range slots {
		if s < 0 || s >= len(g.files) || g.files[s] == nil {
			return fmt.Errorf("%s: no open slot %d (the group has %d)", g.spec, s, len(g.files))
		}
		if seen[s] {
			return fmt.Errorf("%s: slot %d given twice", g.spec, s)
		}
		seen[s] = true
	}
	next := g.active ^ 1
	if err := g.writeList(next, slots); err != nil {
		return err
	}
	g.active = next
	g.eligible = append(g.eligible[:0], slots...)
	return nil
}

// Eligible is the last list SetEligible was given.
func (g *Group) Eligible() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int(nil), g.eligible...)
}

// writeList writes slots into eligible buffer buf, then makes buf current.
func (g *Group) writeList(buf uint32, slots []int) error {
	value := make([]byte, eligibleValueSize)
	ne := binary.NativeEndian
	ne.PutUint32(value[0:], uint32(len(slots)))
	for i, s := range slots {
		ne.PutUint32(value[4+4*i:], uint32(s))
	}
	if err := g.objs.eligible.Update(buf, value, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("%s: write the eligible slots: %w", g.spec, err)
	}
	if err := g.objs.state.Update(uint32(stateActive), buf, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("%s: switch the eligible slots: %w", g.spec, err)
	}
	return nil
}

// Close closes the group's sockets (copies held by workers stay open), the
// program and its maps. Later calls do nothing.
func (g *Group) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	var errs []error
	for _, f := range g.files {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	g.files = nil
	g.objs.close()
	return errors.Join(errs...)
}

// listen binds one plain-TCP listening socket with SO_REUSEPORT to address
// and returns a close-on-exec, blocking duplicate. Multipath TCP is off: a
// socket array refuses an MPTCP socket.
func listen(spec sockets.Spec, address string) (*os.File, net.Addr, error) {
	lc := ListenConfig()
	ln, err := lc.Listen(context.Background(), spec.Network, address)
	if err != nil {
		return nil, nil, &sockets.BindError{Spec: spec, Reason: reason(err), Err: err}
	}
	defer ln.Close() // the group keeps its own blocking duplicate
	raw, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		return nil, nil, err
	}
	dup, dupErr := -1, error(nil)
	if err := raw.Control(func(fd uintptr) {
		dup, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 3)
	}); err != nil {
		return nil, nil, err
	}
	if dupErr != nil {
		return nil, nil, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", dupErr)
	}
	if err := unix.SetNonblock(dup, false); err != nil {
		unix.Close(dup)
		return nil, nil, os.NewSyscallError("fcntl O_NONBLOCK", err)
	}
	return os.NewFile(uintptr(dup), spec.String()), ln.Addr(), nil
}

// reason is the errno's text when there is one ("address already in use"),
// else the whole error.
func reason(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}

// ListenConfig binds plain-TCP sockets with SO_REUSEPORT: sockets bound
// to one address with it share the connections (a reuseport group).
// Multipath TCP, Go's default for listeners, is off: a socket array
// refuses an MPTCP socket.
func ListenConfig() net.ListenConfig {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return os.NewSyscallError("setsockopt SO_REUSEPORT", serr)
	}}
	lc.SetMultipathTCP(false)
	return lc
}
