package reuseport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/sockets"
)

// GroupState is a group as the master hands it to the new image of
// itself at an in-place upgrade (docs/upgrade.md): the descriptors by
// number (execve keeps the numbers) and what the kernel does not say.
type GroupState struct {
	// The descriptors of the selection program and its three maps.
	Program     int `json:"program"`
	SocketArray int `json:"socket_array"`
	EligibleMap int `json:"eligible_map"`
	StateMap    int `json:"state_map"`
	// Sockets is each open slot's socket, by slot.
	Sockets map[int]int `json:"sockets"`
	// Slots is how many slot indexes the group has, closed ones included
	// (Group.Slots).
	Slots int `json:"slots"`
	// Eligible is the last list SetEligible was given.
	Eligible []int `json:"eligible,omitempty"`
	// Active is the eligible buffer the program reads (0 or 1): the
	// adopted group's next SetEligible writes the other one.
	Active uint32 `json:"active"`
	// Migrates: the program was loaded as SELECT_OR_MIGRATE.
	Migrates bool `json:"migrates,omitempty"`
	// Addr is where every slot binds (the port the kernel picked for
	// port 0), so that a slot bound after the upgrade joins the group.
	Addr string `json:"addr"`
}

// Handover returns the group's state and every descriptor it holds (the
// program, its maps, the open slots' sockets), for an in-place upgrade.
// The descriptors stay open and owned by g: the caller makes them survive
// the exec (clears close-on-exec) and, if the exec fails, goes on with g
// as it was. g must not change between Handover and the exec. A closed
// group hands over nothing: a zero state, no descriptors.
func (g *Group) Handover() (GroupState, []int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return GroupState{}, nil
	}
	st := GroupState{
		Program:     g.objs.prog.FD(),
		SocketArray: g.objs.slots.FD(),
		EligibleMap: g.objs.eligible.FD(),
		StateMap:    g.objs.state.FD(),
		Sockets:     map[int]int{},
		Slots:       len(g.files),
		Eligible:    slices.Clone(g.eligible),
		Active:      g.active,
		Migrates:    g.objs.migrates,
	}
	if g.addr != nil {
		st.Addr = g.addr.String()
	}
	fds := []int{st.Program, st.SocketArray, st.EligibleMap, st.StateMap}
	for slot, f := range g.files {
		if f != nil {
			// Fd leaves the mode alone: the group's files were made
			// blocking, or wrapped as they were (AdoptGroup), so Go
			// never put them in non-blocking mode itself.
			st.Sockets[slot] = int(f.Fd())
			fds = append(fds, st.Sockets[slot])
		}
	}
	return st, fds
}

