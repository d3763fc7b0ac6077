package nodecluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/sockets"
	"github.com/dutchmaster/dutchmaster/sockets/reuseport"
	"github.com/dutchmaster/dutchmaster/sockets/testproc"
	"github.com/dutchmaster/dutchmaster/sockets/wire"
)

// handoverTimeout bounds every wait of these tests.
const handoverTimeout = 30 * time.Second

// execCopy is what the exec leaves the new image while the old image's
// objects still hold the originals: a duplicate of each descriptor, the
// state (through JSON) naming the duplicates. The test closes the
// originals as the exec would (or lets them be), the copies live on.
func execCopy(t *testing.T, st RegistryState, fds []int) RegistryState {
	t.Helper()
	dup := testproc.DupFDs(t, fds)
	back := testproc.ThroughJSON(t, st)
	remap := func(fd *int) {
		nfd, ok := dup[*fd]
		if !ok {
			t.Fatalf("descriptor %d of the state was not handed over (%v)", *fd, fds)
		}
		*fd = nfd
	}
	n := 0
	for i := range back.Handles {
		hs := &back.Handles[i]
		if hs.FD >= 0 {
			remap(&hs.FD)
			n++
		}
		if g := hs.Group; g != nil {
			for _, fd := range []*int{&g.Program, &g.SocketArray, &g.EligibleMap, &g.StateMap} {
				remap(fd)
			}
			for slot, fd := range g.Sockets {
				remap(&fd)
				g.Sockets[slot] = fd
			}
			n += reuseport.Descriptors + len(g.Sockets)
		}
	}
	if n != len(fds) {
		t.Fatalf("%d descriptors handed over, the state names %d", len(fds), n)
	}
	return back
}

