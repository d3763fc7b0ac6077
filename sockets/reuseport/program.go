package reuseport

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// MaxSlots is how many slots one group can hold: the size of its socket
// array, fixed when the array is created. A slot costs an array entry (a
// pointer in the kernel), so the bound is generous.
const MaxSlots = 4096

// The eligible map holds two buffers, each a count followed by MaxSlots
// slot indexes, and the state map says which buffer is current. The master
// writes the buffer not in use, then switches: a program running at that
// moment reads either the old list or the new one, never a mix of both.
const (
	eligibleValueSize = 4 + 4*MaxSlots
	stateActive       = 0 // state key: which eligible buffer is current (0 or 1)
	stateNext         = 1 // state key: the round-robin counter
)

// skPass is SK_PASS: the connection goes on, to the socket the program
// selected or, if it selected none, to the one the kernel's hash picks.
const skPass = 1

// objects are one group's program and maps.
type objects struct {
	slots    *ebpf.Map // REUSEPORT_SOCKARRAY: slot index → socket
	eligible *ebpf.Map // ARRAY[2]: {count u32, slot [MaxSlots]u32}
	state    *ebpf.Map // ARRAY[2] u32: the current buffer, the counter
	prog     *ebpf.Program
	// migrates: the program was loaded as SELECT_OR_MIGRATE, so the
	// kernel asks it where to move the queue of a socket of the group
	// that closes (Linux 5.14 on), whatever net.ipv4.tcp_migrate_req says.
	migrates bool
}

// Descriptors is what one group holds of its process's descriptors besides
// its slot sockets: the program and its three maps.
const Descriptors = 4

func newObjects() (_ *objects, err error) {
	o := &objects{}
	defer func() {
		if err != nil {
			o.close()
		}
	}()
	if o.slots, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "dm_slots", Type: ebpf.ReusePortSockArray,
		KeySize: 4, ValueSize: 8, MaxEntries: MaxSlots,
	}); err != nil {
		return nil, fmt.Errorf("create the socket array: %w", err)
	}
	if o.eligible, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "dm_eligible", Type: ebpf.Array,
		KeySize: 4, ValueSize: eligibleValueSize, MaxEntries: 2,
	}); err != nil {
		return nil, fmt.Errorf("create the eligible map: %w", err)
	}
	if o.state, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "dm_state", Type: ebpf.Array,
		KeySize: 4, ValueSize: 4, MaxEntries: 2,
	}); err != nil {
		return nil, fmt.Errorf("create the state map: %w", err)
	}
	// SELECT_OR_MIGRATE first: the program then also picks where the
	// queue of a closed socket goes (an eligible slot) instead of the
	// kernel resetting it. A kernel without that attach type refuses the
	// load, and the plain SELECT is all there is.
	o.prog, err = loadProgram(o, ebpf.AttachSkReuseportSelectOrMigrate)
	if err == nil {
		o.migrates = true
		return o, nil
	}
	if errors.Is(err, os.ErrPermission) {
		return nil, fmt.Errorf("load the socket-selection program: %w", err)
	}
	if o.prog, err = loadProgram(o, ebpf.AttachSkReuseportSelect); err != nil {
		return nil, fmt.Errorf("load the socket-selection program: %w", err)
	}
	return o, nil
}

// loadProgram loads the selection program over o's maps, for attach. In
// the migrate case (a socket of the group closes, one of its queued
// connections is to move) the program runs as for a new connection and
// picks an eligible slot the same way; with none eligible it picks nothing
// and the kernel's hash chooses among the sockets still listening.
func loadProgram(o *objects, attach ebpf.AttachType) (*ebpf.Program, error) {
	return ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "dm_select",
		Type:         ebpf.SkReuseport,
		AttachType:   attach,
		License:      "GPL",
		Instructions: instructions(o.slots.FD(), o.eligible.FD(), o.state.FD()),
	})
}

func (o *objects) close() {
	if o.prog != nil {
		o.prog.Close()
	}
	for _, m := range []*ebpf.Map{o.state, o.eligible, o.slots} {
		if m != nil {
			m.Close()
		}
	}
}

