package journal

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/dutchmaster/dutchmaster/actors/core"
)

// Magic is the header's "journal" value: it tells a journal from any other
// JSON lines.
const Magic = "dutchmaster"

// Version is the format version written. Replay reads it and every
// earlier one (see the package documentation).
const Version = 3

// recordedIn says whether a journal of the given version records
// decisions like d. Version 1 predates the facts Ready, Refused and
// RolloutCoalesced: the core of that time reached the same points without
// reporting them, so a replay leaves them out before comparing.
func recordedIn(version int, d core.Decision) bool {
	switch d.(type) {
	case core.Ready, core.Refused, core.RolloutCoalesced:
		return version >= 2
	}
	return true
}

// Epoch is where a replay's scripted clock starts: step times are offsets
// from it. It is the scenario harness's epoch, so that replayed views read
// like scenario output.
var Epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Header is a journal's first line.
type Header struct {
	Journal string `json:"journal"` // always Magic
	Version int    `json:"version"`
	// Name is the master's --name, PID its process id, Started the wall
	// clock time the recording began (steps count from it, monotonically).
	Name    string    `json:"name,omitempty"`
	PID     int       `json:"pid,omitempty"`
	Started time.Time `json:"started"`
	// Command is the worker command, for the reader; replay ignores it.
	Command []string `json:"command,omitempty"`
	// Ready and Drain are the worker actors' modes, for the reader: the
	// core does not use them.
	Ready string `json:"ready,omitempty"`
	Drain string `json:"drain,omitempty"`
	// Config is the core's configuration, defaults filled in.
	Config Config `json:"config"`
}

// Config is core.Config in its journal form.
type Config struct {
	MaxSurge     int      `json:"max_surge"`
	KillTimeout  Duration `json:"kill_timeout"`
	ReadyTimeout Duration `json:"ready_timeout"`
	Backoff      Backoff  `json:"backoff"`
	Policy       Policy   `json:"policy"`
	// The health options: none of them in a journal of a master without.
	Watchdog     Duration `json:"watchdog,omitempty"`
	AbortTimeout Duration `json:"abort_timeout,omitempty"`
	Recycle      *Recycle `json:"recycle,omitempty"`
	Seed         uint64   `json:"seed,omitempty"`
}

// Recycle is core.Recycle in its journal form.
type Recycle struct {
	MaxMemory      int64    `json:"max_memory,omitempty"`
	MemorySamples  int      `json:"memory_samples,omitempty"`
	MemoryJitter   Duration `json:"memory_jitter,omitempty"`
	MaxLifetime    Duration `json:"max_lifetime,omitempty"`
	LifetimeJitter Duration `json:"lifetime_jitter,omitempty"`
	MaxRequests    int      `json:"max_requests,omitempty"`
	RequestsJitter int      `json:"requests_jitter,omitempty"`
	Concurrency    int      `json:"concurrency,omitempty"`
}

// Backoff is core.Backoff in its journal form.
type Backoff struct {
	Initial Duration `json:"initial"`
	Max     Duration `json:"max"`
	Reset   Duration `json:"reset"`
}

// Policy names a restart policy and its parameters. A custom policy (a Go
// value registered when embedding) is recorded by name only, with Custom
// set; replaying it needs the same policy in ReplayOptions.Policies.
type Policy struct {
	Name     string   `json:"name"`
	MaxSurge int      `json:"max_surge,omitempty"`
	Soak     Duration `json:"soak,omitempty"`
	Custom   bool     `json:"custom,omitempty"`
}

