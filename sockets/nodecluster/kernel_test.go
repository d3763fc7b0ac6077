package nodecluster

import (
	"net"
	"testing"

	"github.com/dutchmaster/dutchmaster/sockets/reuseport"
)

// TestKernelSlotSockets: in Kernel mode a TCP server is one socket per
// slot on one address: a worker gets its slot's socket (the same one for
// the slot's next worker), non-blocking, listening; the eligible slots go
// to the group only for the slots that asked; a retired slot's socket is
// closed and bound again when the slot comes back.
func TestKernelSlotSockets(t *testing.T) {
	if err := reuseport.Available(); err != nil {
		t.Skipf("the socket-selection program is not available here: %v", err)
	}
	reg := NewBalancedRegistry(nil, Balancing{Mode: Kernel})
	defer reg.Close()
	query := `{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":"127.0.0.1","port":0,"addressType":4,"seq":1}`
	share := func(slot int) Share {
		t.Helper()
		ev := receive(t, NewWorkerSession(&fakeWire{}, reg, Worker{ID: slot + 1, Slot: slot}), query, KindServed)
		if ev.Share.File == nil || ev.Share.Balance != Kernel || ev.Share.Slot != slot {
			t.Fatalf("slot %d: share %+v", slot, ev.Share)
		}
		return ev.Share
	}
	s0, s1, again := share(0), share(1), share(1)
	if s0.File == s1.File || again.File != s1.File {
		t.Fatal("slots 0 and 1 share a socket, or slot 1's next worker got another one")
	}
	a0, _ := boundAddr(s0.File)
	a1, _ := boundAddr(s1.File)
	if a0 != a1 {
		t.Fatalf("slot sockets on %v and %v, want one address", a0, a1)
	}
	if err := reg.SetEligible([]int{0, 1, 2}); err != nil { // slot 2 never asked
		t.Fatalf("SetEligible: %v", err)
	}
	ln := workerCopy(t, s1.File)
	defer ln.Close()
	if err := reg.SetEligible([]int{1}); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		c, err := net.Dial("tcp", a1.String())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		got, err := ln.Accept() // slot 1 only: slot 0's queue would block this
		if err != nil {
			t.Fatal(err)
		}
		got.Close()
	}
	if n, err := reg.QueueLen(0); err != nil || n != 0 {
		t.Errorf("slot 0's queue: %d, %v", n, err)
	}
	if err := reg.SetEligible([]int{0}); err != nil {
		t.Fatal(err)
	}
	if err := reg.CloseSlot(1); err != nil {
		t.Fatalf("CloseSlot(1): %v", err)
	}
	if s := share(1); s.File == s1.File {
		t.Error("slot 1 came back with its closed socket")
	}
}