// AdoptGroup is the group that st describes, in the new image after an
// in-place upgrade: the descriptors are this process's from now on, made
// close-on-exec again, and closed by the group's Close (or at once if
// AdoptGroup fails: nothing can serve without them). spec is the
// listener the group was bound from. Every socket keeps its blocking mode.
//
// The state is checked against the kernel, so that a descriptor number
// mixed up on the way is an error here rather than connections going
// astray: the program and the maps must be of the group's kinds, the live
// buffer must hold st.Eligible, and each slot's socket must listen on
// st.Addr and be the socket the socket array holds for that slot.
func AdoptGroup(spec sockets.Spec, st GroupState) (_ *Group, err error) {
	fds := []int{st.Program, st.SocketArray, st.EligibleMap, st.StateMap}
	for _, slot := range slices.Sorted(maps.Keys(st.Sockets)) {
		fds = append(fds, st.Sockets[slot])
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s: adopt the slot sockets: %s", spec, fmt.Sprintf(format, args...))
	}
	g := &Group{spec: spec, objs: &objects{migrates: st.Migrates}, eligible: slices.Clone(st.Eligible), active: st.Active}
	owned := 0 // fds[:owned] are wrapped (g.Close closes them) or closed
	defer func() {
		if err != nil {
			g.Close()
			for _, fd := range slices.Compact(slices.Sorted(slices.Values(fds[owned:]))) {
				if fd >= 0 {
					unix.Close(fd)
				}
			}
		}
	}()
	for i, fd := range fds {
		if fd < 0 || slices.Contains(fds[:i], fd) {
			return nil, fail("descriptor %d (or given twice)", fd)
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
			return nil, fail("descriptor %d: %v", fd, err)
		}
	}
	if st.Slots < 0 || st.Slots > MaxSlots || st.Active > 1 {
		return nil, fail("%d slots, buffer %d", st.Slots, st.Active)
	}
	// The library owns the descriptor from the call on, and closes it
	// when it fails.
	g.objs.prog, err = ebpf.NewProgramFromFD(st.Program)
	owned++
	if err != nil {
		return nil, fail("program (fd %d): %v", st.Program, err)
	}
	for _, m := range []struct {
		dst  **ebpf.Map
		fd   int
		spec ebpf.MapSpec
	}{
		{&g.objs.slots, st.SocketArray, ebpf.MapSpec{Type: ebpf.ReusePortSockArray, KeySize: 4, ValueSize: 8, MaxEntries: MaxSlots}},
		{&g.objs.eligible, st.EligibleMap, ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: eligibleValueSize, MaxEntries: 2}},
		{&g.objs.state, st.StateMap, ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 2}},
	} {
		*m.dst, err = ebpf.NewMapFromFD(m.fd)
		owned++
		if err != nil {
			return nil, fail("map (fd %d): %v", m.fd, err)
		}
		if err := m.spec.Compatible(*m.dst); err != nil {
			return nil, fail("fd %d is not the group's %v map: %v", m.fd, m.spec.Type, err)
		}
	}
	if g.objs.prog.Type() != ebpf.SkReuseport {
		return nil, fail("fd %d is a %v program, not the selection program", st.Program, g.objs.prog.Type())
	}
	if err := g.checkEligible(); err != nil {
		return nil, fail("%v", err)
	}
	if st.Addr != "" {
		if g.addr, err = net.ResolveTCPAddr(spec.Network, st.Addr); err != nil {
			return nil, fail("address %q: %v", st.Addr, err)
		}
	}
	g.files = make([]*os.File, st.Slots)
	for _, slot := range slices.Sorted(maps.Keys(st.Sockets)) {
		fd := st.Sockets[slot]
		if slot < 0 || slot >= st.Slots {
			return nil, fail("socket of slot %d, the group has %d", slot, st.Slots)
		}
		// NewFile keeps the socket's mode: a blocking one stays out of
		// Go's poller, and Fd never changes a non-blocking one (made so
		// by its user, nodecluster) back to blocking.
		g.files[slot] = os.NewFile(uintptr(fd), spec.String())
		owned++
		if err := g.checkSocket(slot); err != nil {
			return nil, fail("%v", err)
		}
	}
	for _, s := range g.eligible {
		if s < 0 || s >= len(g.files) || g.files[s] == nil {
			return nil, fail("eligible slot %d is not open", s)
		}
	}
	return g, nil
}

// checkEligible checks that the state map makes g.active live and that it
// holds g.eligible.
func (g *Group) checkEligible() error {
	var active uint32
	if err := g.objs.state.Lookup(uint32(stateActive), &active); err != nil {
		return fmt.Errorf("read the live buffer: %w", err)
	}
	if active != g.active {
		return fmt.Errorf("buffer %d is live, the state says %d", active, g.active)
	}
	value := make([]byte, eligibleValueSize)
	if err := g.objs.eligible.Lookup(active, value); err != nil {
		return fmt.Errorf("read the eligible slots: %w", err)
	}
	ne := binary.NativeEndian
	n := ne.Uint32(value)
	live := make([]int, 0, n)
	for i := range min(n, MaxSlots) {
		live = append(live, int(ne.Uint32(value[4+4*i:])))
	}
	if !slices.Equal(live, g.eligible) {
		return fmt.Errorf("the live buffer holds the eligible slots %v, the state says %v", live, g.eligible)
	}
	return nil
}

// checkSocket checks that slot's socket is a TCP socket listening on
// g.addr and the one the socket array holds for slot (the array answers a
// lookup with the socket's cookie).
func (g *Group) checkSocket(slot int) error {
	fd := int(g.files[slot].Fd())
	if on, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || on == 0 {
		return fmt.Errorf("slot %d (fd %d) is not a listening socket (%v)", slot, fd, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("slot %d (fd %d): getsockname: %w", slot, fd, err)
	}
	var port int
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		port = sa.Port
	case *unix.SockaddrInet6:
		port = sa.Port
	default:
		return fmt.Errorf("slot %d (fd %d) is not a TCP socket", slot, fd)
	}
	if g.addr == nil || port != g.addr.(*net.TCPAddr).Port {
		return fmt.Errorf("slot %d (fd %d) is bound to port %d, the group to %v", slot, fd, port, g.addr)
	}
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		return fmt.Errorf("slot %d (fd %d): SO_COOKIE: %w", slot, fd, err)
	}
	var inArray uint64
	if err := g.objs.slots.Lookup(uint32(slot), &inArray); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("slot %d (fd %d) is not in the socket array", slot, fd)
		}
		return fmt.Errorf("slot %d: read the socket array: %w", slot, err)
	}
	if inArray != cookie {
		return fmt.Errorf("fd %d is not slot %d's socket", fd, slot)
	}
	return nil
}
