package worker

import (
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// TestHealthStuck: the handler path is stuck when a request has waited a
// whole period and none finished meanwhile; idle, or making progress, it
// is not.
func TestHealthStuck(t *testing.T) {
	h := newHealth(http.NotFoundHandler(), 0, nil)
	t0 := time.Now()
	period := time.Second
	if h.stuck(period, t0) {
		t.Fatal("an idle server is stuck")
	}
	r := &http.Request{}
	h.inFlight[r] = t0
	if h.stuck(period, t0.Add(period/2)) {
		t.Fatal("a request younger than the period makes the server stuck")
	}
	if !h.stuck(period, t0.Add(period)) {
		t.Fatal("a request that waited a whole period, none finished: not stuck")
	}
	h.finished = t0.Add(period / 2)
	if h.stuck(period, t0.Add(period)) {
		t.Fatal("a request finished within the period: the server made progress")
	}
	if !h.stuck(period, t0.Add(2*period)) {
		t.Fatal("no request finished for a period, one waits: not stuck")
	}
}

// TestServeHTTPHealth: under a watchdog, ServeHTTP sends heartbeats once
// ready, stops when a request blocks the handler path for a period, and
// asks for its recycle once, after MaxRequests requests.
func TestServeHTTPHealth(t *testing.T) {
	var beats, recycles atomic.Int32
	block := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/block", func(w http.ResponseWriter, r *http.Request) { <-block })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	drain := make(chan struct{})
	done := make(chan error, 1)
	hp := healthPlan{watchdog: 150 * time.Millisecond, maxRequests: 3,
		heartbeat: func() error { beats.Add(1); return nil }, recycle: func() error { recycles.Add(1); return nil }}
	go func() {
		done <- serveHTTP(&http.Server{Handler: mux}, l, HTTPOptions{Grace: -1}, drain, func() error { return nil }, hp)
	}()
	waitFor(t, "heartbeats while idle", func() bool { return beats.Load() >= 3 })

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for range 4 {
		resp, err := client.Get("http://" + l.Addr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	waitFor(t, "the recycle request", func() bool { return recycles.Load() == 1 })

	blocked := make(chan struct{})
	go func() {
		defer close(blocked)
		if resp, err := client.Get("http://" + l.Addr().String() + "/block"); err == nil {
			resp.Body.Close()
		}
	}()
	// The heartbeats stop: the count stays the same across two periods.
	waitFor(t, "the heartbeats to stop while a request is stuck", func() bool {
		before := beats.Load()
		time.Sleep(2 * hp.watchdog)
		return beats.Load() == before
	})
	if n := recycles.Load(); n != 1 {
		t.Errorf("recycle asked %d times, want once", n)
	}
	close(block)
	<-blocked
	close(drain)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
