package reuseport

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/sockets"
)

// testTimeout bounds every wait: generous for a loaded machine, finite so a
// bug does not hang the run.
const testTimeout = 30 * time.Second

func loopback(t *testing.T) sockets.Spec {
	t.Helper()
	spec, err := sockets.ParseSpec("web=tcp4://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// bind binds a group or skips the test where the program cannot be loaded
// (no CAP_BPF): there is nothing of this package to test without it.
func bind(t *testing.T, spec sockets.Spec, slots int) *Group {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("the socket-selection program is not available here: %v", err)
	}
	g, err := Bind(spec, slots)
	if err != nil {
		t.Fatalf("Bind: %v", err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// dialTogether opens n connections at once, each writing one byte, and
// returns them once all are established (the kernel has queued each one on
// the socket it was steered to).
func dialTogether(t *testing.T, addr net.Addr, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", addr.String(), testTimeout)
			if err == nil {
				_, err = c.Write([]byte{byte(i)})
			}
			conns[i], errs[i] = c, err
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("dial %d connections: %v", n, err)
	}
	return conns
}

// acceptCounts accepts want connections in all from the group's slots and
// returns how many each slot's socket held. It waits for readiness with
// poll, never blocking in accept, and reads each connection's byte so that
// a queued connection is shown to be usable.
func acceptCounts(t *testing.T, g *Group, want int) []int {
	t.Helper()
	counts := make([]int, g.Slots())
	fds := make([]unix.PollFd, g.Slots())
	for i := range fds {
		fds[i] = unix.PollFd{Fd: -1} // a closed slot: poll skips it
		if f := g.Socket(i); f != nil {
			fds[i] = unix.PollFd{Fd: int32(f.Fd()), Events: unix.POLLIN}
		}
	}
	deadline := time.Now().Add(testTimeout)
	for total := 0; total < want; {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("accepted %d of %d connections within %v (per slot %v)", total, want, testTimeout, counts)
		}
		if _, err := unix.Poll(fds, int(left/time.Millisecond)+1); err != nil && err != unix.EINTR {
			t.Fatalf("poll: %v", err)
		}
		for i, p := range fds {
			if p.Revents&unix.POLLIN == 0 {
				continue
			}
			nfd, _, err := unix.Accept4(int(p.Fd), unix.SOCK_CLOEXEC)
			if err != nil {
				t.Fatalf("accept on slot %d: %v", i, err)
			}
			c := os.NewFile(uintptr(nfd), fmt.Sprintf("slot %d conn", i))
			if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
				t.Errorf("read from a connection of slot %d: %v", i, err)
			}
			c.Close()
			counts[i]++
			total++
		}
	}
	// Nothing more may be queued anywhere: each connection counted once.
	for i := range fds {
		fds[i].Revents = 0
	}
	if n, _ := unix.Poll(fds, 0); n != 0 {
		t.Errorf("more than %d connections queued (per slot so far %v)", want, counts)
	}
	return counts
}

func TestBindSlotsShareOneAddress(t *testing.T) {
	g := bind(t, loopback(t), 4)
	port := g.Addr().(*net.TCPAddr).Port
	if port == 0 {
		t.Fatalf("Addr %v: no port picked", g.Addr())
	}
	for slot := range 4 {
		sa, err := unix.Getsockname(int(g.Socket(slot).Fd()))
		if err != nil {
			t.Fatal(err)
		}
		in, ok := sa.(*unix.SockaddrInet4)
		if !ok || in.Port != port || in.Addr != [4]byte{127, 0, 0, 1} {
			t.Errorf("slot %d bound to %#v, want 127.0.0.1:%d", slot, sa, port)
		}
		// Blocking, as a worker expects an inherited socket to be.
		flags, err := unix.FcntlInt(g.Socket(slot).Fd(), unix.F_GETFL, 0)
		if err != nil || flags&unix.O_NONBLOCK != 0 {
			t.Errorf("slot %d: flags %#x, %v: want blocking", slot, flags, err)
		}
		proto, err := unix.GetsockoptInt(int(g.Socket(slot).Fd()), unix.SOL_SOCKET, unix.SO_PROTOCOL)
		if err != nil || proto != unix.IPPROTO_TCP {
			t.Errorf("slot %d: protocol %d, %v: want plain TCP", slot, proto, err)
		}
	}
	if g.Socket(4) != nil || g.Socket(-1) != nil {
		t.Error("Socket of a slot that does not exist is not nil")
	}
}

func TestEvenSpreadOverEligibleSlots(t *testing.T) {
	g := bind(t, loopback(t), 4)
	if err := g.SetEligible([]int{0, 1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	dialTogether(t, g.Addr(), 16)
	counts := acceptCounts(t, g, 16)
	for slot, n := range counts {
		if n != 4 {
			t.Errorf("slot %d got %d connections, want 4 (per slot %v)", slot, n, counts)
		}
	}
}

func TestSlotOutOfEligibleReceivesNone(t *testing.T) {
	g := bind(t, loopback(t), 4)
	if err := g.SetEligible([]int{3, 0, 2}); err != nil {
		t.Fatal(err)
	}
	dialTogether(t, g.Addr(), 15)
	counts := acceptCounts(t, g, 15)
	if want := []int{5, 0, 5, 5}; fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Errorf("per slot %v, want %v", counts, want)
	}
}

func TestNoEligibleSlotFallsBackToTheHash(t *testing.T) {
	g := bind(t, loopback(t), 4)
	if err := g.SetEligible([]int{1}); err != nil {
		t.Fatal(err)
	}
	if err := g.SetEligible(nil); err != nil {
		t.Fatal(err)
	}
	// Every connection is accepted somewhere: none refused or dropped.
	dialTogether(t, g.Addr(), 16)
	counts := acceptCounts(t, g, 16)
	t.Logf("per slot with no eligible slot (the kernel's hash): %v", counts)
}

func TestQueuedConnectionsStayAfterLeavingEligible(t *testing.T) {
	g := bind(t, loopback(t), 2)
	if err := g.SetEligible([]int{0}); err != nil {
		t.Fatal(err)
	}
	dialTogether(t, g.Addr(), 3)
	// Slot 0 leaves before anything was accepted from it.
	if err := g.SetEligible([]int{1}); err != nil {
		t.Fatal(err)
	}
	dialTogether(t, g.Addr(), 5)
	counts := acceptCounts(t, g, 8)
	if want := []int{3, 5}; fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Errorf("per slot %v, want %v: the 3 queued on slot 0 stay there, the 5 later ones go to slot 1", counts, want)
	}
}

func TestAddSlotJoinsTheGroup(t *testing.T) {
	g := bind(t, loopback(t), 2)
	slot, err := g.AddSlot()
	if err != nil {
		t.Fatal(err)
	}
	if slot != 2 || g.Slots() != 3 {
		t.Fatalf("AddSlot gave slot %d, Slots %d: want 2 and 3", slot, g.Slots())
	}
	if err := g.SetEligible([]int{2, 0}); err != nil {
		t.Fatal(err)
	}
	dialTogether(t, g.Addr(), 6)
	counts := acceptCounts(t, g, 6)
	if want := []int{3, 0, 3}; fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Errorf("per slot %v, want %v", counts, want)
	}
}

