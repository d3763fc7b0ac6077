package reuseport

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/dutchmaster/dutchmaster/sockets/testproc"
	"golang.org/x/sys/unix"
)

// handOverDup is Handover through JSON with every descriptor duplicated,
// as the exec would leave them to the new image while the old image's
// objects still hold the originals: the test closes those, as the exec
// does, and the copies live on.
func handOverDup(t *testing.T, g *Group) GroupState {
	t.Helper()
	st, fds := g.Handover()
	if want := Descriptors + g.Open(); len(fds) != want {
		t.Fatalf("Handover gave %d descriptors, want %d (%v)", len(fds), want, fds)
	}
	dup := testproc.DupFDs(t, fds)
	back := testproc.ThroughJSON(t, st)
	back.Program, back.SocketArray = dup[back.Program], dup[back.SocketArray]
	back.EligibleMap, back.StateMap = dup[back.EligibleMap], dup[back.StateMap]
	for slot, fd := range back.Sockets {
		back.Sockets[slot] = dup[fd]
	}
	return back
}

// TestHandoverAdoptedGroupBalancesOn: a group handed over and adopted (by
// duplicated descriptors, the first group then closed) goes on as if
// nothing happened: the same spread, SetEligible writes the buffer that is
// not live, a new slot joins the group and is chosen, a closed slot's
// queue moves, and Close releases every descriptor.
func TestHandoverAdoptedGroupBalancesOn(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("the socket-selection program is not available here: %v", err)
	}
	// The network poller's own descriptors, opened at first use, are not
	// the group's.
	warm, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	warm.Close()
	before := testproc.OpenFDs(t)

	spec := loopback(t)
	old, err := Bind(spec, 4)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.SetEligible([]int{0, 1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	st := handOverDup(t, old)
	if st.Active != 1 || fmt.Sprint(st.Eligible) != "[0 1 2 3]" || st.Slots != 4 || len(st.Sockets) != 4 || st.Addr != old.Addr().String() {
		t.Fatalf("handed state %+v", st)
	}
	g, err := AdoptGroup(spec, st)
	if err != nil {
		t.Fatalf("AdoptGroup: %v", err)
	}
	defer g.Close()
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	if g.Addr().String() != st.Addr || g.Slots() != 4 || g.Open() != 4 || g.Migrates() != st.Migrates || fmt.Sprint(g.Eligible()) != "[0 1 2 3]" {
		t.Fatalf("adopted group: addr %v, slots %d, open %d, migrates %v, eligible %v", g.Addr(), g.Slots(), g.Open(), g.Migrates(), g.Eligible())
	}

	var clients []net.Conn
	spread := func(n int, want string) {
		t.Helper()
		clients = append(clients, dialTogether(t, g.Addr(), n)...)
		if counts := acceptCounts(t, g, n); fmt.Sprint(counts) != want {
			t.Errorf("per slot %v, want %s", counts, want)
		}
	}
	spread(16, "[4 4 4 4]")

	if err := g.SetEligible([]int{3, 1}); err != nil {
		t.Fatal(err)
	}
	var live uint32
	if err := g.objs.state.Lookup(uint32(stateActive), &live); err != nil || live != 0 {
		t.Errorf("after the adopted group's SetEligible buffer %d is live (%v), want 0: the one not live at the handover", live, err)
	}
	spread(8, "[0 4 0 4]")

	if err := g.OpenSlot(4); err != nil {
		t.Fatalf("OpenSlot(4): %v", err)
	}
	if err := g.SetEligible([]int{4}); err != nil {
		t.Fatal(err)
	}
	spread(4, "[0 0 0 0 4]")

	if g.Migrates() {
		clients = append(clients, queueThenClose(t, g, "[0 0 6 0 0]")...)
	} else {
		t.Log("this kernel has no SELECT_OR_MIGRATE programs: the migration after CloseSlot is not checked")
	}

	for _, c := range clients {
		c.Close()
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if after := testproc.OpenFDs(t); after != before {
		t.Errorf("%d descriptors open after Close, %d before Bind", after, before)
	}
}

// TestAdoptGroupRefusesMixedUpState: a state that does not match the
// kernel's objects is refused (and its descriptors closed) rather than
// steering connections to the wrong socket.
func TestAdoptGroupRefusesMixedUpState(t *testing.T) {
	spec := loopback(t)
	g := bind(t, spec, 2)
	if err := g.SetEligible([]int{1}); err != nil {
		t.Fatal(err)
	}
	// Each change returns the copies the state no longer names, for the
	// test to close.
	for _, tc := range []struct {
		name   string
		change func(*GroupState) []int
		want   string
	}{
		{"live buffer", func(st *GroupState) []int { st.Active ^= 1; return nil }, "buffer 1 is live, the state says 0"},
		{"eligible", func(st *GroupState) []int { st.Eligible = []int{0}; return nil }, "holds the eligible slots [1], the state says [0]"},
		{"slots swapped", func(st *GroupState) []int {
			st.Sockets[0], st.Sockets[1] = st.Sockets[1], st.Sockets[0]
			return nil
		}, "is not slot 0's socket"},
		{"maps swapped", func(st *GroupState) []int {
			st.EligibleMap, st.StateMap = st.StateMap, st.EligibleMap
			return nil
		}, "is not the group's Array map"},
		{"socket as program", func(st *GroupState) []int {
			st.Program, st.Sockets[0] = st.Sockets[0], st.Program
			return nil
		}, "program"},
		{"given twice", func(st *GroupState) []int {
			dropped := st.Sockets[0]
			st.Sockets[0] = st.Program
			return []int{dropped}
		}, "given twice"},
		{"address", func(st *GroupState) []int { st.Addr = "127.0.0.1:1"; return nil }, "is bound to port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := testproc.OpenFDs(t)
			st := handOverDup(t, g)
			for _, fd := range tc.change(&st) {
				unix.Close(fd)
			}
			a, err := AdoptGroup(spec, st)
			if err == nil {
				a.Close()
				t.Fatal("adopted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to say %q", err, tc.want)
			}
			if after := testproc.OpenFDs(t); after != before {
				t.Errorf("%d descriptors open after the refusal, %d before the handover: the copies handed over were not all closed", after, before)
			}
		})
	}
	// The group handed over is unchanged.
	dialTogether(t, g.Addr(), 4)
	if counts := acceptCounts(t, g, 4); fmt.Sprint(counts) != "[0 4]" {
		t.Errorf("per slot %v, want [0 4]", counts)
	}
}
