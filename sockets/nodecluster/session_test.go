package nodecluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/sockets"
)

// fakeWire records what a session writes: each line as JSON, and whether a
// descriptor went with it.
type fakeWire struct {
	mu    sync.Mutex
	lines []string
	fds   []*os.File
	fail  error
}

func (w *fakeWire) Send(v any) error { return w.SendWithFD(v, nil) }

func (w *fakeWire) SendWithFD(v any, f *os.File) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fail != nil {
		return w.fail
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.lines = append(w.lines, string(b))
	w.fds = append(w.fds, f)
	return nil
}

// take returns what was written since the last take.
func (w *fakeWire) take() (lines []string, fds []*os.File) {
	w.mu.Lock()
	defer w.mu.Unlock()
	lines, fds = w.lines, w.fds
	w.lines, w.fds = nil, nil
	return lines, fds
}

// expect checks the lines written since the last call; a line
// prefixed "+fd " went with a descriptor.
func (w *fakeWire) expect(t *testing.T, want ...string) []*os.File {
	t.Helper()
	lines, fds := w.take()
	var got []string
	for i, l := range lines {
		if fds[i] != nil {
			l = "+fd " + l
		}
		got = append(got, l)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("written:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	return fds
}

func receive(t *testing.T, s *Session, line string, want Kind) Event {
	t.Helper()
	ev := s.Receive([]byte(line))
	if ev.Kind != want {
		t.Fatalf("Receive(%s): %v %+v, want %v", line, ev.Kind, ev, want)
	}
	if ev.Err != nil {
		t.Fatalf("Receive(%s): %v", line, ev.Err)
	}
	return ev
}

// TestSessionObservedExchange replays the exchange observed between a
// primary and Node v20 (node-cluster-protocol.md), from online to the
// worker's own disconnect.
func TestSessionObservedExchange(t *testing.T) {
	w := &fakeWire{}
	s := NewSession(w, newRegistry(t))
	if s.Online() {
		t.Fatal("online before the worker said so")
	}
	receive(t, s, `{"cmd":"NODE_CLUSTER","act":"online","seq":0}`, KindOnline)
	if !s.Online() {
		t.Fatal("not online after online")
	}
	ev := receive(t, s, `{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":"127.0.0.1","port":0,"addressType":4,"backlog":0,"seq":1}`, KindServed)
	if ev.Key != "127.0.0.1:0:4:undefined:0" || ev.Share.Errno != 0 || !ev.Share.Bound {
		t.Fatalf("served %+v", ev)
	}
	fds := w.expect(t, `+fd {"cmd":"NODE_HANDLE","type":"net.Native","msg":{"cmd":"NODE_CLUSTER","errno":0,"key":"127.0.0.1:0:4:undefined:0","ack":1,"data":null,"seq":0}}`)
	if fds[0] != ev.Share.File {
		t.Fatal("the descriptor sent is not the shared socket")
	}
	receive(t, s, `{"cmd":"NODE_HANDLE_ACK"}`, KindInternal)
	receive(t, s, `{"cmd":"NODE_CLUSTER","act":"listening","index":0,"data":null,"address":"127.0.0.1","port":41000,"addressType":4,"backlog":0,"seq":2}`, KindListening)
	receive(t, s, `{"cmd":"NODE_CLUSTER","act":"listening","index":1,"data":null,"address":"127.0.0.1","port":41001,"addressType":4,"backlog":0,"seq":3}`, KindInternal)
	ev = receive(t, s, `{"event":"request-restart"}`, KindMessage)
	if string(ev.Line) != `{"event":"request-restart"}` {
		t.Fatalf("user message passed on as %q", ev.Line)
	}
	receive(t, s, `"ready"`, KindMessage)
	// A Node worker's heartbeat for the master's watchdog is a user message.
	if ev := receive(t, s, `{"event":"heartbeat"}`, KindMessage); string(ev.Line) != `{"event":"heartbeat"}` {
		t.Fatalf("heartbeat passed on as %q", ev.Line)
	}
	receive(t, s, `not json`, KindMessage)
	receive(t, s, `{"cmd":"NODE_SOMETHING_NEW"}`, KindInternal)
	w.expect(t)

	if err := s.Disconnect(); err != nil {
		t.Fatal(err)
	}
	if err := s.Disconnect(); err != nil { // a second disconnect would make Node throw
		t.Fatal(err)
	}
	w.expect(t, `{"cmd":"NODE_CLUSTER","act":"disconnect","seq":1}`)
	ev = receive(t, s, `{"cmd":"NODE_CLUSTER","act":"close","key":"127.0.0.1:0:4:undefined:0","seq":4}`, KindInternal)
	if ev.Act != ActClose || ev.Key != "127.0.0.1:0:4:undefined:0" {
		t.Errorf("close: %+v", ev)
	}
	// A query after the disconnect is ignored, as Node's primary does.
	receive(t, s, `{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":"127.0.0.1","port":0,"addressType":4,"seq":5}`, KindInternal)
	receive(t, s, `{"cmd":"NODE_CLUSTER","act":"exitedAfterDisconnect","seq":6}`, KindExitedAfterDisconnect)
	w.expect(t, `{"cmd":"NODE_CLUSTER","ack":6,"seq":2}`)
}

// TestSessionQueuesBehindHandle: after a handle, everything waits for its
// acknowledgement, in order; handle answers go out at once.
func TestSessionQueuesBehindHandle(t *testing.T) {
	w := &fakeWire{}
	s := NewSession(w, newRegistry(t))
	receive(t, s, `{"cmd":"NODE_CLUSTER","act":"online","seq":0}`, KindOnline)
	receive(t, s, `{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":"127.0.0.1","port":0,"addressType":4,"seq":1}`, KindServed)
	receive(t, s, `{"cmd":"NODE_CLUSTER","act":"queryServer","index":1,"data":null,"address":"127.0.0.1","port":0,"addressType":4,"seq":2}`, KindServed)
	receive(t, s, `{"cmd":"NODE_CLUSTER","act":"exitedAfterDisconnect","seq":3}`, KindExitedAfterDisconnect)
	// The worker sends a handle of its own meanwhile: acknowledged at once.
	ev := receive(t, s, `{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"event":"hello"}}`, KindMessage)
	if string(ev.Line) != `{"event":"hello"}` {
		t.Errorf("the message of the worker's handle: %q", ev.Line)
	}
	w.expect(t,
		`+fd {"cmd":"NODE_HANDLE","type":"net.Native","msg":{"cmd":"NODE_CLUSTER","errno":0,"key":"127.0.0.1:0:4:undefined:0","ack":1,"data":null,"seq":0}}`,
		`{"cmd":"NODE_HANDLE_ACK"}`,
	)
	if err := s.Disconnect(); err != nil {
		t.Fatal(err)
	}
	w.expect(t)
	receive(t, s, `{"cmd":"NODE_HANDLE_ACK"}`, KindInternal)
	w.expect(t, `+fd {"cmd":"NODE_HANDLE","type":"net.Native","msg":{"cmd":"NODE_CLUSTER","errno":0,"key":"127.0.0.1:0:4:undefined:1","ack":2,"data":null,"seq":1}}`)
	receive(t, s, `{"cmd":"NODE_HANDLE_ACK"}`, KindInternal)
	w.expect(t,
		`{"cmd":"NODE_CLUSTER","ack":3,"seq":2}`,
		`{"cmd":"NODE_CLUSTER","act":"disconnect","seq":3}`,
	)
	receive(t, s, `{"cmd":"NODE_HANDLE_ACK"}`, KindInternal) // stray: nothing waits
	w.expect(t)
}

// TestSessionResendsRefusedHandle: a NACK sends the handle again, up to
// MaxHandleRetransmissions times; then it is given up and the queue moves.
func TestSessionResendsRefusedHandle(t *testing.T) {
	w := &fakeWire{}
	s := NewSession(w, newRegistry(t))
	ev := receive(t, s, `{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":"127.0.0.1","port":0,"addressType":4,"seq":1}`, KindServed)
	handle := `+fd {"cmd":"NODE_HANDLE","type":"net.Native","msg":{"cmd":"NODE_CLUSTER","errno":0,"key":"127.0.0.1:0:4:undefined:0","ack":1,"data":null,"seq":0}}`
	w.expect(t, handle)
	receive(t, s, `{"cmd":"NODE_CLUSTER","act":"online","seq":0}`, KindOnline)
	if err := s.Disconnect(); err != nil {
		t.Fatal(err)
	}
	for i := range MaxHandleRetransmissions {
		receive(t, s, `{"cmd":"NODE_HANDLE_NACK"}`, KindInternal)
		if fds := w.expect(t, handle); fds[0] != ev.Share.File {
			t.Fatalf("resend %d without the socket", i+1)
		}
	}
	lost := receive(t, s, `{"cmd":"NODE_HANDLE_NACK"}`, KindHandleLost)
	if lost.Key != "127.0.0.1:0:4:undefined:0" {
		t.Errorf("lost handle key %q", lost.Key)
	}
	w.expect(t, `{"cmd":"NODE_CLUSTER","act":"disconnect","seq":1}`)
}

// TestSessionBindFailure: the errno goes back without a handle, so the
// worker's listen() fails with it (EADDRINUSE here).
func TestSessionBindFailure(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	port := held.Addr().(*net.TCPAddr).Port
	w := &fakeWire{}
	s := NewSession(w, newRegistry(t))
	ev := receive(t, s, fmt.Sprintf(`{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":"127.0.0.1","port":%d,"addressType":4,"seq":7}`, port), KindServed)
	if ev.Share.Errno != -98 || ev.Share.Err == nil {
		t.Fatalf("served %+v, want EADDRINUSE", ev.Share)
	}
	w.expect(t, fmt.Sprintf(`{"cmd":"NODE_CLUSTER","errno":-98,"key":"127.0.0.1:%d:4:undefined:0","ack":7,"data":null,"seq":0}`, port))
	// A query Node's primary cannot make sense of: EINVAL.
	ev = receive(t, s, `{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":{"x":1},"address":null,"port":80,"addressType":9,"seq":8}`, KindServed)
	if ev.Share.Errno != UVEINVAL {
		t.Fatalf("served %+v, want EINVAL", ev.Share)
	}
	w.expect(t, `{"cmd":"NODE_CLUSTER","errno":-22,"key":"null:80:9:undefined:0","ack":8,"data":{"x":1},"seq":1}`)
}

// TestSessionBrokenChannel: once a send fails, nothing more is sent and
// every send reports it (the runtime then drains with the stop signal).
func TestSessionBrokenChannel(t *testing.T) {
	w := &fakeWire{fail: errors.New("ipc send: broken pipe")}
	s := NewSession(w, newRegistry(t))
	ev := s.Receive([]byte(`{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":"127.0.0.1","port":0,"addressType":4,"seq":1}`))
	if ev.Kind != KindServed || ev.Err == nil {
		t.Fatalf("got %+v, want the send error", ev)
	}
	w.fail = nil
	if err := s.Disconnect(); err == nil {
		t.Fatal("Disconnect on a broken session succeeded")
	}
	w.expect(t)
}

// TestSessionConcurrentDisconnect: Disconnect comes from the runtime's
// goroutines while the reader receives; under -race.
func TestSessionConcurrentDisconnect(t *testing.T) {
	w := &fakeWire{}
	s := NewSession(w, newRegistry(t))
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 200 {
			s.Receive([]byte(fmt.Sprintf(`{"cmd":"NODE_CLUSTER","act":"listening","seq":%d}`, i)))
			s.Receive([]byte(`{"event":"x"}`))
		}
	})
	wg.Go(func() { _ = s.Disconnect(); _ = s.Online() })
	wg.Wait()
	lines, _ := w.take()
	if len(lines) != 1 {
		t.Fatalf("wrote %q, want one disconnect", lines)
	}
}

