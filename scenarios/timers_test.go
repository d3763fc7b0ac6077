package scenarios

import (
	"testing"
	"testing/synctest"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
)

// TestWorkerTimersStopped: after rolling restarts in which every worker
// became ready and every old one exited, no ready or kill timeout is left
// pending (each would hold memory until it fired, a minute later), on
// either host.
func TestWorkerTimersStopped(t *testing.T) {
	hosts := map[string]func(*testing.T) func(actors.Options) Host{
		"sync": func(*testing.T) func(actors.Options) Host {
			return func(o actors.Options) Host { return NewSyncHost(o) }
		},
		"actors": func(t *testing.T) func(actors.Options) Host {
			system := actors.NewSystem(discard)
			t.Cleanup(func() { shutdownInBubble(system) })
			return func(o actors.Options) Host { return NewActorHost(system, o) }
		},
	}
	for name, host := range hosts {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				d := NewDriver()
				defer d.Close()
				d.Start(actors.Options{Logger: discard, Workers: func() int { return 4 }}, host(t))
				if err := d.SettleWorkers(); err != nil {
					t.Fatal(err)
				}
				for range 3 {
					d.Send(core.RestartRequested{Source: "test"})
					if err := d.SettleWorkers(); err != nil {
						t.Fatal(err)
					}
				}
				if n := len(d.Host.View().Workers); n != 4 {
					t.Fatalf("%d workers after the restarts, want 4", n)
				}
				// 16 workers forked (a ready timeout each), 12 drained (a
				// kill timeout each): none of them may still be pending.
				if n := d.Clock.Pending(); n != 0 {
					t.Errorf("%d timers pending once every worker is ready or gone, want 0", n)
				}
			})
		})
	}
}
