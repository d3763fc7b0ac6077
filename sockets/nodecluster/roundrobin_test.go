package nodecluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/sockets"
	"github.com/dutchmaster/dutchmaster/sockets/testproc"
)

// fakeNodeLoop plays a Node.js cluster worker on its end of the IPC
// channel (fd) until the channel ends: each NODE_HANDLE is acknowledged;
// a newconn is answered {ack, accepted} as child.js does, and an accepted
// connection is sent the worker's id (one byte), then closed a little
// later. accept says
// what the worker answers; got counts the newconns it was handed.
func fakeNodeLoop(fd int, id byte, accept bool, got *atomic.Int64) {
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*4))
	var pending []byte
	var fds []int
	seq := 100
	var serving []int
	defer func() {
		for _, c := range serving {
			unix.Close(c)
		}
	}()
	reply := func(v string) { _, _ = unix.Write(fd, []byte(v+"\n")) }
	for {
		n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			return
		}
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if rights, err := unix.ParseUnixRights(&m); err == nil {
					fds = append(fds, rights...)
				}
			}
		}
		pending = append(pending, buf[:n]...)
		for {
			i := bytes.IndexByte(pending, '\n')
			if i < 0 {
				break
			}
			line := pending[:i]
			pending = pending[i+1:]
			var m struct {
				Cmd string `json:"cmd"`
				Msg struct {
					Act string `json:"act"`
					Seq int    `json:"seq"`
				} `json:"msg"`
			}
			if json.Unmarshal(line, &m) != nil || m.Cmd != CmdHandle || len(fds) == 0 {
				continue
			}
			conn := fds[0]
			fds = fds[1:]
			reply(`{"cmd":"NODE_HANDLE_ACK"}`)
			if m.Msg.Act != ActNewconn {
				unix.Close(conn)
				continue
			}
			got.Add(1)
			reply(fmt.Sprintf(`{"cmd":"NODE_CLUSTER","ack":%d,"accepted":%v,"seq":%d}`, m.Msg.Seq, accept, seq))
			seq++
			if !accept {
				unix.Close(conn)
				continue
			}
			// Served: the worker answers and keeps the connection a
			// while (the master's copy is not the last one, as with a
			// real worker), then closes it.
			_, _ = unix.Write(conn, []byte{id})
			serving = append(serving, conn)
			if len(serving) > 64 {
				unix.Close(serving[0])
				serving = serving[1:]
			}
		}
	}
}

// fakeWorker is a session with a fake Node.js worker at the other end of a
// real channel: the master's reader goroutine as the runtime runs it, and
// the worker in this process (fakeNodeLoop) or in another one.
type fakeWorker struct {
	s     *Session
	ch    *sockets.Channel
	child *os.File
	got   atomic.Int64
	wg    sync.WaitGroup
}

// newFakeWorker connects a session for worker id; with local, the fake
// worker runs here (otherwise the caller hands w.child to a process).
func newFakeWorker(t testing.TB, reg *Registry, id int, accept, local bool) *fakeWorker {
	t.Helper()
	ch, child, err := sockets.NewChannel()
	if err != nil {
		t.Fatal(err)
	}
	w := &fakeWorker{s: NewWorkerSession(ch, reg, Worker{ID: id, Slot: id - 1}), ch: ch, child: child}
	w.wg.Go(func() {
		for {
			line, err := ch.ReadLine()
			if err != nil {
				w.s.Close()
				return
			}
			w.s.Receive(line)
		}
	})
	if local {
		raw, _ := child.SyscallConn()
		w.wg.Go(func() {
			_ = raw.Control(func(fd uintptr) { fakeNodeLoop(int(fd), byte(id), accept, &w.got) })
		})
	}
	return w
}