// inode identifies a socket across descriptors.
func inode(t *testing.T, f *os.File) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestRegistryHandoverEveryKind: every kind of server a registry holds
// (a TCP, a UDP and a unix socket it bound, a --listen listener by port
// and by descriptor) is, after the handover, the same socket for the next
// query, with its data and where; a --listen listener made blocking by
// its adoption is non-blocking again; Close closes what the registry
// bound and removes its unix socket's file, and leaves the listener open.
func TestRegistryHandoverEveryKind(t *testing.T) {
	web := mustBind(t, "web=tcp://127.0.0.1:0")
	old := newRegistry(t, web)
	port := web.Addr().(*net.TCPAddr).Port
	path := filepath.Join(t.TempDir(), "app.sock")
	tcp := tcpQuery("127.0.0.1", 0)
	tcp.Data = json.RawMessage(`{"k":1}`)
	queries := []Query{
		tcp,
		{Key: "127.0.0.1:0:udp4:-1:0", Network: "udp", Address: "127.0.0.1", FD: -1, Flags: FlagReuseAddr},
		{Key: path + ":-1:-1:undefined:0", Network: "unix", Address: path, Port: -1, FD: -1},
		tcpQuery("", port),
		{Key: "fd3", Network: "tcp", FD: 3},
	}
	before := map[string]Share{}
	inodes := map[string]uint64{}
	for _, q := range queries {
		before[q.Key] = mustShare(t, old, q)
		inodes[q.Key] = inode(t, before[q.Key].File)
	}
	st, fds, err := old.Handover()
	if err != nil {
		t.Fatal(err)
	}
	if len(fds) != 3 || len(st.Handles) != 5 || st.Balance != "shared" {
		t.Fatalf("handed over %d descriptors, state %+v: want the 3 sockets the registry bound, 5 handles", len(fds), st)
	}
	st = execCopy(t, st, fds)

	// The new image adopts the listener, in blocking mode (sockets.Adopt).
	webFD, err := unix.FcntlInt(web.File().Fd(), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		t.Fatal(err)
	}
	web2, err := sockets.Adopt(webFD, web.Spec())
	if err != nil {
		t.Fatal(err)
	}
	defer web2.Close()
	r, err := AdoptRegistry([]*sockets.Listener{web2}, nil, Balancing{}, st)
	if err != nil {
		t.Fatalf("AdoptRegistry: %v", err)
	}
	if fl, err := unix.FcntlInt(web2.File().Fd(), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK == 0 {
		t.Errorf("the adopted --listen listener: flags %#x, %v; want O_NONBLOCK again", fl, err)
	}
	adopted := map[string]int{}
	for _, hs := range st.Handles {
		adopted[hs.Key] = hs.FD
	}
	for _, q := range queries {
		q.Data = nil
		sh := mustShare(t, r, q)
		was := before[q.Key]
		if inode(t, sh.File) != inodes[q.Key] || sh.Bound || sh.Where != was.Where || sh.Listener != was.Listener || sh.Type != was.Type || string(sh.Data) != string(was.Data) {
			t.Errorf("%s after the handover: %+v, want the socket it had (%+v)", q.Key, sh, was)
		}
		if fl, err := unix.FcntlInt(sh.File.Fd(), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK == 0 {
			t.Errorf("%s: flags %#x, %v; want O_NONBLOCK", q.Key, fl, err)
		}
	}
	if r.Len() != 5 {
		t.Errorf("Len() = %d, want 5", r.Len())
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	for key, fd := range adopted {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); fd >= 0 && err != unix.EBADF {
			t.Errorf("%s: the adopted descriptor %d is still open after Close (%v)", key, fd, err)
		}
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Close left the unix socket's file: %v", err)
	}
	if c, err := net.Dial("tcp", web2.Addr().String()); err != nil {
		t.Errorf("the --listen listener was closed with the registry: %v", err)
	} else {
		c.Close()
	}
}

// TestAdoptRegistryRefuses: a state that does not fit the new image, or
// whose descriptors are mixed up, is refused, and its descriptors are
// closed.
func TestAdoptRegistryRefuses(t *testing.T) {
	web := mustBind(t, "web=tcp://127.0.0.1:0")
	old := newRegistry(t, web)
	mustShare(t, old, tcpQuery("127.0.0.1", 0))
	mustShare(t, old, Query{Key: "udp", Network: "udp", Address: "127.0.0.1", FD: -1})
	mustShare(t, old, Query{Key: "fd3", Network: "tcp", FD: 3})
	for _, tc := range []struct {
		name      string
		listeners []*sockets.Listener
		b         Balancing
		change    func(*RegistryState)
		want      string
	}{
		{"other balance", []*sockets.Listener{web}, Balancing{Mode: Kernel}, nil, "handed over under shared balance, adopted under kernel"},
		{"no such listener", nil, Balancing{}, nil, `no --listen listener "web"`},
		{"descriptors swapped", []*sockets.Listener{web}, Balancing{}, func(st *RegistryState) {
			st.Handles[0].FD, st.Handles[2].FD = st.Handles[2].FD, st.Handles[0].FD
		}, "not net.Native"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := testproc.OpenFDs(t)
			st, fds, err := old.Handover()
			if err != nil {
				t.Fatal(err)
			}
			st = execCopy(t, st, fds)
			if tc.change != nil {
				tc.change(&st)
			}
			r, err := AdoptRegistry(tc.listeners, nil, tc.b, st)
			if err == nil {
				r.Close()
				t.Fatal("adopted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to say %q", err, tc.want)
			}
			if after := testproc.OpenFDs(t); after != before {
				t.Errorf("%d descriptors open after the refusal, %d before the handover: the copies were not all closed", after, before)
			}
		})
	}
}

// TestRegistryHandoverRefusesRoundRobin: a registry with a round-robin
// accept loop is not handed over.
func TestRegistryHandoverRefusesRoundRobin(t *testing.T) {
	reg := rrRegistry(t)
	if _, _, err := reg.Handover(); err != nil {
		t.Fatalf("Handover with no accept loop yet: %v", err)
	}
	w := newFakeWorker(t, reg, 1, true, true)
	defer w.end()
	w.query(t)
	_, fds, err := reg.Handover()
	if err == nil || !strings.Contains(err.Error(), "round-robin is not built") || fds != nil {
		t.Fatalf("Handover with an accept loop: %v, %v", fds, err)
	}
}

// TestSessionHandoverRefusesWhileBusy: a session between a message and
// its answer is not handed over (ErrBusy) until the answer came.
func TestSessionHandoverRefusesWhileBusy(t *testing.T) {
	w := &fakeWire{}
	s := NewSession(w, newRegistry(t))
	receive(t, s, `{"cmd":"NODE_CLUSTER","act":"online","seq":0}`, KindOnline)
	receive(t, s, `{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":"127.0.0.1","port":0,"addressType":4,"seq":1}`, KindServed)
	if _, err := s.Handover(); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "NODE_HANDLE_ACK") {
		t.Fatalf("Handover with a handle unacknowledged: %v", err)
	}
	receive(t, s, `{"cmd":"NODE_HANDLE_ACK"}`, KindInternal)
	receive(t, s, `{"cmd":"NODE_CLUSTER","act":"listening","seq":2}`, KindListening)
	if _, err := s.askMetrics(7); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Handover(); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "metrics") {
		t.Fatalf("Handover with a metrics request unanswered: %v", err)
	}
	receive(t, s, fmt.Sprintf(`{"type":%q,"requestId":7,"metrics":[]}`, MetricsResponse), KindInternal)
	st, err := s.Handover()
	if err != nil {
		t.Fatal(err)
	}
	want := SessionState{Online: true, Listening: true, Seq: 1, SchedNone: true, Keys: []string{"127.0.0.1:0:4:undefined:0"}}
	if fmt.Sprint(st) != fmt.Sprint(want) {
		t.Errorf("state %+v, want %+v", st, want)
	}
}

