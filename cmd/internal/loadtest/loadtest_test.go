package loadtest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the run if a goroutine outlives the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("dial: %w", syscall.ECONNREFUSED), FailRefused},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), FailReset},
		{fmt.Errorf("write: %w", syscall.EPIPE), FailReset},
		{io.EOF, FailEOF},
		{io.ErrUnexpectedEOF, FailEOF},
		{fmt.Errorf("read: %w", errTimeout{}), FailTimeout},
		{errors.New("something else"), FailOther},
	} {
		if got := Classify(c.err); got != c.want {
			t.Errorf("Classify(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}

type errTimeout struct{}

func (errTimeout) Error() string   { return "i/o timeout" }
func (errTimeout) Timeout() bool   { return true }
func (errTimeout) Temporary() bool { return true }

func TestStats(t *testing.T) {
	v := make([]float64, 200)
	for i := range v {
		v[i] = float64(200 - i) // 200 .. 1
	}
	got := Stats(v)
	want := LatencyStats{N: 200, P50: 100, P99: 198, Max: 200}
	if got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
	if got := Stats(nil); got != (LatencyStats{}) {
		t.Errorf("Stats(nil) = %+v", got)
	}
}

// TestEventDur: a duration field as Go writes it, or as zerolog's Dur
// does (milliseconds, a number).
func TestEventDur(t *testing.T) {
	e := Event{Fields: map[string]any{"boot": "306.689459ms", "paused": 12.5, "name": "x"}}
	for k, want := range map[string]time.Duration{"boot": 306689459, "paused": 12500 * time.Microsecond, "name": 0, "absent": 0} {
		if got := e.Dur(k); got != want {
			t.Errorf("Dur(%q) = %v, want %v", k, got, want)
		}
	}
}

func TestServedBy(t *testing.T) {
	h := http.Header{}
	if got := servedBy(h, []byte("hello from worker 3 (pid 1234, generation 2, up 1s)\n")); got != 1234 {
		t.Errorf("from the body: %d", got)
	}
	h.Set("X-Worker-Pid", "42")
	if got := servedBy(h, []byte("hello from worker 3 (pid 1234, generation 2, up 1s)\n")); got != 42 {
		t.Errorf("from the header: %d", got)
	}
}

func TestPeerPorts(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	peers, err := PeerPorts(os.Getpid(), l.Addr().(*net.TCPAddr).Port)
	if err != nil {
		t.Fatal(err)
	}
	if client := c.LocalAddr().(*net.TCPAddr).Port; !peers[client] || len(peers) != 1 {
		t.Errorf("PeerPorts = %v, want only the client's port %d", peers, client)
	}
}

func TestStopAndWait(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	if err := StopAndWait(cmd.Process, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if ok, err := allStopped(cmd.Process.Pid); err != nil || !ok {
		t.Fatalf("not stopped: %v", err)
	}
}