// instructions is the socket-selection program:
//
//	active = state[0] & 1
//	next   = atomic fetch-and-add(state[1], 1)
//	list   = eligible[active]
//	if list.count == 0 || list.count > MaxSlots: return SK_PASS
//	key    = list.slot[next % list.count]
//	bpf_sk_select_reuseport(ctx, slots, &key, 0)
//	return SK_PASS
//
// The helper's result is not looked at: if it fails (a slot without a
// socket), nothing was selected and the kernel's hash picks, so a connection
// is never refused because of the program.
func instructions(slots, eligible, state int) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1), // ctx

		// r7 = state[stateActive] & 1
		asm.StoreImm(asm.RFP, -4, stateActive, asm.Word),
		asm.LoadMapPtr(asm.R1, state),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R7, asm.R0, 0, asm.Word),
		asm.And.Imm(asm.R7, 1),

		// r8 = fetch-and-add(state[stateNext], 1)
		asm.StoreImm(asm.RFP, -4, stateNext, asm.Word),
		asm.LoadMapPtr(asm.R1, state),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.Mov.Imm(asm.R8, 1),
		fetchAdd(asm.R0, asm.R8),

		// r9 = &eligible[r7]
		asm.StoreMem(asm.RFP, -4, asm.R7, asm.Word),
		asm.LoadMapPtr(asm.R1, eligible),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.Mov.Reg(asm.R9, asm.R0),

		// r1 = count; nothing eligible (or a count out of bounds): no choice
		asm.LoadMem(asm.R1, asm.R9, 0, asm.Word),
		asm.JEq.Imm(asm.R1, 0, "pass"),
		asm.JGT.Imm(asm.R1, MaxSlots, "pass"),

		// key = slot[next % count]; the bound check is for the verifier
		asm.Mod.Reg32(asm.R8, asm.R1),
		asm.JGE.Imm(asm.R8, MaxSlots, "pass"),
		asm.LSh.Imm(asm.R8, 2),
		asm.Add.Reg(asm.R9, asm.R8),
		asm.LoadMem(asm.R2, asm.R9, 4, asm.Word),
		asm.StoreMem(asm.RFP, -4, asm.R2, asm.Word),

		// bpf_sk_select_reuseport(ctx, slots, &key, 0)
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, slots),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -4),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnSkSelectReuseport.Call(),

		asm.Mov.Imm(asm.R0, skPass).WithSymbol("pass"),
		asm.Return(),
	}
}

// fetchAdd is `src = atomic fetch-and-add(*(u32 *)dst, src)`. The
// instruction's immediate must carry the operation (BPF_ADD|BPF_FETCH); the
// library's encoder (cilium/ebpf v0.22.0) writes the immediate from
// Constant before deriving it from the opcode, so without Constant set here
// the kernel would get a plain add that leaves src unchanged, and every
// connection would go to the same slot.
func fetchAdd(dst, src asm.Register) asm.Instruction {
	ins := asm.FetchAdd.Mem(dst, src, asm.Word, 0)
	ins.Constant = int64(asm.FetchAdd >> 8)
	return ins
}

var (
	availableOnce     sync.Once
	availableErr      error
	availableMigrates bool
)

// Available says whether this process can load the socket-selection program
// and its maps (it needs CAP_BPF or root, and a kernel with sk_reuseport
// programs and socket arrays, Linux 4.19 on). nil means Bind can balance;
// otherwise the error says why not, for the log line of a fallback. The
// answer is computed once.
func Available() error {
	availableOnce.Do(func() {
		o, err := newObjects()
		if err != nil {
			availableErr = explain(err)
			return
		}
		availableMigrates = o.migrates
		o.close()
	})
	return availableErr
}

// Migrates says whether the groups this process binds move a closed
// slot's queue to an eligible slot (Group.Migrates): the program loads as
// SELECT_OR_MIGRATE. False where it does not load at all.
func Migrates() bool {
	Available()
	return availableMigrates
}

// explain shortens the usual reasons a load fails to what an operator can act
// on, and keeps the error chain.
func explain(err error) error {
	switch {
	case errors.Is(err, os.ErrPermission):
		// The library's own hint (MEMLOCK) does not apply to the kernels
		// that have these maps' memory charged to the cgroup.
		return &loadError{text: "operation not permitted (needs CAP_BPF, or root)", err: err}
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("%w (the kernel has no sk_reuseport programs or socket arrays)", err)
	}
	return err
}

// loadError is a load failure told in a few words, still unwrapping to the
// library's error and its errno.
type loadError struct {
	text string
	err  error
}

func (e *loadError) Error() string { return e.text }
func (e *loadError) Unwrap() error { return e.err }
