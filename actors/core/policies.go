package core

import (
	"fmt"
	"strings"
	"time"
)

// DefaultCanarySoak is how long a canary must stay up before the rest
// roll, when no soak is given.
const DefaultCanarySoak = 30 * time.Second

// policyNames are the built-in policies by name; the first is the default.
var policyNames = []string{"rolling", "blue-green", "canary"}

// PolicyNames lists the names PolicyByName knows; the first is the
// default policy, the one an empty name picks.
func PolicyNames() []string { return append([]string(nil), policyNames...) }

// PolicyChoices is PolicyNames as a sentence for messages: "rolling,
// blue-green or canary".
func PolicyChoices() string {
	return strings.Join(policyNames[:len(policyNames)-1], ", ") + " or " + policyNames[len(policyNames)-1]
}

// PolicyParams are the settings of the built-in policies; each policy
// takes those it has.
type PolicyParams struct {
	// MaxSurge: Rolling and Canary.
	MaxSurge int
	// CanarySoak: Canary. PolicyByName takes it as it is (a journal
	// replays the soak it recorded); WithDefaults makes zero or less
	// DefaultCanarySoak.
	CanarySoak time.Duration
}

// WithDefaults fills in what is unset: the soak.
func (p PolicyParams) WithDefaults() PolicyParams {
	if p.CanarySoak <= 0 {
		p.CanarySoak = DefaultCanarySoak
	}
	return p
}

// UnknownPolicyError is PolicyByName's error for a name that is not one of
// PolicyNames.
type UnknownPolicyError struct{ Name string }

func (e *UnknownPolicyError) Error() string {
	return fmt.Sprintf("unknown policy %q (want %s)", e.Name, PolicyChoices())
}

// PolicyByName is the built-in policy called name with params; an empty
// name is the default policy, rolling. Every place a policy is named in
// text (options, configuration files, journals, scenarios) comes here.
func PolicyByName(name string, params PolicyParams) (Policy, error) {
	switch name {
	case "", "rolling":
		return Rolling{MaxSurge: params.MaxSurge}, nil
	case "blue-green":
		return BlueGreen{}, nil
	case "canary":
		return Canary{Soak: params.CanarySoak, MaxSurge: params.MaxSurge}, nil
	}
	return nil, &UnknownPolicyError{Name: name}
}