// TestAdoptedSessionGoesOn: an adopted session numbers its messages on,
// and one that had sent its disconnect, or whose channel had broken, does
// not send it again.
func TestAdoptedSessionGoesOn(t *testing.T) {
	w := &fakeWire{}
	s := AdoptSession(w, newRegistry(t), Worker{SchedNone: true}, SessionState{Online: true, Listening: true, Seq: 5})
	if !s.Online() {
		t.Error("adopted online session not online")
	}
	if err := s.Disconnect(); err != nil {
		t.Fatal(err)
	}
	w.expect(t, `{"cmd":"NODE_CLUSTER","act":"disconnect","seq":5}`)
	again := AdoptSession(w, newRegistry(t), Worker{}, SessionState{Online: true, Disconnecting: true, Seq: 6})
	if err := again.Disconnect(); err != nil {
		t.Fatal(err)
	}
	broken := AdoptSession(w, newRegistry(t), Worker{}, SessionState{Online: true, Seq: 6, Broken: "ipc send: broken pipe"})
	if err := broken.Disconnect(); err == nil || !strings.Contains(err.Error(), "broken pipe") {
		t.Errorf("Disconnect of a session broken before the upgrade: %v", err)
	}
	w.expect(t)
}

// fdChannel is a worker's IPC channel as the new image rebuilds it on the
// descriptor it inherited: reads and writes through a duplicate of the
// master's end, sends with a descriptor as sockets.Channel makes them.
type fdChannel struct {
	conn  *net.UnixConn
	lines *wire.LineReader
	mu    sync.Mutex
}

func newFDChannel(t *testing.T, fd int) *fdChannel {
	t.Helper()
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(dup), "ipc-master")
	defer f.Close()
	c, err := net.FileConn(f) // its own duplicate
	if err != nil {
		t.Fatal(err)
	}
	conn := c.(*net.UnixConn)
	return &fdChannel{conn: conn, lines: wire.NewLineReader(conn, 0)}
}

func (c *fdChannel) Send(v any) error { return c.SendWithFD(v, nil) }

