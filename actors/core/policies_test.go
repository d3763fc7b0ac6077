package core_test

import (
	"errors"
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster/actors/core"
)

// TestPolicyByName: every listed name gives the policy of that name with
// the params it takes; the empty name gives the first, the default.
func TestPolicyByName(t *testing.T) {
	params := core.PolicyParams{MaxSurge: 3, CanarySoak: time.Minute}
	for _, name := range core.PolicyNames() {
		p, err := core.PolicyByName(name, params)
		if err != nil || p.Name() != name {
			t.Errorf("PolicyByName(%q) = %v, %v", name, p, err)
		}
	}
	if p, _ := core.PolicyByName("", params); p != (core.Rolling{MaxSurge: 3}) || p.Name() != core.PolicyNames()[0] {
		t.Errorf("PolicyByName(\"\") = %#v, want the default", p)
	}
	if p, _ := core.PolicyByName("canary", params); p != (core.Canary{Soak: time.Minute, MaxSurge: 3}) {
		t.Errorf("canary = %#v", p)
	}
	// A soak is taken as given: a journal replays the soak it recorded.
	if p, _ := core.PolicyByName("canary", core.PolicyParams{MaxSurge: 1}); p != (core.Canary{MaxSurge: 1}) {
		t.Errorf("canary without a soak = %#v", p)
	}
}

func TestPolicyByNameUnknown(t *testing.T) {
	_, err := core.PolicyByName("random", core.PolicyParams{})
	var upe *core.UnknownPolicyError
	if !errors.As(err, &upe) || upe.Name != "random" {
		t.Fatalf("PolicyByName(random) = %v, want an *UnknownPolicyError", err)
	}
	if want := `unknown policy "random" (want rolling, blue-green or canary)`; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

func TestPolicyParamsWithDefaults(t *testing.T) {
	if got := (core.PolicyParams{MaxSurge: 2}).WithDefaults(); got != (core.PolicyParams{MaxSurge: 2, CanarySoak: core.DefaultCanarySoak}) {
		t.Errorf("WithDefaults = %+v", got)
	}
	if got := (core.PolicyParams{CanarySoak: time.Second}).WithDefaults(); got.CanarySoak != time.Second {
		t.Errorf("WithDefaults replaced a given soak: %+v", got)
	}
}
