//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// FuzzLoadConfig: any config file is read or refused without a panic,
// every refusal names the file, and the settings read, written back as
// YAML, read to the same settings.
func FuzzLoadConfig(f *testing.F) {
	for _, seed := range []string{
		"workers: 4\nlisten:\n  - http=tcp://127.0.0.1:8080\n  - admin=unix:///run/a.sock\nready: timer:2s\n",
		"policy: canary\ncanary-soak: 30s\nenv: [A=1, B=2]\nlog-format: json\n",
		"workers: [1, 2]\n", "wrokers: 2\n", "listen: http\n", "{}", "", "---\n---\n", "~",
		"a: &a [x, *a]\n", "workers: !!binary aGk=\n", "workers: 0x10\nmax-surge: 1e3\n",
		"env:\n  - ~\n  - \"\\xff\"\n", "\t workers: 2", "workers: \"2\"\nworkers: 3\n",
	} {
		f.Add([]byte(seed))
	}
	path := filepath.Join(f.TempDir(), "dutchmaster.yaml")
	load := func(t *testing.T, data []byte) (settings, error) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s := defaults()
		return s, loadConfig(path, &s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := load(t, data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "--config "+path+": ") {
				t.Fatalf("%q: error %q does not name the file", data, err)
			}
			return
		}
		out, err := yaml.Marshal(s)
		if err != nil {
			t.Fatalf("%q: settings %+v do not marshal: %v", data, s, err)
		}
		// Compared as YAML: an absent list and an empty one are the same setting.
		back, err := load(t, out)
		again, _ := yaml.Marshal(back)
		if err != nil || string(again) != string(out) {
			t.Fatalf("%q read as %q; written back, read as %q, %v", data, out, again, err)
		}
	})
}
