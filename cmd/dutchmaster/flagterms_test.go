//go:build linux

package main

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/dutchmaster/dutchmaster"
)

// TestOptionFieldsExist: every option's field is a field of
// dutchmaster.Options, so the errors that name it map to the flag.
func TestOptionFieldsExist(t *testing.T) {
	for _, o := range options {
		if o.field == "" {
			continue
		}
		typ := reflect.TypeFor[dutchmaster.Options]()
		for part := range strings.SplitSeq(o.field, ".") {
			f, ok := typ.FieldByName(part)
			if !ok {
				t.Errorf("--%s: Options.%s is no field", o.name, o.field)
				break
			}
			typ = f.Type
		}
	}
}

// TestInFlagTerms: the fields an error names become their flags; a name
// that is no option's field stays as it is.
func TestInFlagTerms(t *testing.T) {
	cases := map[string]string{
		"Options.KillTimeout -1s: must not be negative":                      "--kill-timeout -1s: must not be negative",
		"Options.Ready timer:2s: shorter than Options.ReadyTimeout (1s)":     "--ready timer:2s: shorter than --ready-timeout (1s)",
		"Options.User/Options.Group: needs root":                             "--user/--group: needs root",
		"Options.PIDFile /x: held; give this one another Options.PIDFile":    "--pidfile /x: held; give this one another --pidfile",
		"Options.Backoff.Max 1s: too short":                                  "--backoff-max 1s: too short",
		"Options.Command: no worker command":                                 "Options.Command: no worker command",
		"worker command x: not found in PATH":                                "worker command x: not found in PATH",
		`Options.Listen "a": name "a" is already used by Options.Listen "b"`: `--listen "a": name "a" is already used by --listen "b"`,
	}
	for in, want := range cases {
		if got := inFlagTerms(errors.New(in)).Error(); got != want {
			t.Errorf("inFlagTerms(%q) = %q, want %q", in, got, want)
		}
	}
	if inFlagTerms(nil) != nil {
		t.Error("inFlagTerms(nil) is not nil")
	}
}
