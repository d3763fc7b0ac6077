//go:build linux

package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestRecordReplay: a master run with --record (a start, a rolling
// restart, a crash and its replacement, a scale up by SIGTTIN, a stop)
// leaves a journal that `dutchmaster replay` replays to the same
// decisions (exit 0); the same journal with one decision changed, and with
// one input changed, is rejected (exit 1) with the first difference and
// its line.
func TestRecordReplay(t *testing.T) {
	journal := filepath.Join(t.TempDir(), "run.jsonl")
	m := startMaster(t, "worker", nil, "--name", "web", "--record", journal, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	_, next := m.waitFor(0, "cluster ready", nil)
	m.signal(syscall.SIGUSR2)
	_, next = m.waitFor(next, "restart complete", nil)
	_, _ = get(addr, "/crash")
	_, next = m.waitFor(next, "worker exited", map[string]any{"reason": "code 1"})
	_, next = m.waitFor(next, "worker listening", nil)
	m.signal(syscall.SIGTTIN)
	m.waitFor(next, "worker listening", map[string]any{"slot": 2})
	m.stop()

	data, err := os.ReadFile(journal)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(journal)
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("journal mode %s, want 0640", fi.Mode())
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if !strings.HasPrefix(lines[0], `{"journal":"dutchmaster","version":3,"name":"web",`) {
		t.Fatalf("header: %s", lines[0])
	}
	for _, want := range []string{`"type":"Start","target":2`, `"type":"RestartRequested","source":"SIGUSR2","target":2`,
		`"type":"RolloutEnded","outcome":"complete"`, `"kind":"code","code":1`, `"type":"ScaleBy","delta":1,"source":"SIGTTIN"`,
		`"type":"StopRequested","source":"SIGTERM"`, `"type":"Stopped"`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("journal lacks %s", want)
		}
	}

	r := runDutchmaster(t, 0, "replay", journal)
	if r.code != 0 || !strings.HasPrefix(r.stdout, journal+": the same decisions: ") {
		t.Fatalf("replay: %s", r)
	}

	edit := func(name, from, to string) (path string, line int) {
		for i, l := range lines {
			if strings.Contains(l, from) {
				cp := append([]string(nil), lines...)
				cp[i] = strings.Replace(l, from, to, 1)
				path = filepath.Join(t.TempDir(), name)
				if err := os.WriteFile(path, []byte(strings.Join(cp, "\n")+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return path, i + 1
			}
		}
		t.Fatalf("journal has no %s", from)
		return "", 0
	}
	// A decision changed: the replacement of slot 0 said to go to slot 1.
	path, line := edit("decision.jsonl", `"slot":0,"generation":2,"replacement":true`, `"slot":1,"generation":2,"replacement":true`)
	r = runDutchmaster(t, 0, "replay", path)
	want := regexp.MustCompile(`journal line ` + itoa(line) + ` \(at [^)]+, input \{"type":"RestartRequested"[^\n]*\): decision \d+ differs\n` +
		`  recorded: \{"type":"Fork","worker":3,"slot":1,"generation":2,"replacement":true\}\n` +
		`  replayed: \{"type":"Fork","worker":3,"slot":0,"generation":2,"replacement":true\}`)
	if r.code != 1 || !want.MatchString(r.stdout) {
		t.Fatalf("replay of an edited decision: want the difference at line %d\n%s", line, r)
	}
	// An input changed: the crash reported as a clean exit.
	path, line = edit("input.jsonl", `"kind":"code","code":1`, `"kind":"clean"`)
	r = runDutchmaster(t, 0, "replay", path)
	if r.code != 1 || !strings.Contains(r.stdout, "journal line "+itoa(line)+" ") || !strings.Contains(r.stdout, `"reason","string":"code 1"`) {
		t.Fatalf("replay of an edited input: want the difference at line %d\n%s", line, r)
	}
	// Not a journal at all.
	notJournal := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(notJournal, []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = runDutchmaster(t, 0, "replay", notJournal)
	if r.code != 2 || !strings.Contains(r.stderr, "not a dutchmaster journal") {
		t.Fatalf("replay of a file that is no journal: %s", r)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