// EncodeConfig turns a core configuration into its journal form, defaults
// filled in.
func EncodeConfig(c core.Config) Config {
	c = c.WithDefaults()
	out := Config{
		MaxSurge: c.MaxSurge, KillTimeout: Duration(c.KillTimeout), ReadyTimeout: Duration(c.ReadyTimeout),
		Backoff:  Backoff{Initial: Duration(c.Backoff.Initial), Max: Duration(c.Backoff.Max), Reset: Duration(c.Backoff.Reset)},
		Watchdog: Duration(c.Watchdog), Seed: c.Seed,
	}
	if c.Watchdog > 0 {
		out.AbortTimeout = Duration(c.AbortTimeout)
	}
	if r := c.Recycle; r.MaxMemory > 0 || r.MaxLifetime > 0 || r.MaxRequests > 0 {
		out.Recycle = &Recycle{
			MaxMemory: r.MaxMemory, MemorySamples: r.MemorySamples, MemoryJitter: Duration(r.MemoryJitter),
			MaxLifetime: Duration(r.MaxLifetime), LifetimeJitter: Duration(r.LifetimeJitter),
			MaxRequests: r.MaxRequests, RequestsJitter: r.RequestsJitter, Concurrency: r.Concurrency,
		}
	}
	switch p := c.Policy.(type) {
	case core.Rolling:
		out.Policy = Policy{Name: p.Name(), MaxSurge: p.MaxSurge}
	case core.BlueGreen:
		out.Policy = Policy{Name: p.Name()}
	case core.Canary:
		out.Policy = Policy{Name: p.Name(), MaxSurge: p.MaxSurge, Soak: Duration(p.Soak)}
	default:
		out.Policy = Policy{Name: p.Name(), Custom: true}
	}
	return out
}

// Core turns the journal form back into a core configuration. Custom
// policies are looked up by name in policies.
func (c Config) Core(policies map[string]core.Policy) (core.Config, error) {
	out := core.Config{
		MaxSurge: c.MaxSurge, KillTimeout: time.Duration(c.KillTimeout), ReadyTimeout: time.Duration(c.ReadyTimeout),
		Backoff:  core.Backoff{Initial: time.Duration(c.Backoff.Initial), Max: time.Duration(c.Backoff.Max), Reset: time.Duration(c.Backoff.Reset)},
		Watchdog: time.Duration(c.Watchdog), AbortTimeout: time.Duration(c.AbortTimeout), Seed: c.Seed,
	}
	if r := c.Recycle; r != nil {
		out.Recycle = core.Recycle{
			MaxMemory: r.MaxMemory, MemorySamples: r.MemorySamples, MemoryJitter: time.Duration(r.MemoryJitter),
			MaxLifetime: time.Duration(r.MaxLifetime), LifetimeJitter: time.Duration(r.LifetimeJitter),
			MaxRequests: r.MaxRequests, RequestsJitter: r.RequestsJitter, Concurrency: r.Concurrency,
		}
	}
	p := c.Policy
	if custom, ok := policies[p.Name]; ok {
		out.Policy = custom
		return out, nil
	}
	if p.Custom {
		return out, fmt.Errorf("policy %q is a custom policy: replay it from Go with journal.ReplayOptions.Policies", p.Name)
	}
	var err error
	out.Policy, err = core.PolicyByName(p.Name, core.PolicyParams{MaxSurge: p.MaxSurge, CanarySoak: time.Duration(p.Soak)})
	return out, err
}

// Duration is a time.Duration written as Go writes it ("1.5s", "250ms");
// time.ParseDuration reads every such text back to the same value.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string such as \"1.5s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// stepLine is every line after the header: a step (input and
// decisions), or from version 3 on one of the upgrade lines (upgrade.go).
type stepLine struct {
	At        Duration          `json:"at"`
	Input     json.RawMessage   `json:"input,omitempty"`
	Decisions []json.RawMessage `json:"decisions,omitempty"`

	Upgrade       json.RawMessage `json:"upgrade,omitempty"`
	Resumed       json.RawMessage `json:"resumed,omitempty"`
	UpgradeFailed json.RawMessage `json:"upgrade_failed,omitempty"`
}

// upgradesFrom is the first version that records upgrades.
const upgradesFrom = 3
