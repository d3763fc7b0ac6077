package scenarios

import (
	"fmt"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/fsm"
)

// Driver plays the world around a cluster: the operator's signals, the
// workers' processes and the passing of time. The scenario files and the
// property test both act through it, on either host.
type Driver struct {
	Runtime *ScriptedRuntime
	Clock   *ManualClock
	Guard   *Guard
	Host    Host
	Opts    actors.Options
	Signals actors.Signals
	observe func(time.Time, core.Input, []core.Decision) // Start's Options.Observe, before the guard's
}

// NewDriver returns a driver with a fresh runtime, clock and guard.
func NewDriver() *Driver {
	rt := NewScriptedRuntime()
	return &Driver{Runtime: rt, Clock: NewManualClock(), Guard: NewGuard(rt)}
}

// Start starts the cluster with opts (Runtime and Clock are filled in)
// on the host that newHost returns.
func (d *Driver) Start(opts actors.Options, newHost func(actors.Options) Host) {
	d.Host = newHost(d.prepare(opts))
	d.Settle()
}

// prepare fills opts in for Start: the runtime, the clock, the guard
// watching every step, two workers by default.
func (d *Driver) prepare(opts actors.Options) actors.Options {
	opts.Runtime, opts.Clock = d.Runtime, d.Clock
	d.observe = opts.Observe
	guard := d.Guard.Observe
	if opts.Ready.Source == actors.ReadyTimer {
		// Timer readiness is the cluster's own verdict, which no message
		// carries: the process serves from the step that says so, before
		// that step's drains reach the runtime.
		guard = func(now time.Time, in core.Input, out []core.Decision) {
			if l, ok := in.(core.WorkerListening); ok {
				d.Runtime.markReady(l.Worker)
			}
			d.Guard.Observe(now, in, out)
		}
	}
	if observe := opts.Observe; observe != nil {
		opts.Observe = func(now time.Time, in core.Input, out []core.Decision) {
			guard(now, in, out)
			observe(now, in, out)
		}
	} else {
		opts.Observe = guard
	}
	if opts.Workers == nil {
		opts.Workers = func() int { return 2 }
	}
	d.Opts = opts
	if opts.Resume == nil {
		d.Guard.SetTarget(opts.Workers())
	}
	return opts
}

// HandOver plays a new master image taking over the cluster whose
// snapshot is snap (the old host is gone): a new runtime adopts the
// processes, a new clock goes on pause later, a new guard follows what
// the old one knew, and the cluster starts from snap (Options.Resume) on
// the host newHost returns, which starts it with actors.StartResumed (and
// so may refuse it).
func (d *Driver) HandOver(snap actors.Snapshot, pause time.Duration, newHost func(actors.Options) (Host, error)) error {
	rt := NewScriptedRuntime()
	rt.Adopt(d.Runtime.Processes())
	guard := NewGuard(rt)
	guard.Follow(d.Guard)
	d.Runtime, d.Clock, d.Guard = rt, &ManualClock{now: d.Clock.Now().Add(pause)}, guard
	opts := d.Opts
	opts.Observe, opts.Resume = d.observe, &snap
	h, err := newHost(d.prepare(opts))
	if err != nil {
		return err
	}
	d.Host = h
	d.Settle()
	return nil
}

// Send delivers an input from outside.
func (d *Driver) Send(in core.Input) {
	d.Host.Send(in)
	d.Settle()
}

// Signal delivers a signal as the master's signal handler would.
func (d *Driver) Signal(sig syscall.Signal) error {
	in, ok := d.Signals.Input(sig)
	if !ok {
		return fmt.Errorf("%s: not a signal the master acts on", fsm.SignalName(sig))
	}
	d.Send(in)
	return nil
}

// Deliver hands a runtime event to a worker, as its process would.
func (d *Driver) Deliver(id core.WorkerID, msg any) error {
	if err := d.Runtime.deliver(id, msg, d.Opts.Ready); err != nil {
		return err
	}
	d.Settle()
	return nil
}

// ReadyMessage is what a worker sends to say it is ready, by source.
func ReadyMessage(via string) any {
	if via == actors.ReadyNotify {
		return actors.Notify{Payload: "READY=1"}
	}
	return actors.IPC{Line: []byte(`{"event":"listening"}`)}
}

// FailForks makes the next n forks fail with reason.
func (d *Driver) FailForks(n int, reason string) {
	d.Runtime.mu.Lock()
	defer d.Runtime.mu.Unlock()
	for range n {
		d.Runtime.failForks = append(d.Runtime.failForks, reason)
	}
}

// Advance lets time pass; due timers fire one at a time.
func (d *Driver) Advance(dur time.Duration) { d.Clock.Advance(dur, d.Settle) }

// Settle waits until the host is idle, then delivers what the runtime owes
// (spawns, exits after kills) one at a time, until nothing is owed.
func (d *Driver) Settle() {
	for {
		d.Host.Idle()
		pending := d.Runtime.takePending()
		if len(pending) == 0 {
			break
		}
		for _, p := range pending {
			// An owed exit is dropped if the process already exited on its own.
			_ = d.Runtime.deliver(p.id, p.msg, d.Opts.Ready)
			d.Host.Idle()
		}
	}
	if d.Opts.Ready.Source == actors.ReadyTimer {
		// Timer readiness is the cluster's own verdict; no message carries it.
		for _, w := range d.Host.View().Workers {
			if w.State == fsm.Listening {
				d.Runtime.markReady(w.ID)
			}
		}
	}
}

// SettleWorkers plays well-behaved workers: each forking worker says
// ready (unless the ready mode is the timer's, whose verdict comes with
// time) and each draining worker exits cleanly, one at a time, until
// nothing changes. Time does not pass.
func (d *Driver) SettleWorkers() error {
	saysReady := d.Opts.Ready.Source != actors.ReadyTimer
	for range 10000 {
		var next *core.Worker
		for _, w := range d.Host.View().Workers {
			if (saysReady && w.State == fsm.Forking && w.PID != 0) || w.State == fsm.Draining {
				next = &w
				break
			}
		}
		if next == nil {
			return nil
		}
		var msg any = actors.Exited{}
		if next.State == fsm.Forking {
			msg = ReadyMessage(actors.ReadyIPC)
		}
		if err := d.Deliver(next.ID, msg); err != nil {
			return err
		}
	}
	return fmt.Errorf("settle: no end in sight")
}

// Check returns the invariant violations since the last call.
func (d *Driver) Check() []string {
	v := d.Host.View()
	return d.Guard.Check(v, surgeLimit(v, d.Opts.Core.WithDefaults()))
}

// surgeLimit is how many replacements the policy in force may start at
// once: its max-surge, or for other policies one per slot.
func surgeLimit(v core.View, cfg core.Config) int {
	switch p := cfg.Policy.(type) {
	case core.Rolling:
		return max(p.MaxSurge, 1)
	case core.Canary:
		return max(p.MaxSurge, 1)
	}
	return v.Target
}

// Close releases the host.
func (d *Driver) Close() {
	if d.Host != nil {
		d.Host.Close()
	}
}

// discard is the logger of generated runs, which print nothing.
var discard = zerolog.Nop()
