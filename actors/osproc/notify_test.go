package osproc_test

import (
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/actors/osproc"
)

// TestNotifyGoesToItsWorker: sd_notify datagrams from two workers running
// at once each arrive as a Notify for the worker that sent it (told apart by
// the kernel's credentials), and a datagram from a process that is not a
// worker reaches no one.
func TestNotifyGoesToItsWorker(t *testing.T) {
	rt := newRuntime(t, osproc.Config{Command: role(t, "notify")})

	// Queued before any worker's datagram; the socket reads in order.
	stranger, err := net.Dial("unixgram", rt.NotifySocket())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stranger.Write([]byte("READY=1\nSTATUS=stranger")); err != nil {
		t.Fatal(err)
	}
	stranger.Close()

	ids := []core.WorkerID{1, 2}
	recs := map[core.WorkerID]*recorder{}
	for _, id := range ids {
		recs[id], _ = spawn(t, rt, actors.WorkerSpec{ID: id})
	}
	// Both are alive (each waits to be drained) when their datagrams come.
	events := map[core.WorkerID][]any{}
	for _, id := range ids {
		var notified, sent bool
		for !notified || !sent {
			msg := recs[id].next(t)
			events[id] = append(events[id], msg)
			switch msg := msg.(type) {
			case actors.Notify:
				notified = true
			case actors.IPC:
				sent = string(msg.Line) == `{"event":"notified"}`
			default:
				t.Fatalf("worker %d: unexpected %T %+v", id, msg, msg)
			}
		}
	}
	for _, id := range ids {
		rt.Drain(id, actors.DrainIPC)
		ex, rest := until[actors.Exited](t, recs[id])
		if ex.Code != 0 || ex.Signal != 0 {
			t.Errorf("worker %d: Exited %+v, want a clean exit", id, ex)
		}
		events[id] = append(events[id], rest...)
	}

	for _, id := range ids {
		var payloads []string
		for _, msg := range events[id] {
			if n, ok := msg.(actors.Notify); ok {
				payloads = append(payloads, n.Payload)
			}
		}
		want := "READY=1\nSTATUS=worker " + strconv.Itoa(int(id))
		if len(payloads) != 1 || payloads[0] != want {
			t.Errorf("worker %d got notifications %q, want exactly %q", id, payloads, want)
		}
	}
}

// TestNotifyNeverAfterExited: a Notify being delivered when the worker
// exits holds back Exited, so a worker's events never go on after Exited.
// The events func blocks on the Notify for up to a second (a bound for a
// negative, not a wait for an event): an Exited delivered meanwhile is the
// violation.
func TestNotifyNeverAfterExited(t *testing.T) {
	rt := newRuntime(t, osproc.Config{Command: role(t, "notify")})
	rec := newRecorder()
	exited := make(chan struct{})
	inNotify := make(chan struct{})
	var mu sync.Mutex
	var order []string
	note := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, s)
	}
	rt.Fork(actors.WorkerSpec{ID: 1}, func(msg any) {
		switch msg.(type) {
		case actors.Notify:
			close(inNotify)
			select {
			case <-exited:
				note("Exited during Notify")
			case <-time.After(time.Second):
			}
			note("Notify")
		case actors.Exited:
			note("Exited")
			close(exited)
		}
		rec.events(msg)
	})
	pid := expect[actors.Spawned](t, rec).PID
	select {
	case <-inNotify:
	case <-time.After(testTimeout):
		t.Fatal("no Notify")
	}
	rt.Kill(1)
	ex, _ := until[actors.Exited](t, rec)
	if ex.Signal != syscall.SIGKILL {
		t.Errorf("worker %d: Exited %+v, want killed", pid, ex)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(order) != 2 || order[0] != "Notify" || order[1] != "Exited" {
		t.Errorf("deliveries %q, want Notify then Exited", order)
	}
}
