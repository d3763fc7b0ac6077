package nodecluster

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/sockets"
	"github.com/dutchmaster/dutchmaster/sockets/reuseport"
)

// Mode is how a registry answers a worker's query for a TCP server
// (docs/listeners.md). Unix and UDP servers are shared in every mode.
type Mode int

const (
	// Shared: one socket for every worker, sent as a shared handle; the
	// kernel wakes whichever worker waited last.
	Shared Mode = iota
	// Kernel: each worker slot has its own socket in the server's
	// SO_REUSEPORT group, sent as a shared handle to the workers of that
	// slot; the group's selection program picks the slot of each new
	// connection among the eligible ones (SetEligible).
	Kernel
	// RoundRobin: no handle; the master accepts on the one socket and
	// hands each connection to the next eligible worker (SetEligibleWorkers)
	// as Node's own primary does on Linux.
	RoundRobin
)

func (m Mode) String() string {
	switch m {
	case Kernel:
		return "kernel"
	case RoundRobin:
		return "round-robin"
	}
	return "shared"
}

// Balancing says how a registry balances its TCP servers.
type Balancing struct {
	Mode Mode
	// Groups has one entry per --listen listener in Kernel mode: its slot
	// sockets, nil for a listener that is not balanced. The registry
	// hands them out but neither closes them nor sets their eligible
	// slots (their owner does).
	Groups []*reuseport.Group
	// Log receives what the round-robin accept loops cannot tell a caller:
	// accept errors, a connection that no worker took.
	Log zerolog.Logger
}

// Worker is the worker a session speaks with, as the registry needs it.
type Worker struct {
	ID   int // its id: the eligible workers are named by it (RoundRobin)
	Slot int // its slot: which socket of a group it gets (Kernel)
	// SchedNone: the worker's environment asks for shared handles
	// (NODE_CLUSTER_SCHED_POLICY=none): under RoundRobin it gets the
	// socket itself, as under Shared.
	SchedNone bool
}

// EnvSchedPolicy is Node's variable for the cluster's scheduling policy:
// "rr" (round-robin) or "none" (shared handles).
const EnvSchedPolicy = "NODE_CLUSTER_SCHED_POLICY"

// SchedNone reports whether env (KEY=VALUE, the last one of a key wins, as
// in exec) asks for shared handles.
func SchedNone(env []string) bool {
	none := false
	for _, kv := range env {
		if v, ok := cutKey(kv, EnvSchedPolicy); ok {
			none = v == "none"
		}
	}
	return none
}

func cutKey(kv, key string) (string, bool) {
	if len(kv) > len(key) && kv[len(key)] == '=' && kv[:len(key)] == key {
		return kv[len(key)+1:], true
	}
	return "", false
}

// kernelGroup binds a reuseport group for a TCP query's address, as Node's
// primary would bind the address: the null address is [::] dual-stack (or
// 0.0.0.0 without IPv6), ipv6Only honoured. Its first socket is slot 0's.
func kernelGroup(q Query) (*reuseport.Group, error) {
	spec := sockets.Spec{Network: "tcp", Address: ":" + strconv.Itoa(q.Port)}
	if q.Flags&FlagIPv6Only != 0 {
		spec.Network = "tcp6"
		spec.Address = "[::]:" + strconv.Itoa(q.Port)
	}
	if q.Address != "" {
		ip, err := netip.ParseAddr(q.Address)
		if err != nil || q.IPv6 == ip.Is4() {
			return nil, fmt.Errorf("address %q of address type %s: %w", q.Address, map[bool]string{true: "6", false: "4"}[q.IPv6], syscall.EINVAL)
		}
		spec.Address = netip.AddrPortFrom(ip, uint16(q.Port)).String()
		switch {
		case ip.Is4():
			spec.Network = "tcp4"
		case q.Flags&FlagIPv6Only != 0 || !ip.IsUnspecified():
			spec.Network = "tcp6"
		}
	}
	return reuseport.Bind(spec, 1)
}

// slotSocket is worker slot's socket of h's group, bound now if the slot
// has none, made non-blocking (the worker's copy is shared with the
// slot's next worker during a replacement, see Registry). Under r.mu.
func (r *Registry) slotSocket(h *shared, slot int) (*os.File, error) {
	if err := h.group.OpenSlot(slot); err != nil {
		return nil, fmt.Errorf("%s: slot %d: %w", h.where, slot, err)
	}
	f := h.group.Socket(slot)
	if err := setNonblock(f); err != nil {
		return nil, err
	}
	if h.served != nil && !h.served[slot] {
		h.served[slot] = true
		r.applyEligible(h)
	}
	return f, nil
}

// SetEligible says which slots new connections go to on the groups the
// registry bound itself (the --listen groups have their own owner): each
// group takes those of its slots that a worker asked for. For the balance
// observer (actors/observers/balance.Target).
func (r *Registry) SetEligible(slots []int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.eligibleSlots = slices.Clone(slots)
	var err error
	for _, h := range r.handles {
		if h.served != nil {
			if e := r.applyEligible(h); e != nil && err == nil {
				err = e
			}
		}
	}
	return err
}

// applyEligible gives h's own group the eligible slots it serves. Under r.mu.
func (r *Registry) applyEligible(h *shared) error {
	var slots []int
	for _, s := range r.eligibleSlots {
		if h.served[s] {
			slots = append(slots, s)
		}
	}
	return h.group.SetEligible(slots)
}

// Kernel reports whether the registry hands out slot sockets of groups it
// bound itself, whose slots the runtime retires with QueueLen and
// CloseSlot.
func (r *Registry) Kernel() bool { return r.balance.Mode == Kernel }

// QueueLen is how many connections wait in the accept queues of slot's
// sockets in the groups the registry bound.
func (r *Registry) QueueLen(slot int) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	total := 0
	for _, h := range r.handles {
		if h.served != nil {
			n, err := h.group.QueueLen(slot)
			if err != nil {
				return total, err
			}
			total += n
		}
	}
	return total, nil
}

// CloseSlot closes slot's sockets in the groups the registry bound (a
// retired slot, out of the eligible ones and without a worker); a later
// query from the slot binds them again.
func (r *Registry) CloseSlot(slot int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var err error
	for _, h := range r.handles {
		if h.served != nil {
			delete(h.served, slot)
			if e := h.group.CloseSlot(slot); e != nil && err == nil {
				err = e
			}
		}
	}
	return err
}