func (c *fdChannel) SendWithFD(v any, f *os.File) error {
	line, err := wire.Encode(v)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if f == nil {
		_, err = c.conn.Write(line)
		return err
	}
	raw, err := f.SyscallConn()
	if err != nil {
		return err
	}
	n := 0
	if cerr := raw.Control(func(fd uintptr) { n, _, err = c.conn.WriteMsgUnix(line, unix.UnixRights(int(fd)), nil) }); cerr != nil {
		return cerr
	}
	if err == nil && n < len(line) {
		_, err = c.conn.Write(line[n:])
	}
	return err
}

// nodeWorker is a Node.js cluster worker (testdata/handover-worker.js)
// whose primary is this test: its channel's master end is fd, read by one
// goroutine at a time that hands every line to a session.
type nodeWorker struct {
	cmd    *exec.Cmd
	out    bytes.Buffer
	fd     int // the master's end of the channel, as the handed state names it
	ch     *fdChannel
	events chan Event
	ended  chan error // the reader stopped: paused (deadline) or the channel ended
	port   int
	share  Share
}

func startNodeWorker(t *testing.T, reg *Registry, w Worker) (*nodeWorker, *Session) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	child := os.NewFile(uintptr(fds[1]), "ipc-worker")
	defer child.Close()
	nw := &nodeWorker{fd: fds[0], events: make(chan Event, 64)}
	t.Cleanup(func() { unix.Close(nw.fd) })
	nw.ch = newFDChannel(t, nw.fd)
	t.Cleanup(func() { nw.ch.conn.Close() })
	nw.cmd = exec.Command("node", filepath.Join("testdata", "handover-worker.js"))
	nw.cmd.Env = append(os.Environ(), wire.EnvChannelFD+"=3", wire.EnvChannelSerialization+"=json", EnvUniqueID+"="+strconv.Itoa(w.ID))
	nw.cmd.ExtraFiles = []*os.File{child}
	nw.cmd.Stdout, nw.cmd.Stderr = &nw.out, &nw.out
	if err := nw.cmd.Start(); err != nil {
		t.Fatalf("node: %v", err)
	}
	t.Cleanup(func() {
		if nw.cmd.ProcessState == nil {
			nw.cmd.Process.Kill()
			nw.cmd.Wait()
		}
	})
	s := NewWorkerSession(nw.ch, reg, w)
	nw.read(s)
	listening := false
	for !listening || nw.port == 0 {
		switch ev := nw.next(t); ev.Kind {
		case KindServed:
			nw.share = ev.Share
			if ev.Share.Errno != 0 {
				t.Fatalf("worker %d's query: %+v", w.ID, ev.Share)
			}
		case KindListening:
			listening = true
		case KindMessage:
			var m struct{ Port int }
			if err := json.Unmarshal(ev.Line, &m); err != nil || m.Port == 0 {
				t.Fatalf("worker %d said %s", w.ID, ev.Line)
			}
			nw.port = m.Port
		}
	}
	return nw, s
}

// read hands the channel's lines to s until paused or the channel ends
// (then s is closed, as the runtime does).
func (nw *nodeWorker) read(s *Session) {
	nw.ended = make(chan error, 1)
	go func() {
		for {
			line, err := nw.ch.lines.ReadLine()
			if err != nil {
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					s.Close()
				}
				nw.ended <- err
				return
			}
			nw.events <- s.Receive(line)
		}
	}()
}

// pause stops the reader between two lines (the worker is idle: nothing
// is half read).
func (nw *nodeWorker) pause(t *testing.T) {
	t.Helper()
	if err := nw.ch.conn.SetReadDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := nw.wait(t); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("reader ended with %v", err)
	}
}

func (nw *nodeWorker) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-nw.ended:
		return err
	case <-time.After(handoverTimeout):
		t.Fatalf("the reader did not stop within %v; worker output:\n%s", handoverTimeout, nw.out.String())
	}
	return nil
}

func (nw *nodeWorker) next(t *testing.T) Event {
	t.Helper()
	select {
	case ev := <-nw.events:
		if ev.Err != nil {
			t.Fatalf("event %+v", ev)
		}
		return ev
	case err := <-nw.ended:
		t.Fatalf("the channel ended (%v); worker output:\n%s", err, nw.out.String())
	case <-time.After(handoverTimeout):
		t.Fatalf("no event within %v; worker output:\n%s", handoverTimeout, nw.out.String())
	}
	return Event{}
}

