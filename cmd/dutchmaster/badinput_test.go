//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// badValues holds, for every option, values it must refuse and what the
// one line must then say. TestEveryOptionRefusesBadValues fails for an
// option missing here, so a new option comes with its bad input.
func badValues(dir string) map[string][][2]string {
	missing := filepath.Join(dir, "missing", "x")
	return map[string][][2]string{
		"workers":        {{"many", `--workers "many"`}, {"0", `--workers "0"`}, {"-3", `--workers "-3"`}, {"5000", `--workers "5000"`}},
		"listen":         {{"tcp://127.0.0.1", `--listen "tcp://127.0.0.1"`}, {"ftp://127.0.0.1:21", `--listen "ftp://127.0.0.1:21"`}},
		"policy":         {{"random", `--policy "random"`}},
		"max-surge":      {{"0", `--max-surge "0"`}, {"two", `--max-surge "two"`}},
		"canary-soak":    {{"5", `--canary-soak "5"`}, {"-1s", `--canary-soak "-1s"`}},
		"restart-signal": {{"SIGNOPE", `--restart-signal "SIGNOPE"`}, {"SIGKILL", `--restart-signal`}},
		"stop-signal":    {{"SIGNOPE", `--stop-signal "SIGNOPE"`}},
		"upgrade-signal": {{"SIGNOPE", `--upgrade-signal "SIGNOPE"`}, {"SIGUSR2", `--upgrade-signal SIGUSR2: it is the restart signal`},
			{"SIGKILL", `--upgrade-signal SIGKILL: want SIGUSR2, SIGHUP, SIGUSR1, SIGQUIT or SIGWINCH`}},
		"kill-timeout":        {{"30", `--kill-timeout "30"`}, {"0s", `--kill-timeout "0s"`}},
		"ready":               {{"soon", `--ready: ready mode "soon"`}, {"timer:0s", `--ready`}},
		"ready-timeout":       {{"-1s", `--ready-timeout "-1s"`}, {"1 minute", `--ready-timeout "1 minute"`}},
		"drain":               {{"gently", `--drain: drain mode "gently"`}},
		"backoff":             {{"fast", `--backoff "fast"`}, {"-1s", `--backoff "-1s"`}},
		"backoff-max":         {{"7", `--backoff-max "7"`}},
		"backoff-reset":       {{"later", `--backoff-reset "later"`}},
		"worker-protocol":     {{"http", `--worker-protocol "http"`}},
		"watchdog":            {{"-1s", `--watchdog "-1s"`}, {"10ms", `--watchdog "10ms": want at least 100ms`}, {"often", `--watchdog "often"`}},
		"max-memory":          {{"lots", `--max-memory "lots"`}, {"-1G", `--max-memory "-1G"`}, {"2X", `--max-memory "2X"`}},
		"memory-interval":     {{"0s", `--memory-interval "0s"`}, {"2", `--memory-interval "2"`}},
		"max-memory-jitter":   {{"-1s", `--max-memory-jitter "-1s"`}},
		"max-lifetime":        {{"-1h", `--max-lifetime "-1h"`}, {"a day", `--max-lifetime "a day"`}},
		"max-lifetime-jitter": {{"-1m", `--max-lifetime-jitter "-1m"`}},
		"max-requests":        {{"-5", `--max-requests "-5"`}, {"many", `--max-requests "many"`}},
		"max-requests-jitter": {{"-1", `--max-requests-jitter "-1"`}},
		"recycle-concurrency": {{"0", `--recycle-concurrency "0"`}, {"two", `--recycle-concurrency "two"`}},
		"balance":             {{"random", `--balance "random"`}},
		"node-preload":        {{"maybe", `--node-preload "maybe"`}},
		"node-grace":          {{"5", `--node-grace "5"`}, {"0s", `--node-grace "0s"`}, {"30s", `--node-grace 30s: must be shorter than --kill-timeout (30s)`}},
		"env":                 {{"NOEQUALS", `--env "NOEQUALS"`}, {"=value", `--env "=value"`}},
		"env-clear":           {{"maybe", `--env-clear "maybe"`}},
		"env-allow":           {{"A=B", `--env-allow "A=B": want the name of a variable`}, {"", `--env-allow ""`}},
		"user":                {{"no-such-user-here", `--user no-such-user-here`}},
		"group":               {{"no-such-group-here", `--group no-such-group-here`}},
		"dir":                 {{missing, "--dir"}},
		"before-fork":         nil, // any shell command; empty means none
		"log-format":          {{"xml", `--log-format "xml"`}},
		"log-level":           {{"loud", `--log-level "loud"`}},
		"log-worker-output":   {{"maybe", `--log-worker-output "maybe"`}},
		"log-tail":            {{"lots", `--log-tail "lots": want a number of lines from 0 to 100000`}, {"-1", `--log-tail "-1"`}, {"100001", `--log-tail "100001"`}},
		"name":                {{"a/b", `--name "a/b"`}},
		"control":             {{missing + ".sock", "--control " + missing + ".sock"}},
		"metrics":             {{"nowhere", "--metrics nowhere"}},
		"record":              {{missing, "--record " + missing}},
		"pidfile":             {{missing, "--pidfile " + missing}},
		"subreaper":           {{"maybe", `--subreaper "maybe"`}},
	}
}

