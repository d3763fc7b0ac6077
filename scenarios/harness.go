package scenarios

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/cockroachdb/datadriven"
	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/fsm"
)

// RunDir replays every scenario file under dir, each in a synctest bubble
// of its own with a fresh actor system.
func RunDir(t *testing.T, dir string) {
	datadriven.Walk(t, dir, func(t *testing.T, path string) {
		RunFile(t, path)
	})
}

// RunFile replays one scenario file.
func RunFile(t *testing.T, path string) {
	synctest.Test(t, func(t *testing.T) {
		h := NewHarness()
		defer h.Close()
		datadriven.RunTest(t, path, func(t *testing.T, td *datadriven.TestData) string {
			return h.Handle(t, td)
		})
	})
}

// Harness drives one cluster actor through scenario directives. It must be
// created and used inside a synctest bubble.
type Harness struct {
	System  *actor.ActorSystem
	Runtime *ScriptedRuntime
	Clock   *ManualClock
	Cluster *actors.Cluster

	logs    lockedBuffer
	log     zerolog.Logger
	opts    actors.Options
	signals actors.Signals
	guard   *Guard
}

// NewHarness returns a harness with no cluster started.
func NewHarness() *Harness {
	h := &Harness{Runtime: NewScriptedRuntime(), Clock: NewManualClock()}
	h.log = zerolog.New(zerolog.ConsoleWriter{Out: &h.logs, NoColor: true, PartsExclude: []string{zerolog.TimestampFieldName}}).Level(zerolog.InfoLevel)
	h.System = actors.NewSystem(zerolog.Nop())
	h.guard = NewGuard(h.Runtime)
	return h
}

// Close stops the actor system; every actor goroutine ends.
func (h *Harness) Close() {
	h.System.Shutdown()
	synctest.Wait()
}

// Handle runs one directive and returns its output.
func (h *Harness) Handle(t *testing.T, td *datadriven.TestData) string {
	var out strings.Builder
	if err := h.run(td); err != nil {
		fmt.Fprintf(&out, "error: %v\n", err)
	}
	h.settle()
	if td.Cmd == "status" {
		out.WriteString(h.status())
	}
	out.WriteString(h.logs.take())
	for _, c := range h.Runtime.takeCalls() {
		fmt.Fprintf(&out, "runtime: %s\n", c)
	}
	if h.Cluster != nil {
		for _, v := range h.guard.Check(h.view(), h.opts.Core.WithDefaults().MaxSurge) {
			t.Errorf("%s: %s: invariant violated: %s", td.Pos, td.Cmd, v)
			fmt.Fprintf(&out, "INVARIANT VIOLATED: %s\n", v)
		}
	}
	return out.String()
}