// exit waits for the worker to end its channel and exit, and returns what
// it printed.
func (nw *nodeWorker) exit(t *testing.T) string {
	t.Helper()
	if err := nw.wait(t); !errors.Is(err, io.EOF) {
		t.Fatalf("the channel ended with %v, want EOF", err)
	}
	done := make(chan error, 1)
	go func() { done <- nw.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("worker exit: %v; output:\n%s", err, nw.out.String())
		}
	case <-time.After(handoverTimeout):
		t.Fatalf("the worker did not exit within %v", handoverTimeout)
	}
	return nw.out.String()
}

// whoServes is the pid of the worker that answers a request on port.
func whoServes(t *testing.T, port int) int {
	t.Helper()
	client := &http.Client{Timeout: handoverTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(string(b))
	if err != nil {
		t.Fatalf("answer %q", b)
	}
	return pid
}

// TestHandoverNodeWorker: a Node.js cluster worker that listened through
// a session; the registry and the session are handed over and adopted on
// the same channel descriptor (the old ones then closed, as the exec
// ends them). The worker still serves; a second worker that asks for the
// same server gets the same socket; the metrics request is answered;
// Disconnect of the adopted session makes the worker exit cleanly
// (exitedAfterDisconnect, code 0) while the second one serves on; Close of
// the adopted registry closes the socket.
func TestHandoverNodeWorker(t *testing.T) {
	for _, mode := range []Mode{Shared, Kernel} {
		t.Run(mode.String(), func(t *testing.T) {
			if mode == Kernel {
				if err := reuseport.Available(); err != nil {
					t.Skipf("the socket-selection program is not available here: %v", err)
				}
			}
			old := NewBalancedRegistry(nil, Balancing{Mode: mode})
			t.Cleanup(func() { old.Close() })
			w1, s1 := startNodeWorker(t, old, Worker{ID: 1, Slot: 0})
			if mode == Kernel {
				if err := old.SetEligible([]int{0}); err != nil {
					t.Fatal(err)
				}
			}
			pid1 := w1.cmd.Process.Pid
			if got := whoServes(t, w1.port); got != pid1 {
				t.Fatalf("served by %d, want worker 1 (%d)", got, pid1)
			}
			socket := inode(t, w1.share.File)

			w1.pause(t)
			regState, fds, err := old.Handover()
			if err != nil {
				t.Fatal(err)
			}
			sessState, err := s1.Handover()
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(sessState)
			var sess SessionState
			if err := json.Unmarshal(b, &sess); err != nil {
				t.Fatal(err)
			}
			regState = execCopy(t, regState, fds)
			// The exec: the old image's objects are gone (their copies of
			// the descriptors closed), the channel's descriptor stays.
			w1.ch.conn.Close()
			if err := old.Close(); err != nil {
				t.Fatal(err)
			}

			reg, err := AdoptRegistry(nil, nil, Balancing{Mode: mode}, regState)
			if err != nil {
				t.Fatalf("AdoptRegistry: %v", err)
			}
			defer reg.Close()
			w1.ch = newFDChannel(t, w1.fd)
			s := AdoptSession(w1.ch, reg, Worker{ID: 1, Slot: 0}, sess)
			w1.read(s)
			if !s.Online() {
				t.Error("the adopted session is not online")
			}
			if got := whoServes(t, w1.port); got != pid1 {
				t.Fatalf("after the handover served by %d, want worker 1 (%d)", got, pid1)
			}

			w2, s2 := startNodeWorker(t, reg, Worker{ID: 2, Slot: 0})
			if w2.share.Bound || w2.port != w1.port || inode(t, w2.share.File) != socket {
				t.Fatalf("worker 2 got %+v on port %d, want worker 1's socket (port %d)", w2.share, w2.port, w1.port)
			}

			ctx, cancel := context.WithTimeout(context.Background(), handoverTimeout)
			defer cancel()
			asked, answers, misses := GatherMetrics(ctx, []Peer{{Worker: 1, PID: pid1, Session: s}})
			if asked != 1 || len(answers) != 1 || len(answers[0].Metrics) != 1 || answers[0].Metrics[0].Name != "up" {
				t.Errorf("metrics of the adopted session: asked %d, answers %+v, misses %+v", asked, answers, misses)
			}

			if err := s.Disconnect(); err != nil {
				t.Fatal(err)
			}
			if out := w1.exit(t); !strings.Contains(out, `{"code":0,"exitedAfterDisconnect":true}`) {
				t.Errorf("worker 1 printed %q, want a clean exit after the disconnect", out)
			}
			if got := whoServes(t, w1.port); got != w2.cmd.Process.Pid {
				t.Errorf("served by %d, want worker 2 (%d), alone now", got, w2.cmd.Process.Pid)
			}

			if err := s2.Disconnect(); err != nil {
				t.Fatal(err)
			}
			w2.exit(t)
			if err := reg.Close(); err != nil {
				t.Fatal(err)
			}
			if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", w1.port)); err == nil {
				c.Close()
				t.Error("the server's port still accepts after both workers exited and the registry closed")
			}
		})
	}
}