// query has the worker ask for the TCP server 127.0.0.1:0 (every worker
// the same: one key, one port) and returns the answer.
func (w *fakeWorker) query(t testing.TB) Share {
	t.Helper()
	ev := w.s.Receive([]byte(`{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":"127.0.0.1","port":0,"addressType":4,"seq":1}`))
	if ev.Kind != KindServed || ev.Share.Errno != 0 {
		t.Fatalf("query: %+v", ev)
	}
	return ev.Share
}

// end ends the worker (its channel) and waits for both sides.
func (w *fakeWorker) end() {
	_ = unix.Shutdown(int(w.child.Fd()), unix.SHUT_RDWR)
	w.wg.Wait()
	w.child.Close()
	w.ch.Close()
}

// served dials addr n times, one connection after the other, and counts
// the connections by the id of the worker that answered (0: closed
// without an answer).
func served(t testing.TB, addr string, n int) map[int]int {
	t.Helper()
	per := map[int]int{}
	for range n {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil {
			b[0] = 0
		}
		per[int(b[0])]++
		c.Close()
	}
	return per
}

func rrRegistry(t testing.TB) *Registry {
	reg := NewBalancedRegistry(nil, Balancing{Mode: RoundRobin})
	t.Cleanup(func() { reg.Close() })
	return reg
}

// TestRoundRobinInTurn: the query is answered without a handle, with the
// socket's address; connections go to the eligible workers in turn, and
// only to them; the master's copy of each is closed once the worker
// accepted it (the client reads the worker's byte, then EOF).
func TestRoundRobinInTurn(t *testing.T) {
	reg := rrRegistry(t)
	var ws []*fakeWorker
	for id := 1; id <= 3; id++ {
		ws = append(ws, newFakeWorker(t, reg, id, true, true))
	}
	sh := ws[0].query(t)
	if sh.File != nil || sh.Balance != RoundRobin || sh.Sockname == nil || sh.Sockname.Family != "IPv4" || sh.Sockname.Address != "127.0.0.1" {
		t.Fatalf("share %+v (sockname %+v), want round-robin without a handle", sh, sh.Sockname)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sh.Sockname.Port))
	ws[1].query(t)
	ws[2].query(t)

	reg.SetEligibleWorkers([]int{1, 2, 3})
	if per := served(t, addr, 9); per[1] != 3 || per[2] != 3 || per[3] != 3 {
		t.Errorf("9 connections over 3 workers: %v, want 3 each", per)
	}
	// Worker 2 drains: out of the eligible ones, it gets nothing more.
	reg.SetEligibleWorkers([]int{1, 3})
	before := ws[1].got.Load()
	if per := served(t, addr, 6); per[1] != 3 || per[3] != 3 {
		t.Errorf("6 connections over workers 1 and 3: %v, want 3 each", per)
	}
	if n := ws[1].got.Load() - before; n != 0 {
		t.Errorf("worker 2, not eligible, was handed %d connections", n)
	}
	// Worker 3 closes its server: it leaves the round-robin.
	ws[2].s.Receive([]byte(`{"cmd":"NODE_CLUSTER","act":"close","key":"127.0.0.1:0:4:undefined:0","seq":9}`))
	if per := served(t, addr, 2); per[1] != 2 {
		t.Errorf("2 connections after worker 3 closed its server: %v, want both on worker 1", per)
	}
	for _, w := range ws {
		w.end()
	}
}

