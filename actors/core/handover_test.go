package core_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/fsm"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// handoverConfig is the configuration of the handover tests: recycling
// on, so that the jitter generator is used.
var handoverConfig = core.Config{
	ReadyTimeout: 10 * time.Second, Backoff: core.Backoff{Initial: 2 * time.Second},
	Recycle: core.Recycle{MaxLifetime: time.Hour, MaxRequests: 1000}, Seed: 7,
}

// rollingCluster is a cluster of three listening workers in the middle of
// a rolling restart: w4 replaces w1 and is booting.
func rollingCluster(t testing.TB) *core.Cluster {
	c := core.New(handoverConfig)
	c.Step(epoch, core.Start{Target: 3})
	for id := core.WorkerID(1); id <= 3; id++ {
		c.Step(epoch.Add(time.Second), core.WorkerListening{Worker: id})
	}
	c.Step(epoch.Add(2*time.Second), core.RestartRequested{Source: "test"})
	if _, ok := c.Worker(4); !ok {
		t.Fatalf("no replacement forked: %+v", c.View())
	}
	return c
}

// encodedState is a handed-over state as the old master writes it.
func encodedState(t testing.TB) []byte {
	st, err := rollingCluster(t).Handover(epoch.Add(3 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestDecodeStateFormats: the current format is read; a newer one, one
// without a number and one that does not exist are refused, saying why.
func TestDecodeStateFormats(t *testing.T) {
	data := encodedState(t)
	st, err := core.DecodeState(data)
	if err != nil || st.Format != core.StateFormat || len(st.Workers) != 4 || st.Rollout == nil {
		t.Fatalf("current format: %v, %+v", err, st)
	}
	withFormat := func(f any) []byte {
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		if f == nil {
			delete(m, "format")
		} else {
			m["format"] = f
		}
		out, _ := json.Marshal(m)
		return out
	}
	for name, c := range map[string]struct {
		data []byte
		want string
	}{
		"newer":       {withFormat(core.StateFormat + 1), "format 2 is newer than this binary reads (up to 1)"},
		"no number":   {withFormat(nil), "no format number"},
		"zero":        {withFormat(0), "format 0 does not exist"},
		"not json":    {[]byte("format 1"), "not a JSON object"},
		"extra field": {[]byte(strings.Replace(string(data), `"format":1`, `"format":1,"sockets":[3]`, 1)), `unknown field "sockets"`},
	} {
		if _, err := core.DecodeState(c.data); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one saying %q", name, err, c.want)
		}
	}
}

// TestResumeRefusesOtherConfig: the resuming master must run the
// configuration in force; a custom policy is matched by its name.
func TestResumeRefusesOtherConfig(t *testing.T) {
	st, err := core.DecodeState(encodedState(t))
	if err != nil {
		t.Fatal(err)
	}
	other := handoverConfig
	other.KillTimeout = time.Minute
	if _, _, err := core.Resume(other, st, epoch); err == nil || !strings.Contains(err.Error(), "configuration differs") {
		t.Errorf("another kill timeout: %v, want the configuration refused", err)
	}
	custom := handoverConfig
	custom.Policy = namedPolicy("mine")
	c := core.New(custom)
	c.Step(epoch, core.Start{Target: 1})
	st, err = c.Handover(epoch)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := core.Resume(custom, st, epoch); err != nil {
		t.Errorf("the same custom policy: %v", err)
	}
	custom.Policy = namedPolicy("theirs")
	if _, _, err := core.Resume(custom, st, epoch); err == nil {
		t.Error("a custom policy of another name was accepted")
	}
}

type namedPolicy string

func (p namedPolicy) Name() string               { return string(p) }
func (p namedPolicy) Next(v core.View) core.Step { return core.Rolling{MaxSurge: 1}.Next(v) }

// TestHandoverRefusedInsideStep: a policy that hands the cluster over
// while it is being asked (inside Step) is refused: the step is half done.
func TestHandoverRefusedInsideStep(t *testing.T) {
	p := &handingPolicy{}
	cfg := handoverConfig
	cfg.Policy = p
	c := core.New(cfg)
	p.c = c
	c.Step(epoch, core.Start{Target: 1})
	if p.err == nil || !strings.Contains(p.err.Error(), "inside a step") {
		t.Fatalf("handover inside a step: %v, want it refused", p.err)
	}
	if _, err := c.Handover(epoch); err != nil {
		t.Fatalf("handover between steps: %v", err)
	}
}

type handingPolicy struct {
	c   *core.Cluster
	err error
}

func (p *handingPolicy) Name() string { return "handing" }
func (p *handingPolicy) Next(v core.View) core.Step {
	_, p.err = p.c.Handover(v.Now)
	return core.Rolling{MaxSurge: 1}.Next(v)
}

// FuzzDecodeState: whatever the bytes, DecodeState and Resume return
// an error or a cluster that steps, and that cluster hands over a state
// that reads back the same.
func FuzzDecodeState(f *testing.F) {
	f.Add(encodedState(f))
	f.Add([]byte(`{"format":1,"next_worker":1,"random":"cGNnOgAAAAAAAAAAnjd5uX9KfBU="}`))
	f.Add([]byte(`{"format":2}`))
	f.Add([]byte(`{"format":1,"next_worker":3,"slots":[{"active":true}],"workers":[{"id":2,"slot":0,"generation":1,"state":"killed"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := core.DecodeState(data)
		if err != nil {
			return
		}
		c, _, err := core.Resume(handoverConfig, st, epoch)
		if err != nil {
			return
		}
		now := epoch
		for _, w := range c.View().Workers {
			c.Step(now, core.WorkerListening{Worker: w.ID})
		}
		c.Step(now, core.RestartRequested{Source: "fuzz"})
		h, err := c.Handover(now)
		if err != nil {
			t.Fatal(err)
		}
		for _, tm := range h.Timers {
			now = now.Add(max(tm.Due, 0))
			c.Step(now, core.TimerFired{Timer: tm.Timer})
		}
		for _, w := range c.View().Workers {
			if w.State == fsm.Draining {
				c.Step(now, core.WorkerExited{Worker: w.ID})
			}
		}
		again, err := c.Handover(now)
		if err != nil {
			t.Fatal(err)
		}
		out, err := json.Marshal(again)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := core.DecodeState(out); err != nil {
			t.Fatalf("a state the cluster handed over does not read back: %v\n%s", err, out)
		}
	})
}

// TestStateFormat1File: the format-1 state in testdata (a rolling
// restart with a booting replacement, recycling on) is read, resumed and
// handed over again to the same bytes. The file never changes: every
// later binary must read it, and a change of the Go types that alters
// what Handover writes (a renamed field of Timer, Backoff or Recycle,
// which State embeds) fails here, and must take a new StateFormat.
func TestStateFormat1File(t *testing.T) {
	data, err := os.ReadFile("testdata/state-format-1.json")
	if err != nil {
		t.Fatal(err)
	}
	st, err := core.DecodeState(data)
	if err != nil {
		t.Fatal(err)
	}
	resumeAt := epoch.Add(time.Hour)
	c, rearm, err := core.Resume(handoverConfig, st, resumeAt)
	if err != nil {
		t.Fatal(err)
	}
	if len(rearm) == 0 || len(c.View().Workers) != 4 || c.View().Rollout == nil {
		t.Fatalf("resumed %+v, timers %v", c.View(), rearm)
	}
	again, err := c.Handover(resumeAt)
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.MarshalIndent(again, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimSpace(string(data)); string(out) != want {
		t.Errorf("format 1 written differently now:\n%s\nwant:\n%s", out, want)
	}
}
