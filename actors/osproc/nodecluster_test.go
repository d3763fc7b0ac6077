package osproc_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/osproc"
	"github.com/dutchmaster/dutchmaster/sockets"
	"github.com/dutchmaster/dutchmaster/sockets/testproc"
)

func init() { testproc.Register("cluster-worker", roleClusterWorker) }

// hello is what the "cluster-worker" role reports once it listens.
type hello struct {
	Event   string
	PID     int
	Unique  string // NODE_UNIQUE_ID
	Address string // where its server listens
	Type    string // of the NODE_HANDLE it got
	Key     string
	Ack     int
}

// roleClusterWorker does what Node's cluster worker code does for one
// server.listen() (lib/internal/cluster/child.js): online, queryServer
// (for 127.0.0.1:0, or for fd 3 with args[0] "fd3"), the handle with its
// descriptor in one read, NODE_HANDLE_ACK, listen, listening. Then it
// answers connections with its pid until the master's disconnect, which
// closes the server; it reports what it read and exits 0. End-of-file
// (the master closed the channel) exits 4.
func roleClusterWorker(args []string) int {
	c := workerIPC()
	c.send(map[string]any{"cmd": "NODE_CLUSTER", "act": "online", "seq": 0})
	query := map[string]any{"cmd": "NODE_CLUSTER", "act": "queryServer", "index": 0, "data": nil,
		"address": "127.0.0.1", "port": 0, "addressType": 4, "backlog": 511, "seq": 1}
	if args[0] == "fd3" {
		query = map[string]any{"cmd": "NODE_CLUSTER", "act": "queryServer", "index": 0, "data": nil,
			"address": nil, "port": nil, "addressType": nil, "fd": 3, "backlog": 511, "seq": 1}
	}
	c.send(query)

	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(int(c.f.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		fmt.Fprintln(os.Stderr, "recvmsg:", err)
		return 1
	}
	var reply struct {
		Cmd, Type string
		Msg       struct {
			Errno int
			Key   string
			Ack   int
		}
	}
	if err := json.Unmarshal(buf[:n], &reply); err != nil || !strings.HasSuffix(string(buf[:n]), "}\n") {
		fmt.Fprintf(os.Stderr, "reply %q: %v\n", buf[:n], err)
		return 1
	}
	cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(cmsgs) != 1 {
		fmt.Fprintf(os.Stderr, "no descriptor with %q: %v\n", buf[:n], err)
		return 1
	}
	fds, err := unix.ParseUnixRights(&cmsgs[0])
	if err != nil || len(fds) != 1 {
		fmt.Fprintln(os.Stderr, "rights:", fds, err)
		return 1
	}
	c.send(map[string]string{"cmd": "NODE_HANDLE_ACK"})
	if err := unix.Listen(fds[0], 511); err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		return 1
	}
	f := os.NewFile(uintptr(fds[0]), "server")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprint(conn, os.Getpid())
			conn.Close()
		}
	}()
	c.send(map[string]any{"cmd": "NODE_CLUSTER", "act": "listening", "index": 0, "data": nil,
		"address": "127.0.0.1", "port": ln.Addr().(*net.TCPAddr).Port, "addressType": 4, "seq": 2})
	c.send(hello{Event: "hello", PID: os.Getpid(), Unique: os.Getenv("NODE_UNIQUE_ID"),
		Address: ln.Addr().String(), Type: reply.Type, Key: reply.Msg.Key, Ack: reply.Msg.Ack})

	var read []string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return 4
		}
		read = append(read, strings.TrimSuffix(line, "\n"))
		if strings.Contains(line, `"act":"disconnect"`) {
			ln.Close()
			c.send(map[string]any{"cmd": "NODE_CLUSTER", "act": "close", "key": reply.Msg.Key, "seq": 3})
			c.send(map[string]any{"event": "bye", "read": read})
			return 0
		}
	}
}

// expectHello waits for a cluster worker's events up to its hello:
// Online, then ready (its first listening), then the hello itself.
func expectHello(t *testing.T, rec *recorder) hello {
	t.Helper()
	expect[actors.Online](t, rec)
	var ready map[string]string
	decode(t, rec.next(t), &ready)
	if ready["event"] != "listening" {
		t.Fatalf("after online: %v, want the listening that makes it ready", ready)
	}
	var h hello
	decode(t, rec.next(t), &h)
	if h.Event != "hello" {
		t.Fatalf("got %+v, want the hello", h)
	}
	return h
}

func dialPID(t *testing.T, addr string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(testTimeout))
	b, err := io.ReadAll(c)
	pid, _ := strconv.Atoi(string(b))
	if err != nil || pid == 0 {
		t.Fatalf("read %q, %v", b, err)
	}
	return pid
}