// TestRoundRobinRefusedGoesOn: a connection a worker refuses (its server
// closed: accepted false) goes to the next worker; with nobody eligible,
// connections wait in the kernel's queue until somebody is.
func TestRoundRobinRefusedGoesOn(t *testing.T) {
	reg := rrRegistry(t)
	refuser := newFakeWorker(t, reg, 1, false, true)
	taker := newFakeWorker(t, reg, 2, true, true)
	sh := refuser.query(t)
	taker.query(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sh.Sockname.Port))
	reg.SetEligibleWorkers([]int{1, 2})
	if per := served(t, addr, 4); per[2] != 4 {
		t.Errorf("4 connections, worker 1 refusing: %v, want all on worker 2", per)
	}
	if refuser.got.Load() == 0 {
		t.Error("the refusing worker was never offered a connection: the test shows nothing")
	}

	reg.SetEligibleWorkers(nil)
	result := make(chan map[int]int, 1)
	go func() { result <- served(t, addr, 1) }()
	select {
	case per := <-result:
		t.Fatalf("served %v with no worker eligible", per)
	case <-time.After(50 * time.Millisecond):
	}
	reg.SetEligibleWorkers([]int{2})
	if per := <-result; per[2] != 1 {
		t.Errorf("the waiting connection went to %v, want worker 2", per)
	}
	refuser.end()
	taker.end()
}

// TestRoundRobinWorkerGone: connections handed to a worker that goes away
// without answering go to the others; the accept loop stops at Close and
// takes the connections it holds with it (goleak checks the goroutine).
func TestRoundRobinWorkerGone(t *testing.T) {
	reg := NewBalancedRegistry(nil, Balancing{Mode: RoundRobin})
	silent := newFakeWorker(t, reg, 1, true, false) // nobody reads its end
	taker := newFakeWorker(t, reg, 2, true, true)
	sh := silent.query(t)
	taker.query(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sh.Sockname.Port))
	reg.SetEligibleWorkers([]int{1, 2})

	// Connection 1 goes to the silent worker (in turn from worker 2 on:
	// whichever is first, one of two goes there) and waits.
	conns := make(chan map[int]int, 2)
	for range 2 {
		go func() { conns <- served(t, addr, 1) }()
	}
	got := map[int]int{}
	per := <-conns
	for k, v := range per {
		got[k] += v
	}
	silent.end() // the worker is gone: its connection goes to worker 2
	for k, v := range <-conns {
		got[k] += v
	}
	if got[2] != 2 {
		t.Errorf("connections served %v, want both by worker 2", got)
	}

	// A connection that comes while nobody is eligible waits (in the
	// kernel's queue: the loop does not accept it), and goes with the
	// registry's Close.
	reg.SetEligibleWorkers(nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	taker.end()
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("a connection read data after the registry closed")
	}
}

