package osproc

import (
	"testing"

	"github.com/dutchmaster/dutchmaster/sockets"
	"github.com/dutchmaster/dutchmaster/sockets/reuseport"
)

// A worker of a balanced listener gets its slot's socket at the listener's
// position; a slot the group does not have yet (a scale up) is bound into
// it first; a shared listener keeps its own socket.
func TestSlotSockets(t *testing.T) {
	if err := reuseport.Available(); err != nil {
		t.Skipf("the socket-selection program is not available here: %v", err)
	}
	spec, err := sockets.ParseSpec("http=tcp4://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, err := reuseport.Bind(spec, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	files, err := slotSockets([]*reuseport.Group{nil, g}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if g.Slots() != 3 {
		t.Errorf("the group has %d slots after a fork into slot 2, want 3", g.Slots())
	}
	if files[0] != nil || files[1] != g.Socket(2) {
		t.Errorf("files %v, want [nil, slot 2's socket %v]", files, g.Socket(2))
	}
	files, err = slotSockets([]*reuseport.Group{g}, 0)
	if err != nil || files[0] != g.Socket(0) || g.Slots() != 3 {
		t.Errorf("slot 0: %v, %v (slots %d), want slot 0's socket and no new slot", files, err, g.Slots())
	}
	g.Close()
	if _, err := slotSockets([]*reuseport.Group{g}, 5); err == nil {
		t.Error("a slot bound into a closed group: no error")
	}
}