// TestEveryOptionRefusesBadValues gives every option bad values, as a
// flag and as a config file key: exit status 2, one line naming the
// problem, no worker started. The config file also gets each key with a
// value of the wrong YAML type.
func TestEveryOptionRefusesBadValues(t *testing.T) {
	dir := t.TempDir()
	table := badValues(dir)
	for _, o := range options {
		cases, ok := table[o.name]
		if !ok {
			t.Errorf("--%s has no bad values in badValues", o.name)
			continue
		}
		for i, c := range cases {
			value, want := c[0], c[1]
			t.Run(fmt.Sprintf("%s/flag/%d", o.name, i), func(t *testing.T) {
				t.Parallel()
				expectUsageError(t, []string{"--" + o.name + "=" + value, "--", "true"}, want)
			})
			t.Run(fmt.Sprintf("%s/config/%d", o.name, i), func(t *testing.T) {
				t.Parallel()
				yaml := fmt.Sprintf("%s: %q\n", o.name, value)
				if o.list != nil {
					yaml = fmt.Sprintf("%s: [%q]\n", o.name, value)
				}
				cfg := filepath.Join(t.TempDir(), "c.yaml")
				writeFile(t, cfg, yaml, 0o644)
				expectUsageError(t, []string{"--config", cfg, "--", "true"}, want)
			})
		}
		t.Run(o.name+"/config/wrong-type", func(t *testing.T) {
			t.Parallel()
			yaml := o.name + ": {a: 1}\n" // a mapping, where a scalar or a list belongs
			cfg := filepath.Join(t.TempDir(), "c.yaml")
			writeFile(t, cfg, yaml, 0o644)
			expectUsageError(t, []string{"--config", cfg, "--", "true"}, o.name)
		})
	}
}

// expectUsageError runs a master with args, in a process of its own so
// that a value wrongly accepted starts a cluster that the deadline ends
// instead of one that runs on in the test.
func expectUsageError(t *testing.T, args []string, want string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--control") }) &&
		!strings.HasPrefix(t.Name(), "TestEveryOptionRefusesBadValues/control/") {
		// No default control socket (tests have no runtime directory), so
		// that its warning is not a second line.
		args = append([]string{"--control", "none"}, args...)
	}
	cmd := exec.CommandContext(ctx, self, args...)
	cmd.Env = append(os.Environ(), roleEnv+"=master")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	out := stderr.String()
	if code := cmd.ProcessState.ExitCode(); code != exitUsage {
		t.Fatalf("%q: exit %d (%v), want %d; stderr:\n%s", args, code, err, exitUsage, out)
	}
	if !strings.Contains(out, want) {
		t.Fatalf("%q: stderr does not name the problem (%q):\n%s", args, want, out)
	}
	if strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Fatalf("%q: want one line, got:\n%s", args, out)
	}
	if strings.Contains(out, `"message":"fork"`) {
		t.Fatalf("%q: a worker was started:\n%s", args, out)
	}
}
