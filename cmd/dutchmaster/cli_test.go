//go:build linux

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBadInput: every wrong flag, config or command exits 2 with one line
// that names the problem, before any worker starts.
func TestBadInput(t *testing.T) {
	busy := freeTCP(t)
	holder := listenOn(t, busy)
	defer holder.Close()
	dir := t.TempDir()
	notExec := filepath.Join(dir, "script.sh")
	writeFile(t, notExec, "echo hi", 0o644)
	badYAML := filepath.Join(dir, "bad.yaml")
	writeFile(t, badYAML, "workers: [1,\n", 0o644)
	unknownKey := filepath.Join(dir, "unknown.yaml")
	writeFile(t, unknownKey, "workers: 2\nworkerz: 3\n", 0o644)
	badValue := filepath.Join(dir, "badvalue.yaml")
	writeFile(t, badValue, "kill-timeout: soon\n", 0o644)

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no command", []string{}, "no worker command"},
		{"unknown flag", []string{"--wrokers", "2", "--", "true"}, "flag provided but not defined: -wrokers"},
		{"workers not a number", []string{"--workers", "many", "--", "true"}, `--workers "many"`},
		{"workers zero", []string{"--workers", "0", "--", "true"}, `--workers "0"`},
		{"bad duration", []string{"--kill-timeout", "30", "--", "true"}, `--kill-timeout "30"`},
		{"negative duration", []string{"--ready-timeout", "-1s", "--", "true"}, `--ready-timeout "-1s"`},
		{"bad signal", []string{"--restart-signal", "SIGNOPE", "--", "true"}, `--restart-signal "SIGNOPE"`},
		{"restart signal that stops", []string{"--restart-signal", "SIGTERM", "--", "true"}, "--restart-signal SIGTERM"},
		{"bad ready", []string{"--ready", "soon", "--", "true"}, `--ready: ready mode "soon"`},
		{"bad drain", []string{"--drain", "gently", "--", "true"}, `--drain: drain mode "gently"`},
		{"bad max-surge", []string{"--max-surge", "0", "--", "true"}, `--max-surge "0"`},
		{"bad env", []string{"--env", "NOEQUALS", "--", "true"}, `--env "NOEQUALS"`},
		{"bad log level", []string{"--log-level", "loud", "--", "true"}, `--log-level "loud"`},
		{"bad log format", []string{"--log-format", "xml", "--", "true"}, `--log-format "xml"`},
		{"bad bool", []string{"--log-worker-output=maybe", "--", "true"}, `--log-worker-output "maybe"`},
		{"missing command", []string{"--", "no-such-command-here"}, "worker command no-such-command-here: not found in PATH"},
		{"not executable", []string{"--", notExec}, "not an executable file"},
		{"missing dir", []string{"--dir", filepath.Join(dir, "nope"), "--", "true"}, "--dir"},
		{"bad listen spec", []string{"--listen", "tcp://127.0.0.1", "--", "true"}, `--listen "tcp://127.0.0.1"`},
		{"address in use", []string{"--listen", "tcp://" + busy, "--", "true"}, "address already in use"},
		{"unix socket in missing dir", []string{"--listen", "unix://" + filepath.Join(dir, "nope", "s.sock"), "--", "true"}, filepath.Join(dir, "nope")},
		{"missing config", []string{"--config", filepath.Join(dir, "none.yaml"), "--", "true"}, "--config"},
		{"invalid yaml", []string{"--config", badYAML, "--", "true"}, "not valid YAML"},
		{"unknown config key", []string{"--config", unknownKey, "--", "true"}, "workerz"},
		{"bad config value", []string{"--config", badValue, "--", "true"}, `--kill-timeout "soon"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := run(c.args, &stderr)
			out := stderr.String()
			if code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitUsage, out)
			}
			if !strings.Contains(out, c.want) {
				t.Fatalf("stderr does not name the problem (%q):\n%s", c.want, out)
			}
			// A command line not understood adds the hint, and only that.
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if syntax := c.name == "unknown flag" || c.name == "no command"; syntax {
				if len(lines) != 2 || lines[1] != usageHint {
					t.Fatalf("want one line and the hint %q, got:\n%s", usageHint, out)
				}
			} else if len(lines) != 1 {
				t.Fatalf("want one line, got:\n%s", out)
			}
			if strings.Contains(out, `"message":"fork"`) {
				t.Fatalf("a worker was started:\n%s", out)
			}
		})
	}
}

// TestConfigFile: the file sets keys, flags win, and the workers see both.
func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "dutchmaster.yaml")
	writeFile(t, cfg, `
workers: 3
kill-timeout: 5s
ready: ipc
env:
  - FROM_FILE=1
listen:
  - http=tcp://127.0.0.1:0
`, 0o644)
	s, err := parse([]string{"--config", cfg, "--workers", "1", "--", "true"})
	if err != nil {
		t.Fatal(err)
	}
	o, err := s.resolve()
	if err != nil {
		t.Fatal(err)
	}
	if got := o.Workers(); got != 1 {
		t.Errorf("workers = %d, want the flag's 1", got)
	}
	if o.KillTimeout != 5*time.Second || o.Ready != "ipc" {
		t.Errorf("kill-timeout %s, ready %q: want the file's 5s and ipc", o.KillTimeout, o.Ready)
	}
	if len(o.Env) != 1 || o.Env[0] != "FROM_FILE=1" || len(o.Listen) != 1 {
		t.Errorf("env %v, listen %v", o.Env, o.Listen)
	}
	if o.ReadyTimeout != 60*time.Second || o.MaxSurge != 1 {
		t.Errorf("defaults lost: ready-timeout %s, max-surge %d", o.ReadyTimeout, o.MaxSurge)
	}
}

func TestVersion(t *testing.T) {
	var stderr bytes.Buffer
	if code := run([]string{"version"}, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}
