package actors

import (
	"testing"

	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/actors/core"
)

// TestOnlineCountsAsIPC: a Node.js cluster worker says online long before
// it listens; drained in between under --drain auto, it gets the IPC drain
// (the cluster disconnect), not the stop signal that kills Node at once.
func TestOnlineCountsAsIPC(t *testing.T) {
	for _, tc := range []struct {
		name   string
		events []any
		want   DrainMethod
	}{
		{"silent", nil, DrainSignal},
		{"online", []any{Online{}}, DrainIPC},
	} {
		m := NewWorkerMachine(WorkerSpec{ID: 1}, ReadyMode{Source: ReadyAuto}, DrainAuto, zerolog.Nop())
		m.Handle(Spawned{PID: 42})
		for _, ev := range tc.events {
			if out := m.Handle(ev); len(out) != 0 {
				t.Errorf("%s: %T had effects %v", tc.name, ev, out)
			}
		}
		out := m.Handle(DrainOrder{Reason: "stop"})
		if len(out) != 2 || out[0] != (RuntimeDrain{How: tc.want}) || out[1] != (core.WorkerDraining{Worker: 1}) {
			t.Errorf("%s: drain effects %v, want %s", tc.name, out, tc.want)
		}
	}
}
