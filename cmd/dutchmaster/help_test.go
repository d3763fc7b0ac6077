//go:build linux

package main

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestHelp: --help, -h and help print the help on stdout and exit 0; it
// has its headings, every option of the table with two dashes, examples
// and the docs' names; nothing goes to stderr.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"--workers", "3", "--help", "--", "true"}} {
		r := runDutchmaster(t, 0, args...)
		if r.code != exitOK || r.stderr != "" {
			t.Fatalf("%q: want exit 0 and nothing on stderr\n%s", args, r)
		}
		out := r.stdout
		for _, want := range []string{
			"usage: dutchmaster [OPTIONS] -- COMMAND [ARG...]",
			"\nWorkers (", "\nRestarts (", "\nDraining (", "\nOperations (", "\nLogging (",
			"\nExamples:\n", "docs/configuration.md", "docs/operations.md",
			"--version", "--help",
			"  --workers N ", "  --kill-timeout DURATION ", "  --listen SPEC ", "  --metrics ADDR ", "  --config FILE ",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("%q: the help lacks %q:\n%s", args, want, out)
			}
		}
		for _, o := range options {
			if !regexp.MustCompile(`(?m)^  --` + regexp.QuoteMeta(o.name) + `( |$)`).MatchString(out) {
				t.Errorf("%q: the help does not list --%s", args, o.name)
			}
		}
		// Go's flag package would print `-workers string`.
		if strings.Contains(out, " string\n") || regexp.MustCompile(`(?m)^  -[a-z]`).MatchString(out) {
			t.Errorf("%q: an option with one dash or an untyped value:\n%s", args, out)
		}
		for i, line := range strings.Split(out, "\n") {
			if len(line) > helpWidth && !strings.HasPrefix(line, "       dutchmaster ctl") {
				t.Errorf("%q: line %d is %d wide: %q", args, i+1, len(line), line)
			}
		}
	}
}

// TestSubcommandHelp: ctl and replay print their help on stdout, exit 0.
func TestSubcommandHelp(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"ctl", "--help"}, "usage: dutchmaster ctl"},
		{[]string{"ctl", "status", "-h"}, "usage: dutchmaster ctl"},
		{[]string{"help", "ctl"}, "usage: dutchmaster ctl"},
		{[]string{"replay", "--help"}, "usage: dutchmaster replay FILE"},
		{[]string{"help", "replay"}, "usage: dutchmaster replay FILE"},
	} {
		r := runDutchmaster(t, 0, c.args...)
		if r.code != exitOK || r.stderr != "" || !strings.Contains(r.stdout, c.want) {
			t.Errorf("%q: want exit 0, %q on stdout, nothing on stderr\n%s", c.args, c.want, r)
		}
	}
}

// TestUsageErrorIsShort: a command line not understood is one line and
// the hint on stderr, exit 2, never the whole usage.
func TestUsageErrorIsShort(t *testing.T) {
	for _, c := range []struct {
		args       []string
		want, hint string
	}{
		{[]string{"--wrokers", "2", "--", "true"}, "(did you mean --workers?)", usageHint},
		{[]string{"--kill-timeout"}, "flag needs an argument", usageHint},
		{[]string{"--nothing-like-it", "--", "true"}, "not defined", usageHint},
		{[]string{"--workers", "2"}, "no worker command", usageHint},
		{[]string{"help", "nope"}, `no help on "nope"`, usageHint},
		{[]string{"replay"}, "want one journal FILE", "run 'dutchmaster replay --help' for usage"},
		{[]string{"replay", "--bogus"}, "not defined", "run 'dutchmaster replay --help' for usage"},
	} {
		r := runDutchmaster(t, 0, c.args...)
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		if r.code != exitUsage || r.stdout != "" || len(lines) != 2 || !strings.Contains(lines[0], c.want) || lines[1] != c.hint {
			t.Errorf("%q: want exit 2, %q and the hint on stderr, 2 lines\n%s", c.args, c.want, r)
		}
	}
}

// TestStartFailureIsOneLine: an option refused only when the master
// opens it (a metrics address, a journal file, a control socket another
// master holds) exits 2 with one line: not the lines of what the start
// had opened before (the listeners, the control socket).
func TestStartFailureIsOneLine(t *testing.T) {
	dir := t.TempDir()
	held := filepath.Join(dir, "held.sock")
	m := startMaster(t, "worker", nil, "--control", held)
	m.waitFor(0, "control socket listening", nil)

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--control", filepath.Join(dir, "a.sock"), "--listen", "tcp://127.0.0.1:0", "--metrics", "notanaddr", "--", "true"}, "--metrics notanaddr"},
		{[]string{"--control", filepath.Join(dir, "b.sock"), "--listen", "tcp://127.0.0.1:0", "--record", "/nonexistent/x", "--", "true"}, "--record /nonexistent/x"},
		{[]string{"--control", held, "--listen", "tcp://127.0.0.1:0", "--", "true"}, "--control " + held + ": another master"},
	} {
		r := runDutchmaster(t, 0, append([]string{"--log-format", "json"}, c.args...)...)
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		if r.code != exitUsage || len(lines) != 1 || !strings.Contains(lines[0], c.want) {
			t.Errorf("%q: want exit 2 and one line with %q\n%s", c.args, c.want, r)
		}
	}
	m.stop()
}

// TestVersionFlag: --version, -version and version print the version on
// stdout and exit 0.
func TestVersionFlag(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"-version"}, {"version"}, {"--name", "x", "--version"}} {
		r := runDutchmaster(t, 0, args...)
		if r.code != exitOK || r.stderr != "" || !regexp.MustCompile(`^dutchmaster \S+\n$`).MatchString(r.stdout) {
			t.Errorf("%q: want exit 0 and one line 'dutchmaster VERSION' on stdout\n%s", args, r)
		}
	}
}

// TestVersionStamped: the version stamped in at build time wins over the
// build info.
func TestVersionStamped(t *testing.T) {
	old := version
	defer func() { version = old }()
	version = "v9.8.7"
	if got := versionString(); got != "v9.8.7" {
		t.Fatalf("versionString() = %q, want the stamped v9.8.7", got)
	}
}

func TestNearestOption(t *testing.T) {
	for name, want := range map[string]string{
		"wrokers": "workers", "worker": "workers", "kill-timout": "kill-timeout", "lsiten": "listen",
		"verison": "version", "xyz": "", "frobnicate": "",
	} {
		if got := nearestOption(name); got != want {
			t.Errorf("nearestOption(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestVersionLinkerFlag: the release build's -ldflags -X main.version
// reaches --version (make dist builds so).
func TestVersionLinkerFlag(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	bin := filepath.Join(t.TempDir(), "dutchmaster")
	build := exec.Command(goBin, "build", "-ldflags", "-X main.version=v9.8.7-test", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	r := runBinary(t, bin, 0, "--version")
	if r.code != exitOK || r.stdout != "dutchmaster v9.8.7-test\n" {
		t.Fatalf("want 'dutchmaster v9.8.7-test'\n%s", r)
	}
}