func TestSetEligibleRefusesBadSlots(t *testing.T) {
	g := bind(t, loopback(t), 2)
	for _, bad := range [][]int{{2}, {-1}, {0, 0}} {
		if err := g.SetEligible(bad); err == nil {
			t.Errorf("SetEligible(%v): no error", bad)
		}
	}
	if err := g.SetEligible([]int{1}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(g.Eligible()) != "[1]" {
		t.Errorf("Eligible %v, want [1]", g.Eligible())
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := g.SetEligible([]int{0}); err == nil {
		t.Error("SetEligible after Close: no error")
	}
	if _, err := g.AddSlot(); err == nil {
		t.Error("AddSlot after Close: no error")
	}
}

func TestBindErrors(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("the socket-selection program is not available here: %v", err)
	}
	for _, value := range []string{"udp://127.0.0.1:0", "unix:///tmp/dm-reuseport-test.sock"} {
		spec, err := sockets.ParseSpec(value)
		if err != nil {
			t.Fatal(err)
		}
		if g, err := Bind(spec, 2); err == nil {
			g.Close()
			t.Errorf("Bind(%s): no error", value)
		}
	}
	if _, err := Bind(loopback(t), 0); err == nil {
		t.Error("Bind with 0 slots: no error")
	}
	// A port held by a socket without SO_REUSEPORT cannot be joined.
	held, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	spec, err := sockets.ParseSpec("tcp4://" + held.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	g, err := Bind(spec, 2)
	var be *sockets.BindError
	if err == nil {
		g.Close()
		t.Fatal("Bind on a port in use: no error")
	}
	if !errors.As(err, &be) || !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Bind on a port in use: %v (%T), want a *sockets.BindError for EADDRINUSE", err, err)
	}
}

func TestIPv6Group(t *testing.T) {
	probe, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	probe.Close()
	spec, err := sockets.ParseSpec("tcp6://[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	g := bind(t, spec, 2)
	if err := g.SetEligible([]int{1, 0}); err != nil {
		t.Fatal(err)
	}
	dialTogether(t, g.Addr(), 8)
	if counts := acceptCounts(t, g, 8); fmt.Sprint(counts) != "[4 4]" {
		t.Errorf("per slot %v, want [4 4]", counts)
	}
}

func TestQueueLenCountsWaitingConnections(t *testing.T) {
	g := bind(t, loopback(t), 2)
	if err := g.SetEligible([]int{1}); err != nil {
		t.Fatal(err)
	}
	dialTogether(t, g.Addr(), 4)
	for slot, want := range []int{0, 4} {
		if n, err := g.QueueLen(slot); err != nil || n != want {
			t.Errorf("QueueLen(%d) = %d, %v; want %d", slot, n, err, want)
		}
	}
	acceptCounts(t, g, 4)
	if n, err := g.QueueLen(1); err != nil || n != 0 {
		t.Errorf("QueueLen(1) after accepting all = %d, %v; want 0", n, err)
	}
}

func TestClosedSlotReceivesNothingAndComesBack(t *testing.T) {
	g := bind(t, loopback(t), 3)
	if err := g.SetEligible([]int{0, 1}); err != nil {
		t.Fatal(err)
	}
	if err := g.CloseSlot(0); err == nil {
		t.Fatal("CloseSlot of an eligible slot: no error")
	}
	// A copy of the socket held elsewhere (a worker's) must not keep it
	// listening.
	copyFD, err := unix.FcntlInt(g.Socket(2).Fd(), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(copyFD)
	if err := g.SetEligible([]int{0, 1}); err != nil {
		t.Fatal(err)
	}
	if err := g.CloseSlot(2); err != nil {
		t.Fatalf("CloseSlot(2): %v", err)
	}
	if g.Socket(2) != nil || g.Slots() != 3 || g.Open() != 2 {
		t.Fatalf("after CloseSlot(2): socket %v, Slots %d, Open %d; want nil, 3, 2", g.Socket(2), g.Slots(), g.Open())
	}
	if err := g.SetEligible([]int{2}); err == nil {
		t.Error("SetEligible with a closed slot: no error")
	}
	// With no eligible slot the kernel's hash picks among the sockets
	// still in the group: never the closed one.
	if err := g.SetEligible(nil); err != nil {
		t.Fatal(err)
	}
	dialTogether(t, g.Addr(), 12)
	counts := acceptCounts(t, g, 12)
	if counts[2] != 0 {
		t.Errorf("per slot %v: the closed slot 2 got connections", counts)
	}
	if err := g.OpenSlot(2); err != nil {
		t.Fatalf("OpenSlot(2): %v", err)
	}
	if err := g.SetEligible([]int{2}); err != nil {
		t.Fatal(err)
	}
	dialTogether(t, g.Addr(), 4)
	if counts := acceptCounts(t, g, 4); fmt.Sprint(counts) != "[0 0 4]" {
		t.Errorf("per slot %v after slot 2 came back alone eligible, want [0 0 4]", counts)
	}
}

// TestClosedSlotQueueMovesToAnEligibleSlot: where the kernel migrates
// (Linux 5.14 on), connections queued on a slot whose socket is closed
// move to an eligible slot, none to another slot, each usable; nothing is
// reset.
func TestClosedSlotQueueMovesToAnEligibleSlot(t *testing.T) {
	g := bind(t, loopback(t), 3)
	if !g.Migrates() {
		t.Skip("this kernel has no SELECT_OR_MIGRATE programs (Linux 5.14 on)")
	}
	queueThenClose(t, g, "[0 0 6]")
}

// queueThenClose queues 6 connections on slot 0 (alone eligible), makes
// slot 2 alone eligible, closes slot 0, and requires the accepts per slot
// to be want (the queue moved to slot 2). It returns the clients.
func queueThenClose(t *testing.T, g *Group, want string) []net.Conn {
	t.Helper()
	if err := g.SetEligible([]int{0}); err != nil {
		t.Fatal(err)
	}
	clients := dialTogether(t, g.Addr(), 6)
	if n, err := g.QueueLen(0); err != nil || n != 6 {
		t.Fatalf("QueueLen(0) = %d, %v; want 6", n, err)
	}
	if err := g.SetEligible([]int{2}); err != nil {
		t.Fatal(err)
	}
	if err := g.CloseSlot(0); err != nil {
		t.Fatalf("CloseSlot(0): %v", err)
	}
	if counts := acceptCounts(t, g, 6); fmt.Sprint(counts) != want {
		t.Errorf("per slot %v after closing slot 0 with 6 queued and slot 2 alone eligible, want %s", counts, want)
	}
	return clients
}
