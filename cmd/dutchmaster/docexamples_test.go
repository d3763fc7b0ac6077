//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster/sockets/control"
)

// docExamples are the files whose ```sh blocks TestDocExamples runs.
var docExamples = []string{"../../README.md", "../../docs/operations.md"}

// notRunHere are the example commands that cannot run on loopback in a
// test, by how they begin, with the reason. Any other command of an sh
// block is run: a new example is tested unless it is listed here.
var notRunHere = []struct{ prefix, why string }{
	{"go install ", "fetches the module from the network"},
	{"go build ", "builds the binaries the test stands in for (the test binary plays dutchmaster and the worker)"},
	{"go test ", "the test suite itself"},
	{"make demo", "runs until Ctrl-C, on the fixed port 8080"},
	{"make test", "the whole test suite"},
	{"cp ", "would change the repository (a journal dropped into scenarios/testdata)"},
}

// TestDocExamples runs the shell examples of the README and of
// docs/operations.md against a real master on loopback: `dutchmaster` and
// bin/dutchmaster are the test binary, ./server and bin/hello a test
// worker, port 8080 a free port, /tmp a temporary directory, <master pid>
// and $! the pid of the master the block started (in the background,
// waited for until its control socket answers). Each command must exit 0;
// one that runs until Ctrl-C (top, --watch, logs -f) gets SIGINT after a
// second and must exit 0 (a status watch having shown a status). A `kill -TERM` or `ctl stop`
// waits for the master's exit.
func TestDocExamples(t *testing.T) {
	self := testBinary(t)
	bin := t.TempDir()
	write := func(name, role string) {
		script := fmt.Sprintf("#!/bin/sh\nexec env %s=%s GORACE=atexit_sleep_ms=0 %s \"$@\"\n", roleEnv, role, self)
		if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write("dutchmaster", "master")
	write("server", "worker")
	ran := 0
	for _, file := range docExamples {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, block := range shBlocks(string(b)) {
			t.Run(fmt.Sprintf("%s#%d", filepath.Base(file), i+1), func(t *testing.T) {
				ran += runExampleBlock(t, bin, block)
			})
		}
	}
	if ran < 8 {
		t.Fatalf("only %d example commands ran: the sh blocks were not found", ran)
	}
}

// shBlocks returns the lines of each ```sh block.
func shBlocks(doc string) [][]string {
	var blocks [][]string
	var cur []string
	in := false
	for _, line := range strings.Split(doc, "\n") {
		switch {
		case !in && strings.TrimSpace(line) == "```sh":
			in, cur = true, nil
		case in && strings.TrimSpace(line) == "```":
			in = false
			blocks = append(blocks, cur)
		case in:
			cur = append(cur, line)
		}
	}
	return blocks
}

var (
	comment    = regexp.MustCompile(`\s+#.*$`)
	masterLine = regexp.MustCompile(`^dutchmaster\s.*\s--\s`)
	nameFlag   = regexp.MustCompile(`--name[ =](\S+)`)
)

// runExampleBlock runs one block's commands; it returns how many ran.
func runExampleBlock(t *testing.T, bin string, lines []string) int {
	tmp := t.TempDir()
	port := strings.TrimPrefix(freeTCP(t), "127.0.0.1:")
	env := append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "XDG_RUNTIME_DIR="+tmp, "DUTCHMASTER_CONTROL=")
	var master *exec.Cmd
	var masterDone chan error
	var ctlName []string
	waitMaster := func() {
		select {
		case err := <-masterDone:
			if err != nil {
				t.Fatalf("the master: %v", err)
			}
		case <-time.After(patience):
			t.Fatal("the master did not exit")
		}
		master = nil
	}
	t.Cleanup(func() {
		if master != nil {
			master.Process.Signal(syscall.SIGTERM)
			<-masterDone
		}
	})
	ran := 0
	for _, line := range lines {
		line = strings.TrimSpace(comment.ReplaceAllString(line, ""))
		if line == "" {
			continue
		}
		skip := ""
		for _, n := range notRunHere {
			if strings.HasPrefix(line, n.prefix) {
				skip = n.why
			}
		}
		if skip != "" {
			t.Logf("not run (%s): %s", skip, line)
			continue
		}
		line = strings.NewReplacer("bin/dutchmaster", "dutchmaster", "./server", "server", "bin/hello", "server",
			"0.0.0.0:8080", "127.0.0.1:"+port, "127.0.0.1:8080", "127.0.0.1:"+port, "/tmp/", tmp+"/").Replace(line)
		if master != nil {
			line = strings.ReplaceAll(strings.ReplaceAll(line, "<master pid>", fmt.Sprint(master.Process.Pid)), "$!", fmt.Sprint(master.Process.Pid))
		}
		ran++
		if masterLine.MatchString(line) {
			// Started in the background, whether the example ends with &
			// or is the master in a terminal of its own.
			args := strings.Fields(strings.TrimSuffix(line, "&"))
			master = exec.Command(filepath.Join(bin, "dutchmaster"), append([]string{"--log-format", "json"}, args[1:]...)...)
			master.Env = env
			if err := master.Start(); err != nil {
				t.Fatal(err)
			}
			masterDone = make(chan error, 1)
			go func(c *exec.Cmd) { masterDone <- c.Wait() }(master)
			ctlName = nil
			if m := nameFlag.FindStringSubmatch(line); m != nil {
				ctlName = []string{"--name", m[1]}
			}
			waitUntil(t, "the example's master answers ctl status", func() error {
				c := exec.Command(filepath.Join(bin, "dutchmaster"), append(append([]string{"ctl"}, ctlName...), "--json", "status")...)
				c.Env = env
				out, err := c.Output()
				var rep control.Reply
				if err != nil || json.Unmarshal(out, &rep) != nil || rep.Status == nil || !rep.Status.Ready {
					return fmt.Errorf("not ready: %v %s", err, out)
				}
				return nil
			})
			continue
		}
		if strings.Contains(line, "<master pid>") || strings.Contains(line, "$!") {
			t.Fatalf("%q needs a master the block did not start", line)
		}
		untilCtrlC := regexp.MustCompile(`\bctl\b.*(\btop\b|--watch|\s-f\b|--follow)`).MatchString(line)
		cmd := exec.Command("sh", "-c", line)
		cmd.Env = env
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if untilCtrlC {
			cmd = exec.Command("sh", "-c", "exec "+line)
			cmd.Env, cmd.Stdout, cmd.Stderr = env, &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.AfterFunc(time.Second, func() { cmd.Process.Signal(syscall.SIGINT) })
			// A status watch shows at least one status; a worker may have
			// written nothing for logs -f to show.
			if err := cmd.Wait(); err != nil || (out.Len() == 0 && !strings.Contains(line, " logs ")) {
				t.Fatalf("%s: %v, output %q (want exit 0 on Ctrl-C, a status shown)", line, err, out.String())
			}
		} else if err := cmd.Run(); err != nil {
			t.Fatalf("%s: %v\n%s", line, err, out.String())
		}
		t.Logf("ran: %s\n%s", line, firstLines(out.String(), 12))
		if master != nil && (strings.Contains(line, "kill -TERM") || strings.Contains(line, "ctl stop")) {
			waitMaster()
		}
	}
	if master != nil {
		master.Process.Signal(syscall.SIGTERM)
		waitMaster()
	}
	return ran
}

func firstLines(s string, n int) string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for len(out) < n && sc.Scan() {
		out = append(out, "    "+sc.Text())
	}
	return strings.Join(out, "\n")
}
