package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"syscall"
	"testing"
	"time"
)

// TestRollingRestartsLoseNothing is `make bench`'s scenario at a small
// size: 2 workers of the example worker (300 ms boot, 5 ms per request)
// under a closed-loop load of 4 clients, 2 rolling restarts, in both
// connection modes; not one request may fail. The run is paced by counts
// and log events only (each restart after 300 more requests, the next one
// once "restart complete" is logged), never by timing.
func TestRollingRestartsLoseNothing(t *testing.T) {
	bin, err := build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{modeClose, modeKeepAlive} {
		t.Run(mode, func(t *testing.T) {
			cfg := config{
				Workers: 2, Mode: mode, Clients: 4, Restarts: 2,
				Boot: 300 * time.Millisecond, Work: 5 * time.Millisecond,
				Between: 300, MaxRequests: 200_000,
				Timeout: 10 * time.Second, Patience: 30 * time.Second,
			}
			res, log, err := run(cfg, bin)
			if err != nil {
				t.Fatalf("%v\nmaster log:\n%s", err, log)
			}
			if len(res.Restarts) != cfg.Restarts {
				t.Fatalf("%d restarts completed, want %d", len(res.Restarts), cfg.Restarts)
			}
			if res.Failed != 0 {
				detail, _ := json.MarshalIndent(res.FailureDetail, "", "  ")
				t.Errorf("%d of %d requests failed: %v\nfirst failures: %s\nmaster log:\n%s",
					res.Failed, res.Requests, res.Failures, detail, log)
			}
			for i, rs := range res.Restarts {
				if rs.Requests == 0 {
					t.Errorf("restart %d: no request overlapped it, so it proves nothing", i+1)
				}
			}
			if least := cfg.Between * int64(cfg.Restarts+1); res.Requests < least {
				t.Errorf("%d requests, want at least %d", res.Requests, least)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("dial: %w", syscall.ECONNREFUSED), failRefused},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), failReset},
		{fmt.Errorf("write: %w", syscall.EPIPE), failReset},
		{io.EOF, failEOF},
		{io.ErrUnexpectedEOF, failEOF},
		{fmt.Errorf("read: %w", errTimeout{}), failTimeout},
		{errors.New("something else"), failOther},
	} {
		if got := classify(c.err); got != c.want {
			t.Errorf("classify(%v) = %s, want %s", c.err, got, c.want)
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
	got := stats(v)
	want := latencyStats{N: 200, P50: 100, P99: 198, Max: 200}
	if got != want {
		t.Errorf("stats = %+v, want %+v", got, want)
	}
	if got := stats(nil); got != (latencyStats{}) {
		t.Errorf("stats(nil) = %+v", got)
	}
}
