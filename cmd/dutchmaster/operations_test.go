//go:build linux

package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestOperationsBadInput: a bad value for an operations flag exits 2
// with one line that names it, and no worker is started.
func TestOperationsBadInput(t *testing.T) {
	busy := freeTCP(t)
	holder := listenOn(t, busy)
	defer holder.Close()
	missing := filepath.Join(t.TempDir(), "missing")
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"name with a space", []string{"--name", "a b"}, `--name "a b": use letters, digits`},
		{"name too long", []string{"--name", strings.Repeat("n", 65)}, `--name "` + strings.Repeat("n", 65) + `": at most 64 characters`},
		{"control in a missing directory", []string{"--control", filepath.Join(missing, "c.sock")}, "--control " + filepath.Join(missing, "c.sock") + ": directory " + missing + " does not exist"},
		{"metrics address in use", []string{"--metrics", busy}, "--metrics " + busy + ": "},
		{"metrics not an address", []string{"--metrics", "nowhere"}, "--metrics nowhere: "},
		{"record in a missing directory", []string{"--record", filepath.Join(missing, "j.jsonl")}, "--record " + filepath.Join(missing, "j.jsonl") + ": "},
		{"pidfile in a missing directory", []string{"--pidfile", filepath.Join(missing, "m.pid")}, "--pidfile " + filepath.Join(missing, "m.pid") + ": "},
		{"subreaper not a bool", []string{"--subreaper=maybe"}, `--subreaper "maybe": want true or false`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"--log-format", "json", "--control", "none", "--listen", "tcp://127.0.0.1:0"}, c.args...)
			r := runDutchmaster(t, 0, append(args, "--", "true")...)
			if r.code != exitUsage || !strings.Contains(r.stderr, "dutchmaster: "+c.want) {
				t.Fatalf("want exit 2 and %q\n%s", c.want, r)
			}
			if strings.Contains(r.stderr, `"message":"fork"`) {
				t.Fatalf("a worker was started:\n%s", r)
			}
		})
	}
}