// TestSessionOverRealChannel: through a real IPC channel, the socket
// arrives as SCM_RIGHTS with the first byte of its NODE_HANDLE line and
// nothing else in that read, as Node's reader requires.
func TestSessionOverRealChannel(t *testing.T) {
	ch, child, err := sockets.NewChannel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	defer child.Close()
	reg := newRegistry(t)
	s := NewSession(ch, reg)
	ev := receive(t, s, `{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":"127.0.0.1","port":0,"addressType":4,"seq":1}`, KindServed)

	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*4))
	if err := unix.SetsockoptTimeval(int(child.Fd()), unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 10}); err != nil {
		t.Fatal(err)
	}
	n, oobn, flags, _, err := unix.Recvmsg(int(child.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if flags&unix.MSG_CTRUNC != 0 {
		t.Fatal("control data truncated")
	}
	line := string(buf[:n])
	if !strings.HasPrefix(line, `{"cmd":"NODE_HANDLE","type":"net.Native",`) || !strings.HasSuffix(line, "}\n") || strings.Count(line, "\n") != 1 {
		t.Fatalf("read %q, want exactly the NODE_HANDLE line", line)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("control messages %v, %v", msgs, err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("rights %v, %v: want one descriptor", fds, err)
	}
	got := os.NewFile(uintptr(fds[0]), "received")
	defer got.Close()
	want, _ := boundAddr(ev.Share.File)
	if addr, err := boundAddr(got); err != nil || addr != want {
		t.Fatalf("received a socket bound to %v (%v), want %v", addr, err, want)
	}

	// Later messages wait for the acknowledgement, then come as plain lines.
	if err := s.Disconnect(); err != nil {
		t.Fatal(err)
	}
	receive(t, s, `{"cmd":"NODE_HANDLE_ACK"}`, KindInternal)
	n, oobn, _, _, err = unix.Recvmsg(int(child.Fd()), buf, oob, 0)
	if err != nil || oobn != 0 || string(buf[:n]) != `{"cmd":"NODE_CLUSTER","act":"disconnect","seq":1}`+"\n" {
		t.Fatalf("read %q (%d bytes of control data), %v; want the disconnect alone", buf[:n], oobn, err)
	}
}