// TestNodeClusterWorkersShareOneSocket: with NodeCluster, two workers
// asking for the same server get the same socket (bound by the runtime),
// become ready on their listening, and the IPC drain is the cluster's
// disconnect on a channel left open; the socket outlives the workers
// until Close.
func TestNodeClusterWorkersShareOneSocket(t *testing.T) {
	var logs syncBuffer
	rt := newRuntime(t, osproc.Config{Command: role(t, "cluster-worker", "tcp"), NodeCluster: true, Logger: zerolog.New(&logs)})
	rec1, pid1 := spawn(t, rt, actors.WorkerSpec{ID: 1})
	h1 := expectHello(t, rec1)
	rec2, pid2 := spawn(t, rt, actors.WorkerSpec{ID: 2, Slot: 1})
	h2 := expectHello(t, rec2)
	if h1.PID != pid1 || h2.PID != pid2 || h1.Unique != "1" || h2.Unique != "2" {
		t.Errorf("hellos %+v, %+v: want NODE_UNIQUE_ID = the worker id", h1, h2)
	}
	if h1.Address != h2.Address || h1.Key != "127.0.0.1:0:4:undefined:0" || h1.Key != h2.Key || h1.Type != "net.Native" || h1.Ack != 1 {
		t.Fatalf("hellos %+v, %+v: want one shared socket", h1, h2)
	}
	if got := strings.Count(logs.String(), `"message":"node server bound"`); got != 1 {
		t.Errorf("%d binds logged, want 1:\n%s", got, logs.String())
	}
	if pid := dialPID(t, h1.Address); pid != pid1 && pid != pid2 {
		t.Fatalf("answered by pid %d", pid)
	}

	rt.Drain(1, actors.DrainIPC)
	var bye struct {
		Event string
		Read  []string
	}
	decode(t, rec1.next(t), &bye)
	if bye.Event != "bye" || !slices.Equal(bye.Read, []string{`{"cmd":"NODE_CLUSTER","act":"disconnect","seq":1}`}) {
		t.Errorf("worker 1 read %+v, want the cluster disconnect", bye)
	}
	expectExit(t, rec1, 0) // not 4: the channel stayed open
	if pid := dialPID(t, h1.Address); pid != pid2 {
		t.Errorf("answered by pid %d after worker 1 left, want %d", pid, pid2)
	}
	rt.Drain(2, actors.DrainBoth) // the disconnect, and SIGTERM
	until[actors.Exited](t, rec2)

	closeRuntime(t, rt)
	if c, err := net.Dial("tcp", h1.Address); err == nil {
		c.Close()
		t.Error("the shared socket is still open after Close")
	}
}

// TestNodeClusterListenFD: listen({fd: 3}) gets the --listen listener the
// worker inherited as fd 3, not a descriptor of the master's.
func TestNodeClusterListenFD(t *testing.T) {
	web := bind(t, "web=tcp://127.0.0.1:0")
	rt := newRuntime(t, osproc.Config{Command: role(t, "cluster-worker", "fd3"), NodeCluster: true, Listeners: []*sockets.Listener{web}})
	rec, _ := spawn(t, rt, actors.WorkerSpec{ID: 1})
	if h := expectHello(t, rec); h.Address != web.Addr().String() || h.Key != "null:null:null:3:0" {
		t.Fatalf("hello %+v, want the web listener %s", h, web.Addr())
	}
	rt.Drain(1, actors.DrainIPC)
	until[actors.Exited](t, rec)
}

// TestNodeClusterPlainWorker: a worker started in node-cluster mode that
// never says online (not Node's cluster code) gets NODE_UNIQUE_ID, its
// lines pass through, and it is drained the plain way.
func TestNodeClusterPlainWorker(t *testing.T) {
	rt := newRuntime(t, osproc.Config{Command: role(t, "report"), NodeCluster: true})
	rec, _ := spawn(t, rt, actors.WorkerSpec{ID: 17})
	rep := nextReport(t, rec)
	expectExit(t, rec, 0)
	if v, n := envValue(rep.Env, "NODE_UNIQUE_ID"); v != "17" || n != 1 {
		t.Errorf("NODE_UNIQUE_ID=%q (%d times), want 17 once", v, n)
	}

	rt = newRuntime(t, osproc.Config{Command: role(t, "drain", "ipc"), NodeCluster: true})
	rec, _ = spawn(t, rt, actors.WorkerSpec{ID: 1})
	var ready map[string]string
	decode(t, rec.next(t), &ready)
	rt.Drain(1, actors.DrainIPC)
	var got drainReport
	decode(t, rec.next(t), &got)
	expectExit(t, rec, 0)
	if !got.EOF || !slices.Equal(got.Lines, []string{`{"event":"disconnect"}`}) {
		t.Errorf("worker read %q (EOF %v), want the plain disconnect and EOF", got.Lines, got.EOF)
	}
}
