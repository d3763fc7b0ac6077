package worker

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster/sockets"
	"github.com/dutchmaster/dutchmaster/sockets/testproc"
)

func init() {
	testproc.Register("http-worker", httpWorker)
}

// httpWorker is a Go application under dutchmaster: it serves the "web"
// listener with ServeHTTP. /slow blocks until the test writes to the FIFO
// named by args[0]. It reports on stdout when /slow starts, when the drain
// begins and when ServeHTTP returned cleanly.
func httpWorker(args []string) int {
	l, err := Listener("web")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/fast", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "fast %d", os.Getpid())
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("slow-started")
		os.ReadFile(args[0]) // returns when the test writes and closes
		fmt.Fprintf(w, "slow %d", os.Getpid())
	})
	// A grace far longer than the test: it must end early, once the
	// clients have moved away.
	err = ServeHTTPWith(&http.Server{Handler: mux}, l, HTTPOptions{
		Grace:   testTimeout,
		OnDrain: func() { fmt.Println("draining") },
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("drained-clean")
	return 0
}

// TestReplaceAWorkerWithoutDroppingARequest plays the master's part with
// package sockets around two real worker processes: the first serves, is
// drained with requests in flight and on keep-alive connections, and a
// connection that arrives during its drain is served by its replacement.
func TestReplaceAWorkerWithoutDroppingARequest(t *testing.T) {
	web, err := sockets.Bind(sockets.Spec{Name: "web", Network: "tcp", Address: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer web.Close()
	addr := web.Addr().String()
	fifo := filepath.Join(t.TempDir(), "release")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}

	first, ch1, out1 := startWorker(t, []*sockets.Listener{web}, true, nil, "http-worker", fifo)
	await(t, ipcLines(ch1), `{"event":"ready"}`)

	keepAlive := dial(t, addr)
	keepAlive.send(t, "/fast")
	resp, body := keepAlive.response(t)
	want1 := "fast " + strconv.Itoa(first.Process.Pid)
	if resp.StatusCode != 200 || body != want1 || resp.Close {
		t.Fatalf("first worker: %d %q close=%v", resp.StatusCode, body, resp.Close)
	}

	slow := dial(t, addr)
	slow.send(t, "/slow")
	await(t, out1, "slow-started")

	// Drain the first worker the way the master does for IPC workers.
	if err := ch1.Disconnect(); err != nil {
		t.Fatal(err)
	}
	await(t, out1, "draining")

	// The first worker no longer accepts; this connection waits in the
	// socket the master holds.
	queued := dial(t, addr)
	fmt.Fprint(queued, "GET /fast HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")

	// A keep-alive client reusing its connection is answered, told to
	// close, and the connection ends cleanly.
	keepAlive.send(t, "/fast")
	resp, body = keepAlive.response(t)
	if resp.StatusCode != 200 || body != want1 || !resp.Close {
		t.Fatalf("keep-alive request during the drain: %d %q close=%v, want 200 with Connection: close", resp.StatusCode, body, resp.Close)
	}
	if err := keepAlive.end(); err != io.EOF {
		t.Fatalf("keep-alive connection after Connection: close: %v, want EOF", err)
	}
	keepAlive.Close()

	// The request in flight when the drain began completes.
	if err := os.WriteFile(fifo, []byte("go"), 0); err != nil {
		t.Fatal(err)
	}
	resp, body = slow.response(t)
	if resp.StatusCode != 200 || body != "slow "+strconv.Itoa(first.Process.Pid) {
		t.Fatalf("in-flight request: %d %q", resp.StatusCode, body)
	}
	slow.Close()

	await(t, out1, "drained-clean")
	if err := first.Wait(); err != nil {
		t.Fatalf("first worker exit: %v", err)
	}

	// The replacement serves the connection that queued meanwhile.
	second, ch2, out2 := startWorker(t, []*sockets.Listener{web}, true, nil, "http-worker", fifo)
	await(t, ipcLines(ch2), `{"event":"ready"}`)
	resp, body = queued.response(t)
	if want := "fast " + strconv.Itoa(second.Process.Pid); resp.StatusCode != 200 || body != want {
		t.Fatalf("queued connection: %d %q, want %q", resp.StatusCode, body, want)
	}
	queued.Close()

	if err := ch2.Disconnect(); err != nil {
		t.Fatal(err)
	}
	await(t, out2, "drained-clean")
	if err := second.Wait(); err != nil {
		t.Fatalf("second worker exit: %v", err)
	}
}

// TestServeHTTPUnderLoadDuringReplacement hammers the socket from several
// keep-alive clients while one worker is replaced by another, and counts
// failures: there must be none (puma's "restart under load" test).
func TestServeHTTPUnderLoadDuringReplacement(t *testing.T) {
	web, err := sockets.Bind(sockets.Spec{Name: "web", Network: "tcp", Address: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer web.Close()
	fifo := filepath.Join(t.TempDir(), "unused")

	old, ch1, out1 := startWorker(t, []*sockets.Listener{web}, true, nil, "http-worker", fifo)
	await(t, ipcLines(ch1), `{"event":"ready"}`)

	const clients = 8
	type tally struct {
		ok, failed int
		servedBy   map[string]int
		errs       []string
	}
	results := make(chan tally, clients)
	stop := make(chan struct{})
	for range clients {
		go func() {
			tr := &http.Transport{MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: testTimeout}
			r := tally{servedBy: map[string]int{}}
			for {
				select {
				case <-stop:
					results <- r
					return
				default:
				}
				resp, err := c.Get("http://" + web.Addr().String() + "/fast")
				if err != nil {
					r.failed++
					r.errs = append(r.errs, err.Error())
					continue
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					r.failed++
					continue
				}
				r.ok++
				r.servedBy[strings.Fields(string(b))[1]]++
			}
		}()
	}

	// Replace: the new worker first, then drain the old one.
	newer, ch2, out2 := startWorker(t, []*sockets.Listener{web}, true, nil, "http-worker", fifo)
	await(t, ipcLines(ch2), `{"event":"ready"}`)
	ch1.Disconnect()
	await(t, out1, "drained-clean")
	if err := old.Wait(); err != nil {
		t.Fatalf("old worker: %v", err)
	}
	// Keep the load on until the new worker has served some of it alone.
	deadline := time.Now().Add(testTimeout)
	for time.Now().Before(deadline) {
		c, err := net.Dial("tcp", web.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprint(c, "GET /fast HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.HasSuffix(string(b), strconv.Itoa(newer.Process.Pid)) {
				c.Close()
				break
			}
		}
		c.Close()
	}
	close(stop)
	total := tally{servedBy: map[string]int{}}
	for range clients {
		r := <-results
		total.ok += r.ok
		total.failed += r.failed
		total.errs = append(total.errs, r.errs...)
		for k, v := range r.servedBy {
			total.servedBy[k] += v
		}
	}
	if total.failed != 0 {
		t.Errorf("%d of %d requests failed during the replacement: %v", total.failed, total.ok+total.failed, total.errs[:min(len(total.errs), 5)])
	}
	if total.servedBy[strconv.Itoa(old.Process.Pid)] == 0 || total.servedBy[strconv.Itoa(newer.Process.Pid)] == 0 {
		t.Errorf("served by %v: want both workers to have served", total.servedBy)
	}
	t.Logf("%d requests, served by %v", total.ok, total.servedBy)

	ch2.Disconnect()
	await(t, out2, "drained-clean")
	newer.Wait()
}
