package scenarios

import (
	"bytes"
	"fmt"
	"path/filepath"
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

// Options extend the harness.
type Options struct {
	// Policies can be named with start policy=NAME, next to the built-in
	// rolling, blue-green and canary: replay the scenarios against a
	// policy of your own.
	Policies map[string]core.Policy
}

// RunDir replays every scenario file under dir, each in a synctest bubble
// of its own with a fresh actor system, and every journal (*.jsonl, see
// RunJournal).
func RunDir(t *testing.T, dir string, opts ...Options) {
	datadriven.Walk(t, dir, func(t *testing.T, path string) {
		if filepath.Ext(path) == JournalExt {
			RunJournal(t, path, opts...)
			return
		}
		RunFile(t, path, opts...)
	})
}

// RunFile replays one scenario file.
func RunFile(t *testing.T, path string, opts ...Options) {
	synctest.Test(t, func(t *testing.T) {
		h := NewHarness()
		for _, o := range opts {
			for name, p := range o.Policies {
				h.Policies[name] = p
			}
		}
		defer h.Close()
		datadriven.RunTest(t, path, func(t *testing.T, td *datadriven.TestData) string {
			return h.Handle(t, td)
		})
	})
}

// Harness turns scenario directives into Driver calls on an actor host and
// prints what the cluster logged and asked of the runtime. It must be
// created and used inside a synctest bubble.
type Harness struct {
	*Driver
	System *actor.ActorSystem
	// Policies are the policies start policy=NAME may name.
	Policies map[string]core.Policy

	logs    lockedBuffer
	log     zerolog.Logger
	started bool
}

// NewHarness returns a harness with no cluster started.
func NewHarness() *Harness {
	h := &Harness{Driver: NewDriver(), Policies: map[string]core.Policy{}}
	h.log = zerolog.New(zerolog.ConsoleWriter{Out: &h.logs, NoColor: true, PartsExclude: []string{zerolog.TimestampFieldName}}).Level(zerolog.InfoLevel)
	h.System = actors.NewSystem(zerolog.Nop())
	return h
}

// Close stops the actor system; every actor goroutine ends.
func (h *Harness) Close() {
	h.Driver.Close()
	shutdownInBubble(h.System)
}

// shutdownInBubble stops an actor system inside a synctest bubble. After
// a dead letter, protoactor's throttle keeps a goroutine waiting on a
// ticker for DeadLetterThrottleInterval (1 s); sleeping past it (virtual
// time, instant) lets that goroutine end before the bubble does.
func shutdownInBubble(system *actor.ActorSystem) {
	system.Shutdown()
	time.Sleep(2 * system.Config.DeadLetterThrottleInterval)
	synctest.Wait()
}

// Handle runs one directive and returns its output.
func (h *Harness) Handle(t *testing.T, td *datadriven.TestData) string {
	var out strings.Builder
	if err := h.run(td); err != nil {
		fmt.Fprintf(&out, "error: %v\n", err)
	}
	if h.started {
		h.Settle()
		if td.Cmd == "status" {
			out.WriteString(status(h.Host.View()))
		}
	}
	out.WriteString(h.logs.take())
	for _, c := range h.Runtime.takeCalls() {
		fmt.Fprintf(&out, "runtime: %s\n", c)
	}
	if h.started {
		for _, v := range h.Check() {
			t.Errorf("%s: %s: invariant violated: %s", td.Pos, td.Cmd, v)
			fmt.Fprintf(&out, "INVARIANT VIOLATED: %s\n", v)
		}
	}
	return out.String()
}

func (h *Harness) run(td *datadriven.TestData) error {
	if td.Cmd != "start" && !h.started {
		return fmt.Errorf("%s before start", td.Cmd)
	}
	switch td.Cmd {
	case "start":
		return h.start(td)
	case "signal":
		for _, a := range td.CmdArgs {
			sig, err := fsm.ParseSignal(a.Key)
			if err != nil {
				return err
			}
			if err := h.Signal(sig); err != nil {
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
		return h.failForks(td)
	case "advance":
		if len(td.CmdArgs) != 1 {
			return fmt.Errorf("advance takes one duration")
		}
		d, err := time.ParseDuration(td.CmdArgs[0].Key)
		if err != nil {
			return err
		}
		h.Advance(d)
	case "replace":
		// An operator's `ctl restart wN`.
		id, err := oneWorker(td)
		if err != nil {
			return err
		}
		h.Send(core.ReplaceWorker{Worker: id, Source: "ctl"})
	case "settle":
		return h.SettleWorkers()
	case "heartbeat":
		return h.heartbeat(td)
	case "notify":
		// notify wN with the datagram's lines as input
		id, err := oneWorker(td)
		if err != nil {
			return err
		}
		return h.Deliver(id, actors.Notify{Payload: td.Input})
	case "sample":
		return h.sample(td)
	case "status":
	default:
		return fmt.Errorf("unknown directive %q", td.Cmd)
	}
	return nil
}

// oneWorker reads the one worker a directive names (wN).
func oneWorker(td *datadriven.TestData) (core.WorkerID, error) {
	if len(td.CmdArgs) != 1 {
		return 0, fmt.Errorf("%s takes one worker", td.Cmd)
	}
	return parseWorker(td.CmdArgs[0].Key)
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func (h *Harness) start(td *datadriven.TestData) error {
	if h.started {
		return fmt.Errorf("already started")
	}
	opts := actors.Options{Logger: h.log}
	workers := 2
	var policy string
	var params core.PolicyParams
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
			h.Signals.Restart, err = fsm.ParseSignal(v)
		case "policy":
			policy = v
		case "canary-soak":
			params.CanarySoak, err = time.ParseDuration(v)
		case "watchdog":
			opts.Core.Watchdog, err = time.ParseDuration(v)
		case "abort-timeout":
			opts.Core.AbortTimeout, err = time.ParseDuration(v)
		case "max-memory":
			opts.Core.Recycle.MaxMemory, err = parseSize(v)
		case "memory-samples":
			opts.Core.Recycle.MemorySamples, err = strconv.Atoi(v)
		case "memory-jitter":
			opts.Core.Recycle.MemoryJitter, err = time.ParseDuration(v)
		case "max-lifetime":
			opts.Core.Recycle.MaxLifetime, err = time.ParseDuration(v)
		case "lifetime-jitter":
			opts.Core.Recycle.LifetimeJitter, err = time.ParseDuration(v)
		case "max-requests":
			opts.Core.Recycle.MaxRequests, err = strconv.Atoi(v)
		case "recycle-concurrency":
			opts.Core.Recycle.Concurrency, err = strconv.Atoi(v)
		case "seed":
			opts.Core.Seed, err = strconv.ParseUint(v, 10, 64)
		default:
			err = fmt.Errorf("unknown argument")
		}
		if err != nil {
			return fmt.Errorf("start %s=%s: %v", a.Key, v, err)
		}
	}
	params.MaxSurge = opts.Core.MaxSurge
	p, err := h.policy(policy, params.WithDefaults())
	if err != nil {
		return err
	}
	opts.Core.Policy = p
	opts.Workers = func() int { return workers }
	h.started = true
	h.Start(opts, func(o actors.Options) Host { return NewActorHost(h.System, o) })
	return nil
}

func (h *Harness) policy(name string, params core.PolicyParams) (core.Policy, error) {
	if p, ok := h.Policies[name]; ok {
		return p, nil
	}
	return core.PolicyByName(name, params)
}

func (h *Harness) ready(td *datadriven.TestData) error {
	via := actors.ReadyIPC
	for _, a := range td.CmdArgs {
		if a.Key == "via" {
			via = first(a.Vals)
		}
	}
	for _, a := range td.CmdArgs {
		if a.Key == "via" {
			continue
		}
		id, err := parseWorker(a.Key)
		if err != nil {
			return err
		}
		if err := h.Deliver(id, ReadyMessage(via)); err != nil {
			return err
		}
	}
	return nil
}

func (h *Harness) message(td *datadriven.TestData) error {
	id, err := oneWorker(td)
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
		if err := h.Deliver(id, msg); err != nil {
			return err
		}
	}
	return nil
}

// heartbeat w1 w2 [via=notify]: the workers prove they are alive, over
// IPC ({"event":"heartbeat"}) or sd_notify (WATCHDOG=1).
func (h *Harness) heartbeat(td *datadriven.TestData) error {
	var msg any = actors.IPC{Line: []byte(`{"event":"heartbeat"}`)}
	for _, a := range td.CmdArgs {
		if a.Key == "via" && first(a.Vals) == actors.ReadyNotify {
			msg = actors.Notify{Payload: "WATCHDOG=1"}
		}
	}
	for _, a := range td.CmdArgs {
		if a.Key == "via" {
			continue
		}
		id, err := parseWorker(a.Key)
		if err != nil {
			return err
		}
		if err := h.Deliver(id, msg); err != nil {
			return err
		}
	}
	return nil
}

// sample w1=600M w2=100M: one round of memory samples, as the runtime's
// sampler sends it.
func (h *Harness) sample(td *datadriven.TestData) error {
	var in core.UsageSampled
	for _, a := range td.CmdArgs {
		id, err := parseWorker(a.Key)
		if err != nil {
			return err
		}
		rss, err := parseSize(first(a.Vals))
		if err != nil {
			return fmt.Errorf("sample %s=%s: %v", a.Key, first(a.Vals), err)
		}
		in.Samples = append(in.Samples, core.RSSSample{Worker: id, RSS: rss})
	}
	h.Send(in)
	return nil
}

// parseSize reads 600M, 2G, 512K (powers of 1024) or a byte count.
func parseSize(s string) (int64, error) {
	shift := 0
	switch {
	case strings.HasSuffix(s, "K"):
		shift = 10
	case strings.HasSuffix(s, "M"):
		shift = 20
	case strings.HasSuffix(s, "G"):
		shift = 30
	}
	if shift > 0 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n << shift, err
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
		if err := h.Deliver(id, e); err != nil {
			return err
		}
	}
	return nil
}

