package osproc

import "testing"

// A fork into a new slot of a kernel-balanced master binds a socket per
// balanced listener: the reserve holds them for every fork it covers.
func TestForkReserveCountsSlotSockets(t *testing.T) {
	shared := ForkReserve(4, 1, 0)
	if want := (descriptorsPerWorker+outputDescriptors)*5 + forkSlack; shared != want {
		t.Errorf("ForkReserve(4, 1, 0) = %d, want %d", shared, want)
	}
	if got, want := ForkReserve(4, 1, 2), shared+2*5; got != want {
		t.Errorf("ForkReserve(4, 1, 2) = %d, want %d (2 slot sockets for each of 5 forks)", got, want)
	}
}