// TestRoundRobinSchedNone: a worker whose environment says
// NODE_CLUSTER_SCHED_POLICY=none gets the socket itself, listening.
func TestRoundRobinSchedNone(t *testing.T) {
	if !SchedNone([]string{"A=1", EnvSchedPolicy + "=rr", EnvSchedPolicy + "=none"}) || SchedNone([]string{EnvSchedPolicy + "=none", EnvSchedPolicy + "=rr"}) || SchedNone(nil) {
		t.Fatal("SchedNone does not read the last value of the variable")
	}
	reg := rrRegistry(t)
	ch, child, err := sockets.NewChannel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	defer child.Close()
	s := NewWorkerSession(&fakeWire{}, reg, Worker{ID: 1, SchedNone: true})
	ev := receive(t, s, `{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":"127.0.0.1","port":0,"addressType":4,"seq":1}`, KindServed)
	if ev.Share.File == nil || ev.Share.Balance != Shared {
		t.Fatalf("share %+v, want the socket", ev.Share)
	}
	ln := workerCopy(t, ev.Share.File)
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// TestRoundRobinAcrossProcesses: the connections go through real
// SCM_RIGHTS to fake workers in another process (the rr-peer role), whose
// clients read each worker's answer.
func TestRoundRobinAcrossProcesses(t *testing.T) {
	per := handOverTo(t, rrRegistry(t), 3, 30)
	if per[1] != 10 || per[2] != 10 || per[3] != 10 {
		t.Errorf("30 connections over 3 workers in another process: %v, want 10 each", per)
	}
}

// handOverTo starts `workers` fake workers in an rr-peer process, makes
// them eligible, and has the process's clients (8 at once) open `conns`
// connections one after the other; it returns them by the worker that
// answered.
func handOverTo(t testing.TB, reg *Registry, workers, conns int) map[int]int {
	t.Helper()
	ws := make([]*fakeWorker, workers)
	var ids []int
	for i := range ws {
		ws[i] = newFakeWorker(t, reg, i+1, true, false)
		ids = append(ids, i+1)
	}
	port := ws[0].query(t).Sockname.Port
	for _, w := range ws[1:] {
		w.query(t)
	}
	reg.SetEligibleWorkers(ids)
	cmd := testproc.Command(t, "rr-peer", strconv.Itoa(workers), strconv.Itoa(port), strconv.Itoa(conns))
	for _, w := range ws {
		cmd.ExtraFiles = append(cmd.ExtraFiles, w.child)
	}
	out, err := cmd.Output()
	for _, w := range ws {
		w.end()
	}
	per := map[int]int{}
	if err != nil || json.Unmarshal(out, &per) != nil {
		t.Fatalf("rr-peer: %v, output %q", err, out)
	}
	return per
}

func init() {
	// rr-peer N PORT CONNS: fake Node.js workers on fds 3 .. 3+N-1 (ids
	// 1..N), and 8 clients that open CONNS connections to 127.0.0.1:PORT
	// one after the other; prints how many each worker answered.
	testproc.Register("rr-peer", func(args []string) int {
		n, _ := strconv.Atoi(args[0])
		conns, _ := strconv.Atoi(args[2])
		var got atomic.Int64
		for i := range n {
			go fakeNodeLoop(3+i, byte(i+1), true, &got)
		}
		addr := net.JoinHostPort("127.0.0.1", args[1])
		var mu sync.Mutex
		per := map[int]int{}
		var next atomic.Int64
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				b := make([]byte, 1)
				for next.Add(1) <= int64(conns) {
					id := 0
					if c, err := net.DialTimeout("tcp", addr, 10*time.Second); err == nil {
						_ = c.SetDeadline(time.Now().Add(10 * time.Second))
						if _, err := io.ReadFull(c, b); err == nil {
							id = int(b[0])
						}
						c.Close()
					}
					mu.Lock()
					per[id]++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		out, _ := json.Marshal(per)
		os.Stdout.Write(out)
		return 0
	})
}

// BenchmarkRoundRobinHandover measures what one connection costs the
// master in round-robin: the accept, the newconn with its descriptor, the
// worker's two answers read and parsed, the close. The workers and the
// clients run in another process (rr-peer), so this process's CPU time
// (user + system, getrusage) is the master's: cpu-ns/conn.
func BenchmarkRoundRobinHandover(b *testing.B) {
	reg := rrRegistry(b)
	var before, after syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	b.ResetTimer()
	per := handOverTo(b, reg, 4, b.N)
	b.StopTimer()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano()
	b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/conn")
	if per[0] != 0 {
		b.Fatalf("%d connections were not served: %v", per[0], per)
	}
}

// TestRoundRobinBrokenChannel: a connection whose newconn cannot be sent
// (the worker's channel broke) goes to another worker, and so does every
// later one.
func TestRoundRobinBrokenChannel(t *testing.T) {
	reg := rrRegistry(t)
	taker := newFakeWorker(t, reg, 2, true, true)
	sh := taker.query(t)
	wire := &fakeWire{}
	broken := NewWorkerSession(wire, reg, Worker{ID: 1})
	receive(t, broken, `{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":"127.0.0.1","port":0,"addressType":4,"seq":1}`, KindServed)
	wire.fail = errors.New("ipc send: broken pipe")
	reg.SetEligibleWorkers([]int{1, 2})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sh.Sockname.Port))
	if per := served(t, addr, 4); per[2] != 4 {
		t.Errorf("4 connections, worker 1's channel broken: %v, want all on worker 2", per)
	}
	taker.end()
}