func (h *Harness) failForks(td *datadriven.TestData) error {
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
	h.FailForks(n, reason)
	return nil
}

func parseWorker(s string) (core.WorkerID, error) {
	n, err := strconv.Atoi(strings.TrimPrefix(s, "w"))
	if err != nil || !strings.HasPrefix(s, "w") {
		return 0, fmt.Errorf("%q is not a worker (want w1, w2, ...)", s)
	}
	return core.WorkerID(n), nil
}

func status(v core.View) string {
	var b strings.Builder
	fmt.Fprintf(&b, "target=%d generation=%d policy=%s ready=%t stopping=%t\n", v.Target, v.Generation, v.Policy, v.Ready, v.Stopping)
	for _, w := range v.Workers {
		fmt.Fprintf(&b, "%s slot=%d generation=%d %s", w.ID, w.Slot, w.Generation, w.State)
		if w.RestartRequested {
			b.WriteString(" restart-requested")
		}
		if w.Hung {
			b.WriteString(" hung")
		}
		if w.Recycling {
			b.WriteString(" recycling=" + w.RecycleCause)
		}
		if w.MaxRequests > 0 {
			fmt.Fprintf(&b, " max-requests=%d", w.MaxRequests)
		}
		if !w.LifetimeEnd.IsZero() {
			fmt.Fprintf(&b, " lifetime-end=%s", w.LifetimeEnd.Sub(Epoch))
		}
		b.WriteString("\n")
	}
	for _, s := range v.Slots {
		if s.Failures > 0 {
			fmt.Fprintf(&b, "slot %d failures=%d flapping=%t\n", s.Index, s.Failures, s.Flapping)
		}
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
