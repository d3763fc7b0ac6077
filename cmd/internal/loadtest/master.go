package loadtest

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

// Event is one JSON log line of the master.
type Event struct {
	Message string
	Time    time.Time
	Fields  map[string]any
}

// Str is a text field, "" if absent.
func (e Event) Str(k string) string { s, _ := e.Fields[k].(string); return s }

// Num is a numeric field, 0 if absent.
func (e Event) Num(k string) int { f, _ := e.Fields[k].(float64); return int(f) }

// Dur reads a duration field: Go's text ("306.689459ms"), or a number of
// milliseconds (zerolog's Dur, its default unit); 0 if absent.
func (e Event) Dur(k string) time.Duration {
	if ms, ok := e.Fields[k].(float64); ok {
		return time.Duration(ms * float64(time.Millisecond))
	}
	d, _ := time.ParseDuration(e.Str(k))
	return d
}

// Master is a running dutchmaster whose JSON log (its stderr) is parsed as
// it comes. Lines that are not JSON (the workers' own output, which the
// master passes through) are kept in the raw log only.
type Master struct {
	Cmd  *exec.Cmd
	Addr string // the first listener's address
	// MetricsAddr is where the master serves /metrics (host:port), if it
	// was started with --metrics; "" otherwise.
	MetricsAddr string

	mu     sync.Mutex
	events []Event
	grew   chan struct{} // closed and replaced whenever events grows
	raw    strings.Builder
	done   chan struct{} // closed once the process has exited
	err    error
}

// StartMaster runs `dutchmaster --log-format json ARGS` and waits, at most
// patience each, for its first "listening", for "cluster ready" and, if
// ARGS has --metrics, for "metrics listening". If the caller dies, the
// master gets SIGTERM (a graceful stop).
func StartMaster(binary string, args []string, patience time.Duration) (*Master, error) {
	cmd := exec.Command(binary, append([]string{"--log-format", "json"}, args...)...)
	// The parent-death signal follows the thread that forks; Go ends
	// threads only when a locked goroutine exits, and none does here.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	m, err := Launch(cmd)
	if err != nil {
		return nil, err
	}
	e, _, err := m.WaitFor(0, "listening", nil, patience)
	if err != nil {
		m.Stop(patience)
		return nil, err
	}
	m.Addr = e.Str("address")
	if _, _, err := m.WaitFor(0, "cluster ready", nil, patience); err != nil {
		m.Stop(patience)
		return nil, err
	}
	for _, a := range args {
		if a == "--" {
			break // the worker's own arguments
		}
		if a == "--metrics" || strings.HasPrefix(a, "--metrics=") {
			e, _, err := m.WaitFor(0, "metrics listening", nil, patience)
			if err != nil {
				m.Stop(patience)
				return nil, err
			}
			m.MetricsAddr = e.Str("address")
			break
		}
	}
	return m, nil
}

// Launch starts cmd, a master whose stderr is its JSON log, and follows
// the log from then on; it waits for nothing. cmd.Stderr must be unset.
func Launch(cmd *exec.Cmd) (*Master, error) {
	m := &Master{Cmd: cmd, grew: make(chan struct{}), done: make(chan struct{})}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	go m.read(stderr)
	return m, nil
}

// PID is the master's pid.
func (m *Master) PID() int { return m.Cmd.Process.Pid }

// Done is closed once the master has exited.
func (m *Master) Done() <-chan struct{} { return m.done }

// Err is the master's exit error, once Done is closed.
func (m *Master) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

func (m *Master) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		m.add(sc.Text())
	}
	if sc.Err() != nil {
		// A line beyond the buffer: keep draining, or the master blocks
		// on its stderr.
		io.Copy(io.Discard, r)
	}
	err := m.Cmd.Wait()
	m.mu.Lock()
	m.err = err
	m.mu.Unlock()
	close(m.done)
}

func (m *Master) add(line string) {
	var fields map[string]any
	m.mu.Lock()
	defer m.mu.Unlock()
	m.raw.WriteString(line + "\n")
	if json.Unmarshal([]byte(line), &fields) != nil {
		return
	}
	e := Event{Fields: fields}
	e.Message, _ = fields["message"].(string)
	if ts, ok := fields["time"].(string); ok {
		e.Time, _ = time.Parse(time.RFC3339Nano, ts)
	}
	m.events = append(m.events, e)
	close(m.grew)
	m.grew = make(chan struct{})
}

// Mark is the index the next event will have.
func (m *Master) Mark() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.events)
}

// Snapshot returns the events logged so far.
func (m *Master) Snapshot() []Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Event(nil), m.events...)
}

// Since returns the events from index from on, and the index after them.
func (m *Master) Since(from int) ([]Event, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	from = min(from, len(m.events))
	return append([]Event(nil), m.events[from:]...), len(m.events)
}

// Grew returns a channel closed at the next event.
func (m *Master) Grew() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.grew
}

// WorkerPIDs returns the pids of the workers listening now, by the log.
func (m *Master) WorkerPIDs() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	live := map[int]int{}
	for _, e := range m.events {
		switch e.Message {
		case "worker listening":
			live[e.Num("worker")] = e.Num("pid")
		case "worker exited", "drain":
			delete(live, e.Num("worker"))
		}
	}
	var out []int
	for _, pid := range live {
		out = append(out, pid)
	}
	return out
}

// Log returns the master's stderr so far.
func (m *Master) Log() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.raw.String()
}

// WaitFor returns the first event from index from on with the message and
// the fields given, and the index after it; an error after patience, or if
// the master exits first.
func (m *Master) WaitFor(from int, message string, fields map[string]any, patience time.Duration) (Event, int, error) {
	deadline := time.NewTimer(patience)
	defer deadline.Stop()
	for {
		m.mu.Lock()
		for i := from; i < len(m.events); i++ {
			if e := m.events[i]; e.Message == message && Matches(e, fields) {
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
				return Event{}, from, fmt.Errorf("master exited (%v) before logging %q %v", m.Err(), message, fields)
			}
		case <-deadline.C:
			return Event{}, from, fmt.Errorf("master logged no %q %v within %s", message, fields, patience)
		}
	}
}

// Matches reports whether e has the fields given (numbers compared as ints).
func Matches(e Event, fields map[string]any) bool {
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

// Signal sends sig to the master (through a pidfd: never a reused pid).
func (m *Master) Signal(sig syscall.Signal) error { return m.Cmd.Process.Signal(sig) }

// Stop asks the master for a graceful stop and waits for it; SIGKILL (of
// the master, by pid; its workers die with it) after patience.
func (m *Master) Stop(patience time.Duration) error {
	select {
	case <-m.done:
		return nil
	default:
	}
	if err := m.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-m.done:
		return nil
	case <-time.After(patience):
		m.Cmd.Process.Kill()
		<-m.done
		return fmt.Errorf("master (pid %d) still running %s after SIGTERM: killed", m.PID(), patience)
	}
}
