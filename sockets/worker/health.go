package worker

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dutchmaster/dutchmaster/sockets/wire"
)

// Heartbeat tells the master's watchdog (--watchdog) that this worker is
// alive: {"event":"heartbeat"} on the IPC channel, else WATCHDOG=1 to
// NOTIFY_SOCKET. ServeHTTP sends heartbeats by itself; a worker that
// serves otherwise calls it at least every WatchdogInterval, from the
// code whose progress shows the worker works (its event loop, its
// request path), never from a bare timer: a timer keeps ticking in a
// worker whose every handler is stuck.
func Heartbeat() error {
	in := current()
	switch {
	case in.ch != nil:
		return in.ch.send(wire.Event{Event: wire.EventHeartbeat})
	case in.chErr != nil:
		return in.chErr
	case in.notifyAddr != "":
		return notify(in.notifyAddr, "WATCHDOG=1")
	}
	return nil
}

// WatchdogInterval is how often the master wants a heartbeat
// (WATCHDOG_USEC, when WATCHDOG_PID is this process), or 0 when it wants
// none.
func WatchdogInterval() time.Duration { return current().watchdog }

// MaxRequests is the number of requests after which the master wants
// this worker recycled (DUTCHMASTER_MAX_REQUESTS), or 0. ServeHTTP counts
// them and asks for the recycle itself.
func MaxRequests() int64 { return current().maxRequests }

// RequestRecycle asks the master to recycle this worker because it served
// its MaxRequests: {"event":"request-restart","reason":"max-requests"}.
// The master replaces it when its turn comes (one recycle at a time);
// Drained closes once the replacement listens.
func RequestRecycle() error {
	return Send(wire.Event{Event: wire.EventRequestRestart, Reason: wire.ReasonMaxRequests})
}

// health wraps a server's handler: it counts requests for MaxRequests and
// proves the handler path alive for the heartbeats.
type health struct {
	next        http.Handler
	maxRequests int64
	served      atomic.Int64
	asked       atomic.Bool
	recycle     func() error

	mu       sync.Mutex
	inFlight map[*http.Request]time.Time // running requests and when each began
	finished time.Time                   // when the last request finished
}

func newHealth(next http.Handler, maxRequests int64, recycle func() error) *health {
	return &health{next: next, maxRequests: maxRequests, recycle: recycle, inFlight: map[*http.Request]time.Time{}}
}

func (h *health) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.inFlight[r] = time.Now()
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.inFlight, r)
		h.finished = time.Now()
		h.mu.Unlock()
		if n := h.served.Add(1); h.maxRequests > 0 && n >= h.maxRequests && h.asked.CompareAndSwap(false, true) {
			// Off the request's path: the answer goes out first.
			go h.recycle()
		}
	}()
	h.next.ServeHTTP(w, r)
}

// stuck reports whether the handler path made no progress for period: a
// request has waited that long and none finished meanwhile. A server
// whose handlers are all blocked (a deadlock, a dependency that never
// answers) is stuck; an idle one is not.
func (h *health) stuck(period time.Duration, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if now.Sub(h.finished) < period {
		return false
	}
	for _, began := range h.inFlight {
		if now.Sub(began) >= period {
			return true
		}
	}
	return false
}

// beat sends a heartbeat every period/3 while the handler path is alive
// (and alive, if set, says so), until stop or drained closes.
func (h *health) beat(period time.Duration, alive func() error, send func() error, stop, drained <-chan struct{}) {
	t := time.NewTicker(period / 3)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-drained:
			return
		case now := <-t.C:
			if h.stuck(period, now) {
				continue
			}
			if alive != nil && alive() != nil {
				continue
			}
			_ = send() // a lost heartbeat is the watchdog's to judge
		}
	}
}