func (h *Harness) run(td *datadriven.TestData) error {
	if td.Cmd != "start" && h.Cluster == nil {
		return fmt.Errorf("%s before start", td.Cmd)
	}
	switch td.Cmd {
	case "start":
		return h.start(td)
	case "signal":
		for _, a := range td.CmdArgs {
			if err := h.signal(a.Key); err != nil {
				return err
			}
		}
	case "ready":
		return h.ready(td)
	case "message":
		return h.message(td)
	case "exit":
		return h.exit(td)
	case "fail-forks":
		n, reason := 1, "exec failed"
		for _, a := range td.CmdArgs {
			switch a.Key {
			case "n":
				v, err := strconv.Atoi(first(a.Vals))
				if err != nil {
					return fmt.Errorf("fail-forks n=%q: %v", first(a.Vals), err)
				}
				n = v
			case "reason":
				reason = strings.Join(a.Vals, ", ")
			}
		}
		h.Runtime.mu.Lock()
		for range n {
			h.Runtime.failForks = append(h.Runtime.failForks, reason)
		}
		h.Runtime.mu.Unlock()
	case "advance":
		if len(td.CmdArgs) != 1 {
			return fmt.Errorf("advance takes one duration")
		}
		d, err := time.ParseDuration(td.CmdArgs[0].Key)
		if err != nil {
			return err
		}
		h.Clock.Advance(d, h.settle)
	case "settle":
		return h.settleWorkers()
	case "status":
	default:
		return fmt.Errorf("unknown directive %q", td.Cmd)
	}
	return nil
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func (h *Harness) start(td *datadriven.TestData) error {
	if h.Cluster != nil {
		return fmt.Errorf("already started")
	}
	opts := actors.Options{Runtime: h.Runtime, Clock: h.Clock, Logger: h.log}
	workers := 2
	for _, a := range td.CmdArgs {
		v := first(a.Vals)
		var err error
		switch a.Key {
		case "workers":
			workers, err = strconv.Atoi(v)
		case "max-surge":
			opts.Core.MaxSurge, err = strconv.Atoi(v)
		case "kill-timeout":
			opts.Core.KillTimeout, err = time.ParseDuration(v)
		case "ready-timeout":
			opts.Core.ReadyTimeout, err = time.ParseDuration(v)
		case "backoff":
			opts.Core.Backoff.Initial, err = time.ParseDuration(v)
		case "backoff-max":
			opts.Core.Backoff.Max, err = time.ParseDuration(v)
		case "backoff-reset":
			opts.Core.Backoff.Reset, err = time.ParseDuration(v)
		case "ready":
			opts.Ready, err = actors.ParseReadyMode(v)
		case "drain":
			opts.Drain, err = actors.ParseDrainMethod(v)
		case "restart-signal":
			h.signals.Restart, err = fsm.ParseSignal(v)
		default:
			err = fmt.Errorf("unknown argument")
		}
		if err != nil {
			return fmt.Errorf("start %s=%s: %v", a.Key, v, err)
		}
	}
	opts.Workers = func() int { return workers }
	h.opts = opts
	h.guard.SetTarget(workers)
	h.Cluster = actors.Start(h.System, opts)
	return nil
}

func (h *Harness) signal(name string) error {
	sig, err := fsm.ParseSignal(name)
	if err != nil {
		return err
	}
	in, ok := h.signals.Input(sig)
	if !ok {
		return fmt.Errorf("%s: not a signal the master acts on", name)
	}
	h.guard.Before(in)
	h.Cluster.Send(in)
	h.settle()
	return nil
}

func (h *Harness) ready(td *datadriven.TestData) error {
	via := actors.ReadyIPC
	for _, a := range td.CmdArgs {
		if a.Key == "via" {
			via = first(a.Vals)
			continue
		}
		id, err := parseWorker(a.Key)
		if err != nil {
			return err
		}
		var msg any = actors.IPC{Line: []byte(`{"event":"listening"}`)}
		if via == actors.ReadyNotify {
			msg = actors.Notify{Payload: "READY=1"}
		}
		if err := h.deliver(id, msg); err != nil {
			return err
		}
	}
	return nil
}

func (h *Harness) message(td *datadriven.TestData) error {
	if len(td.CmdArgs) != 1 {
		return fmt.Errorf("message takes one worker")
	}
	id, err := parseWorker(td.CmdArgs[0].Key)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(td.Input, "\n") {
		var msg actors.IPC
		if rest, ok := strings.CutPrefix(line, "oversized "); ok {
			msg.Err = "line longer than " + rest
		} else {
			msg.Line = []byte(line)
		}
		if actors.ClassifyIPC(msg.Line).Kind == actors.MsgRequestRestart {
			h.guard.Before(core.WorkerRestartRequested{Worker: id})
		}
		if err := h.deliver(id, msg); err != nil {
			return err
		}
	}
	return nil
}

func (h *Harness) exit(td *datadriven.TestData) error {
	var e actors.Exited
	var ids []core.WorkerID
	for _, a := range td.CmdArgs {
		switch a.Key {
		case "code":
			e.Code, _ = strconv.Atoi(first(a.Vals))
		case "signal":
			sig, err := fsm.ParseSignal(first(a.Vals))
			if err != nil {
				return err
			}
			e.Signal = sig
		default:
			id, err := parseWorker(a.Key)
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
	}
	for _, id := range ids {
		if err := h.deliver(id, e); err != nil {
			return err
		}
	}
	return nil
}

func parseWorker(s string) (core.WorkerID, error) {
	n, err := strconv.Atoi(strings.TrimPrefix(s, "w"))
	if err != nil || !strings.HasPrefix(s, "w") {
		return 0, fmt.Errorf("%q is not a worker (want w1, w2, ...)", s)
	}
	return core.WorkerID(n), nil
}

func (h *Harness) deliver(id core.WorkerID, msg any) error {
	if err := h.Runtime.deliver(id, msg, h.opts.Ready); err != nil {
		return err
	}
	h.settle()
	return nil
}

// settle waits until every actor is idle, then delivers what the runtime
// owes (spawns, exits after kills) one at a time, until nothing is owed.
func (h *Harness) settle() {
	for {
		synctest.Wait()
		pending := h.Runtime.takePending()
		if len(pending) == 0 {
			break
		}
		for _, p := range pending {
			// An owed exit is dropped if the process already exited on its own.
			_ = h.Runtime.deliver(p.id, p.msg, h.opts.Ready)
			synctest.Wait()
		}
	}
	if h.opts.Ready.Source == actors.ReadyTimer && h.Cluster != nil {
		for _, w := range h.view().Workers {
			if w.State == fsm.Listening {
				h.Runtime.markReady(w.ID)
			}
		}
	}
}

// settleWorkers plays well-behaved workers: each forking worker says
// ready, each draining worker exits cleanly, until nothing changes.
func (h *Harness) settleWorkers() error {
	for range 10000 {
		v := h.view()
		progressed := false
		for _, w := range v.Workers {
			var msg any
			switch w.State {
			case fsm.Forking:
				if w.PID == 0 {
					continue
				}
				msg = actors.IPC{Line: []byte(`{"event":"listening"}`)}
			case fsm.Draining:
				msg = actors.Exited{}
			default:
				continue
			}
			if err := h.deliver(w.ID, msg); err != nil {
				return err
			}
			progressed = true
			break
		}
		if !progressed {
			return nil
		}
	}
	return fmt.Errorf("settle: no end in sight")
}

func (h *Harness) view() core.View {
	v, err := h.Cluster.View(context.Background())
	if err != nil {
		panic(err)
	}
	return v
}

func (h *Harness) status() string {
	var b strings.Builder
	v := h.view()
	fmt.Fprintf(&b, "target=%d generation=%d ready=%t stopping=%t\n", v.Target, v.Generation, v.Ready, v.Stopping)
	for _, w := range v.Workers {
		fmt.Fprintf(&b, "%s slot=%d generation=%d %s", w.ID, w.Slot, w.Generation, w.State)
		if w.RestartRequested {
			b.WriteString(" restart-requested")
		}
		b.WriteString("\n")
	}
	if r := v.Rollout; r != nil {
		fmt.Fprintf(&b, "rollout generation=%d baseline=%d source=%s\n", r.Generation, r.Baseline, r.Source)
	}
	return b.String()
}

// lockedBuffer collects log lines written from many actor goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) take() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	b.buf.Reset()
	return s
}
