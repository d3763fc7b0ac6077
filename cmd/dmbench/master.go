package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// event is one JSON log line of the master.
type event struct {
	Message string
	Time    time.Time
	Fields  map[string]any
}

func (e event) str(k string) string { s, _ := e.Fields[k].(string); return s }
func (e event) num(k string) int    { f, _ := e.Fields[k].(float64); return int(f) }

// dur reads a duration field ("306.689459ms").
func (e event) dur(k string) time.Duration {
	d, _ := time.ParseDuration(e.str(k))
	return d
}

// master is a running dutchmaster with the example worker, whose JSON log
// (its stderr) is parsed as it comes. Lines that are not JSON (the
// workers' own output, which the master passes through) are kept in the
// raw log only.
type master struct {
	cmd  *exec.Cmd
	addr string

	mu     sync.Mutex
	events []event
	grew   chan struct{} // closed and replaced whenever events grows
	raw    strings.Builder
	done   chan struct{} // closed once the process has exited
	err    error
}

// startMaster runs `dutchmaster --workers N --listen 127.0.0.1:0 -- hello`
// and waits for "cluster ready".
func startMaster(bin binaries, workers int, boot, work time.Duration, patience time.Duration) (*master, error) {
	args := []string{
		"--log-format", "json",
		"--workers", fmt.Sprint(workers),
		"--listen", "http=tcp://127.0.0.1:0",
		"--env", "HELLO_BOOT_DELAY=" + boot.String(),
		"--env", "HELLO_WORK=" + work.String(),
		"--", bin.hello,
	}
	m := &master{grew: make(chan struct{}), done: make(chan struct{})}
	m.cmd = exec.Command(bin.dutchmaster, args...)
	// If dmbench dies, the master drains and stops its workers.
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	stderr, err := m.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := m.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin.dutchmaster, err)
	}
	go m.read(stderr)
	e, _, err := m.waitFor(0, "listening", nil, patience)
	if err != nil {
		m.stop(patience)
		return nil, err
	}
	m.addr = e.str("address")
	if _, _, err := m.waitFor(0, "cluster ready", nil, patience); err != nil {
		m.stop(patience)
		return nil, err
	}
	return m, nil
}

func (m *master) pid() int { return m.cmd.Process.Pid }

func (m *master) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var fields map[string]any
		m.mu.Lock()
		m.raw.WriteString(line + "\n")
		if json.Unmarshal([]byte(line), &fields) == nil {
			e := event{Fields: fields}
			e.Message, _ = fields["message"].(string)
			if ts, ok := fields["time"].(string); ok {
				e.Time, _ = time.Parse(time.RFC3339Nano, ts)
			}
			m.events = append(m.events, e)
			close(m.grew)
			m.grew = make(chan struct{})
		}
		m.mu.Unlock()
	}
	err := m.cmd.Wait()
	m.mu.Lock()
	m.err = err
	m.mu.Unlock()
	close(m.done)
}

// mark is the index the next event will have.
func (m *master) mark() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.events)
}

// snapshot returns the events logged so far.
func (m *master) snapshot() []event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]event(nil), m.events...)
}

// workerPIDs returns the pids of the workers listening now, by the log.
func (m *master) workerPIDs() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	live := map[int]int{}
	for _, e := range m.events {
		switch e.Message {
		case "worker listening":
			live[e.num("worker")] = e.num("pid")
		case "worker exited", "drain":
			delete(live, e.num("worker"))
		}
	}
	var out []int
	for _, pid := range live {
		out = append(out, pid)
	}
	return out
}

// log returns the master's stderr so far.
func (m *master) log() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.raw.String()
}

// waitFor returns the first event from index from on with the message and
// the fields given, and the index after it; an error after patience, or if
// the master exits first.
func (m *master) waitFor(from int, message string, fields map[string]any, patience time.Duration) (event, int, error) {
	deadline := time.NewTimer(patience)
	defer deadline.Stop()
	for {
		m.mu.Lock()
		for i := from; i < len(m.events); i++ {
			if e := m.events[i]; e.Message == message && matches(e, fields) {
				m.mu.Unlock()
				return e, i + 1, nil
			}
		}
		from = max(from, len(m.events))
		grew := m.grew
		m.mu.Unlock()
		select {
		case <-grew:
		case <-m.done:
			// The reader closes done after its last event: look once more.
			m.mu.Lock()
			n := len(m.events)
			m.mu.Unlock()
			if from >= n {
				return event{}, from, fmt.Errorf("master exited (%v) before logging %q %v", m.err, message, fields)
			}
		case <-deadline.C:
			return event{}, from, fmt.Errorf("master logged no %q %v within %s", message, fields, patience)
		}
	}
}

func matches(e event, fields map[string]any) bool {
	for k, want := range fields {
		got := e.Fields[k]
		if f, ok := got.(float64); ok {
			got = int(f)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return false
		}
	}
	return true
}

func (m *master) signal(sig syscall.Signal) error { return m.cmd.Process.Signal(sig) }

// stop asks the master for a graceful stop and waits for it; SIGKILL (of
// the master, by pid; its workers die with it) after patience.
func (m *master) stop(patience time.Duration) error {
	select {
	case <-m.done:
		return nil
	default:
	}
	if err := m.signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-m.done:
		return nil
	case <-time.After(patience):
		m.cmd.Process.Kill()
		<-m.done
		return fmt.Errorf("master (pid %d) still running %s after SIGTERM: killed", m.pid(), patience)
	}
}
