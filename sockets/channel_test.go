package sockets

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// newTestChannel returns a channel and the worker's end as a net.Conn.
func newTestChannel(t *testing.T) (*Channel, *net.UnixConn) {
	t.Helper()
	ch, child, err := NewChannel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	if cloexec, _ := fdFlags(t, child); !cloexec {
		t.Error("the child end is not close-on-exec in the master")
	}
	c, err := net.FileConn(child)
	child.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return ch, c.(*net.UnixConn)
}

func TestChannelReadsLines(t *testing.T) {
	ch, worker := newTestChannel(t)
	var in bytes.Buffer
	const n = 1000
	for i := range n {
		json.NewEncoder(&in).Encode(map[string]int{"i": i}) // Encode appends "\n"
	}
	in.WriteString("\xff\xfe not json\n\n\"ready\"\n")
	go func() {
		worker.Write(in.Bytes())
		worker.CloseWrite()
	}()
	for i := range n {
		line, err := ch.ReadLine()
		if err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		var m map[string]int
		if err := json.Unmarshal(line, &m); err != nil || m["i"] != i {
			t.Fatalf("line %d = %q", i, line)
		}
	}
	for _, want := range []string{"\xff\xfe not json", "", `"ready"`} {
		if line, err := ch.ReadLine(); err != nil || string(line) != want {
			t.Fatalf("got %q, %v, want %q delivered as is", line, err, want)
		}
	}
	if _, err := ch.ReadLine(); err != io.EOF {
		t.Fatalf("at the end: %v, want io.EOF", err)
	}
}

func TestChannelSkipsOversizedLine(t *testing.T) {
	ch, worker := newTestChannel(t)
	go func() {
		worker.Write(bytes.Repeat([]byte("x"), MaxLineBytes+1))
		worker.Write([]byte("\n{\"event\":\"ready\"}\n"))
		worker.Write(bytes.Repeat([]byte("y"), MaxLineBytes+1)) // unterminated, then EOF
		worker.CloseWrite()
	}()
	_, err := ch.ReadLine()
	var tl *LineTooLongError
	if !errors.Is(err, ErrLineTooLong) || !errors.As(err, &tl) || tl.Length != MaxLineBytes+1 {
		t.Fatalf("oversized line: %v, want a LineTooLongError of %d bytes", err, MaxLineBytes+1)
	}
	if line, err := ch.ReadLine(); err != nil || string(line) != `{"event":"ready"}` {
		t.Fatalf("the line after the oversized one: %q, %v", line, err)
	}
	if _, err := ch.ReadLine(); !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("oversized last line: %v", err)
	}
	if _, err := ch.ReadLine(); err != io.EOF {
		t.Fatalf("got %v, want io.EOF", err)
	}
}

func TestChannelConcurrentSend(t *testing.T) {
	ch, worker := newTestChannel(t)
	const senders, each = 16, 200
	payload := strings.Repeat("p", 3000) // several lines per socket buffer: writes must not interleave
	var wg sync.WaitGroup
	for g := range senders {
		wg.Go(func() {
			for i := range each {
				if err := ch.Send(map[string]any{"g": g, "i": i, "p": payload}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); ch.CloseWrite(); close(done) }()

	seen := map[[2]int]bool{}
	sc := bufio.NewScanner(worker)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m struct{ G, I int }
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("interleaved or broken line %.80q: %v", sc.Bytes(), err)
		}
		seen[[2]int{m.G, m.I}] = true
	}
	<-done
	if len(seen) != senders*each {
		t.Fatalf("received %d distinct lines, want %d", len(seen), senders*each)
	}
}

func TestChannelSendTimeoutAndBreak(t *testing.T) {
	ch, _ := newTestChannel(t) // the worker never reads
	ch.SetSendTimeout(50 * time.Millisecond)
	big := strings.Repeat("z", 64<<10)
	var err error
	for range 1000 {
		if err = ch.Send(big); err != nil {
			break
		}
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Send to a worker that does not read: %v, want a deadline error", err)
	}
	if errors.Is(err, ErrChannelBroken) {
		// A part of the line went out: no later line may follow it.
		if err := ch.Send("x"); err != ErrChannelBroken {
			t.Fatalf("Send after a partial write: %v, want ErrChannelBroken", err)
		}
	}
}

func TestChannelSendRejectsUnencodable(t *testing.T) {
	ch, _ := newTestChannel(t)
	if err := ch.Send(make(chan int)); err == nil {
		t.Fatal("Send of a channel value: no error")
	}
}

func TestChannelDisconnect(t *testing.T) {
	ch, worker := newTestChannel(t)
	if err := ch.Disconnect(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(worker) // ends only at EOF
	if err != nil || string(got) != "{\"event\":\"disconnect\"}\n" {
		t.Fatalf("the worker read %q, %v; want the disconnect line then EOF", got, err)
	}
	// The master still hears the worker after closing its sending side.
	worker.Write([]byte("{\"event\":\"bye\"}\n"))
	if line, err := ch.ReadLine(); err != nil || string(line) != `{"event":"bye"}` {
		t.Fatalf("after Disconnect: %q, %v", line, err)
	}
}

func TestChannelCloseUnblocksReadLine(t *testing.T) {
	ch, _ := newTestChannel(t)
	errc := make(chan error)
	go func() {
		_, err := ch.ReadLine()
		errc <- err
	}()
	ch.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("ReadLine after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("ReadLine still blocked after Close")
	}
}

func TestSendWithFD(t *testing.T) {
	ch, worker := newTestChannel(t)
	l := mustBind(t, "tcp://127.0.0.1:0")
	msg := map[string]any{"cmd": "NODE_HANDLE", "type": "net.Native"}
	if err := ch.SendWithFD(msg, l.File()); err != nil {
		t.Fatal(err)
	}
	if err := ch.Send("after"); err != nil {
		t.Fatal(err)
	}

	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := worker.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(cmsgs) != 1 {
		t.Fatalf("control messages: %v, %v; want one", cmsgs, err)
	}
	fds, err := unix.ParseUnixRights(&cmsgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("rights: %v, %v; want one descriptor", fds, err)
	}
	if line, _, _ := bytes.Cut(buf[:n], []byte("\n")); string(line) != `{"cmd":"NODE_HANDLE","type":"net.Native"}` {
		t.Fatalf("the descriptor came with %q, want the first byte of its line", buf[:n])
	}

	// The received descriptor is the listener: accept a connection on it.
	got := os.NewFile(uintptr(fds[0]), "received")
	ln, err := net.FileListener(got)
	got.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if a, err := ln.Accept(); err != nil {
		t.Fatalf("accept on the received descriptor: %v", err)
	} else {
		a.Close()
	}
	if err := ch.SendWithFD("x", nil); err == nil {
		t.Fatal("SendWithFD(nil file): no error")
	}
}