// TestKernelRegistryHandoverListenGroup: in Kernel mode a --listen
// listener's server hands out its group's slot sockets; the group is its
// owner's, handed over by it, and the adopted registry finds it again
// among the listeners' groups (a group missing there is refused).
func TestKernelRegistryHandoverListenGroup(t *testing.T) {
	if err := reuseport.Available(); err != nil {
		t.Skipf("the socket-selection program is not available here: %v", err)
	}
	spec, err := sockets.ParseSpec("web=tcp4://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, err := reuseport.Bind(spec, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	fd, err := unix.FcntlInt(g.Socket(0).Fd(), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		t.Fatal(err)
	}
	web, err := sockets.Adopt(fd, spec) // as the master binds a balanced --listen
	if err != nil {
		t.Fatal(err)
	}
	defer web.Close()
	listeners, groups := []*sockets.Listener{web}, []*reuseport.Group{g}
	old := NewBalancedRegistry(listeners, Balancing{Mode: Kernel, Groups: groups})
	defer old.Close()
	query := `{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":null,"port":%d,"addressType":4,"seq":1}`
	query = fmt.Sprintf(query, web.Addr().(*net.TCPAddr).Port)
	share := func(r *Registry, slot int) Share {
		t.Helper()
		return receive(t, NewWorkerSession(&fakeWire{}, r, Worker{ID: slot + 1, Slot: slot}), query, KindServed).Share
	}
	if sh := share(old, 0); sh.File != g.Socket(0) || sh.Listener != "web" {
		t.Fatalf("slot 0 before the handover: %+v", sh)
	}
	st, fds, err := old.Handover()
	if err != nil {
		t.Fatal(err)
	}
	if len(fds) != 0 || len(st.Handles) != 1 || !st.Handles[0].Kernel || st.Handles[0].Listener != "web" || st.Handles[0].Group != nil {
		t.Fatalf("handed over %v, %+v: want the listener's server by name, no descriptor", fds, st)
	}
	if _, err := AdoptRegistry(listeners, nil, Balancing{Mode: Kernel}, st); err == nil || !strings.Contains(err.Error(), "a group now false") {
		t.Errorf("adopted without the listener's group: %v", err)
	}
	r, err := AdoptRegistry(listeners, groups, Balancing{Mode: Kernel}, st)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for slot := range 2 {
		if sh := share(r, slot); sh.File != g.Socket(slot) || sh.Balance != Kernel || sh.Bound {
			t.Errorf("slot %d after the handover: %+v, want the group's slot socket", slot, sh)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if g.Open() != 2 {
		t.Errorf("the registry's Close closed the listener's group: %d slots open", g.Open())
	}
}
