//go:build linux

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"syscall"
	"testing"
	"time"
)

// TestConsoleLog: a master with --log-format console writes lines a
// person reads: the time to the millisecond, the level, the message, the
// worker first among the fields, and a duration to a few digits.
func TestConsoleLog(t *testing.T) {
	self := testBinary(t)
	cmd := exec.Command(self, "--log-format", "console", "--control", "none", "--workers", "1",
		"--listen", "http=tcp://127.0.0.1:0", "--env", roleEnv+"=worker", "--", self)
	cmd.Env = append(os.Environ(), roleEnv+"=master", "GORACE=atexit_sleep_ms=0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 256)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		for range lines {
		}
		cmd.Wait()
	}()

	// 14:44:45.150 INF worker listening worker=1 boot=316ms generation=1 pid=29391 ...
	listening := regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3} INF worker listening worker=1 boot=(\S+) generation=1 pid=\d+ `)
	duration := regexp.MustCompile(`^(\d{1,3}(\.\d)?(µs|ms|s)|\d+m\d+s)$`)
	var seen []string
	deadline := time.After(patience)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("the master exited before a worker listened:\n%q", seen)
			}
			seen = append(seen, line)
			if line[0] == '{' {
				t.Fatalf("a JSON line under --log-format console: %s", line)
			}
			m := listening.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			if !duration.MatchString(m[1]) {
				t.Fatalf("boot=%s: want a duration to a few digits, in %q", m[1], line)
			}
			return
		case <-deadline:
			t.Fatalf("no 'worker listening' line of the expected shape after %s:\n%q", patience, seen)
		}
	}
}

func TestConsoleDurations(t *testing.T) {
	for in, want := range map[string]string{
		"331.423474ms": "331ms", "1.234567891s": "1.2s", "12.345s": "12.3s", "1m30.4s": "1m30s",
		"1.234567ms": "1.2ms", "12.3456µs": "12µs", "500ns": "500ns", "30s": "30s", "-1.25s": "-1.3s",
		"w3": "w3", "1": "1", "false": "false", "replaced by w4": "replaced by w4", "2s ago": "2s ago",
	} {
		if got := consoleValue(in); got != want {
			t.Errorf("consoleValue(%q) = %q, want %q", in, got, want)
		}
	}
	if got := consoleValue([]byte("true")); got != "true" {
		t.Errorf("a JSON value: %q, want true", got)
	}
}

// TestJSONLogKeepsDurations: only the console rounds; a JSON line keeps
// every digit and its microsecond timestamp.
func TestJSONLogKeepsDurations(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger("json", "info", &buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Info().Str("boot", "331.423474ms").Int("worker", 3).Msg("worker listening")
	var e map[string]any
	if err := json.Unmarshal(buf.Bytes(), &e); err != nil {
		t.Fatal(err)
	}
	if e["boot"] != "331.423474ms" {
		t.Errorf("boot = %v, want 331.423474ms", e["boot"])
	}
	if ts, _ := e["time"].(string); !regexp.MustCompile(`T\d\d:\d\d:\d\d\.\d{6}`).MatchString(ts) {
		t.Errorf("time = %q, want microseconds", ts)
	}

	buf.Reset()
	log, _ = newLogger("console", "info", &buf)
	log.Info().Str("boot", "331.423474ms").Int("worker", 3).Str("a", "b").Msg("worker listening")
	if got := buf.String(); !regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3} INF worker listening worker=3 a=b boot=331ms\n$`).MatchString(got) {
		t.Errorf("console line %q", got)
	}
}
