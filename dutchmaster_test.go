package dutchmaster_test

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster"
)

// TestConfigErrorsNameTheField: each bad value is refused with a
// *ConfigError whose Field is the Options field at fault and whose
// message names it as Options.Field, in the terms a Go caller writes.
func TestConfigErrorsNameTheField(t *testing.T) {
	ok := func(o dutchmaster.Options) dutchmaster.Options {
		o.Command = []string{"true"}
		return o
	}
	missing := filepath.Join(t.TempDir(), "missing")
	cases := []struct {
		opts  dutchmaster.Options
		field string
		want  string
	}{
		{dutchmaster.Options{}, "Command", "Options.Command: no worker command"},
		{dutchmaster.Options{Command: []string{"no-such-command-here"}}, "Command", "worker command no-such-command-here: not found in PATH"},
		{ok(dutchmaster.Options{Name: "a/b"}), "Name", `Options.Name "a/b": use letters, digits`},
		{ok(dutchmaster.Options{Dir: missing}), "Dir", "Options.Dir " + missing + ": not a directory"},
		{ok(dutchmaster.Options{Listen: []string{"ftp://x:1"}}), "Listen", `Options.Listen "ftp://x:1": `},
		{ok(dutchmaster.Options{Listen: []string{"a=tcp://127.0.0.1:1", "a=tcp://127.0.0.1:2"}}), "Listen", `is already used by Options.Listen "a=tcp://127.0.0.1:1"`},
		{ok(dutchmaster.Options{Ready: "soon"}), "Ready", `Options.Ready: ready mode "soon"`},
		{ok(dutchmaster.Options{Drain: "gently"}), "Drain", `Options.Drain: drain mode "gently"`},
		{ok(dutchmaster.Options{KillTimeout: -time.Second}), "KillTimeout", "Options.KillTimeout -1s: must not be negative"},
		{ok(dutchmaster.Options{ReadyTimeout: -time.Second}), "ReadyTimeout", "Options.ReadyTimeout -1s: must not be negative"},
		{ok(dutchmaster.Options{MaxSurge: -1}), "MaxSurge", "Options.MaxSurge -1: must not be negative"},
		{ok(dutchmaster.Options{Ready: "timer:2s", ReadyTimeout: time.Second}), "Ready", "Options.Ready timer:2s: the timer must be shorter than Options.ReadyTimeout (1s)"},
		{ok(dutchmaster.Options{PolicyName: "random"}), "PolicyName", `Options.PolicyName "random": want rolling, blue-green or canary`},
		{ok(dutchmaster.Options{RestartSignal: syscall.SIGKILL}), "RestartSignal", "Options.RestartSignal SIGKILL: want SIGUSR2"},
		{ok(dutchmaster.Options{StopSignal: syscall.SIGKILL}), "StopSignal", "Options.StopSignal SIGKILL: a worker cannot drain on it"},
		{ok(dutchmaster.Options{Env: []string{"NOEQUALS"}}), "Env", `Options.Env "NOEQUALS": want KEY=VALUE`},
		{ok(dutchmaster.Options{Workers: func() int { return 0 }}), "Workers", "Options.Workers 0: want 1 to"},
		{ok(dutchmaster.Options{User: "no-such-user-here"}), "User", "Options.User no-such-user-here: no such user"},
		{ok(dutchmaster.Options{Group: "no-such-group-here"}), "Group", "Options.Group no-such-group-here: no such group"},
		{ok(dutchmaster.Options{WorkerProtocol: "http"}), "WorkerProtocol", `Options.WorkerProtocol "http": want auto, fds or node-cluster`},
	}
	fields := reflect.TypeFor[dutchmaster.Options]()
	for _, c := range cases {
		err := dutchmaster.Check(c.opts)
		var ce *dutchmaster.ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("%s: %v, want a *ConfigError", c.field, err)
			continue
		}
		if ce.Field != c.field || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Field %q, %q; want Field %q and %q", ce.Field, err, c.field, c.want)
		}
		if _, ok := fields.FieldByName(ce.Field); !ok {
			t.Errorf("Field %q is not a field of Options", ce.Field)
		}
		if strings.Contains(err.Error(), "--") {
			t.Errorf("%q names a flag", err)
		}
	}
	if err := dutchmaster.Check(ok(dutchmaster.Options{})); err != nil {
		t.Errorf("Check of good options: %v", err)
	}
}
