package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Defaults of HTTPOptions. Grace + ShutdownTimeout + Linger stay under the
// master's default --kill-timeout of 30 s.
const (
	DefaultGrace           = 2 * time.Second
	DefaultShutdownTimeout = 25 * time.Second
	DefaultLinger          = 500 * time.Millisecond
)

// HTTPOptions tunes ServeHTTPWith. Zero values mean the defaults.
type HTTPOptions struct {
	// Grace is how long after the drain begins the server keeps answering
	// on its open connections, every HTTP/1 response with
	// "Connection: close", before it shuts down. It ends early once no
	// connection is open. Default DefaultGrace (2 s); negative: none.
	Grace time.Duration
	// ShutdownTimeout bounds http.Server.Shutdown after the grace: requests
	// still running then have their connections closed. Default
	// DefaultShutdownTimeout (25 s).
	ShutdownTimeout time.Duration
	// Linger bounds the lingering close of each connection the server
	// closes during the drain (see ServeHTTP). Default DefaultLinger
	// (500 ms); negative: plain close.
	Linger time.Duration
	// OnDrain, if set, is called once when the drain begins, right after
	// the listener is closed (no connection is accepted any more).
	OnDrain func()
	// Alive, if set, is asked before each heartbeat (under --watchdog):
	// an error skips it, so the master finds the worker hung. Without it,
	// a heartbeat proves that the handlers make progress: it is skipped
	// while a request has run a whole watchdog period and none finished
	// meanwhile. A server whose requests legitimately run that long
	// (long polls, streams) sets an Alive of its own.
	Alive func() error
}

func (o HTTPOptions) withDefaults() HTTPOptions {
	if o.Grace == 0 {
		o.Grace = DefaultGrace
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = DefaultShutdownTimeout
	}
	if o.Linger == 0 {
		o.Linger = DefaultLinger
	}
	return o
}

// ServeHTTP serves srv on l until the master drains this worker, then
// drains without dropping a request; it is ServeHTTPWith with default
// options. See the package documentation for what it guarantees.
func ServeHTTP(srv *http.Server, l net.Listener) error {
	return ServeHTTPWith(srv, l, HTTPOptions{})
}

// ServeHTTPWith serves srv on l until Drained closes:
//
//  1. As soon as the server accepts on l, it calls Ready.
//  2. When Drained closes, it closes l: this worker accepts nothing more,
//     and connections not yet accepted wait in the shared socket's queue
//     for the other workers (the master keeps the socket open).
//  3. For Grace, open connections are served as usual, except that every
//     HTTP/1 response carries "Connection: close": a keep-alive client
//     that sends another request on an old connection gets its answer and
//     then a cleanly closed connection, and opens a new one, which reaches
//     another worker.
//  4. Then srv.Shutdown, bounded by ShutdownTimeout: connections still idle
//     are closed, running requests finish; after the bound, srv.Close.
//
// It serves TLS (srv.ServeTLS) when srv.TLSConfig has a certificate. It
// wraps srv.Handler (http.DefaultServeMux when nil) and srv.ConnState
// (chaining the one set), so srv must not be in use elsewhere.
//
// It returns nil after a drain in which every request finished, an error
// wrapping context.DeadlineExceeded when ShutdownTimeout cut requests
// short, Serve's error if serving failed before any drain (including
// http.ErrServerClosed when srv was shut down by someone else), or Ready's
// error, after shutting srv down, if readiness could not be reported.
func ServeHTTPWith(srv *http.Server, l net.Listener, o HTTPOptions) error {
	in := current()
	return serveHTTP(srv, l, o, Drained(), in.ready, in.healthPlan())
}

// healthPlan is what ServeHTTP does for the master's watchdog and
// recycling.
type healthPlan struct {
	watchdog    time.Duration
	maxRequests int64
	heartbeat   func() error
	recycle     func() error
}

func (in *inherited) healthPlan() healthPlan {
	return healthPlan{watchdog: in.watchdog, maxRequests: in.maxRequests, heartbeat: Heartbeat, recycle: RequestRecycle}
}

func serveHTTP(srv *http.Server, l net.Listener, o HTTPOptions, drained <-chan struct{}, ready func() error, hp healthPlan) error {
	o = o.withDefaults()
	var hl *health
	if hp.watchdog > 0 || hp.maxRequests > 0 {
		next := srv.Handler
		if next == nil {
			next = http.DefaultServeMux
		}
		hl = newHealth(next, hp.maxRequests, hp.recycle)
		srv.Handler = hl
	}
	d := newDrainState(o.Linger)
	d.install(srv)
	dl := &drainListener{Listener: l, d: d, accepting: make(chan struct{})}

	served := make(chan error, 1)
	go func() {
		if hasCertificate(srv) {
			served <- srv.ServeTLS(dl, "", "")
		} else {
			served <- srv.Serve(dl)
		}
	}()
	select {
	case <-dl.accepting:
	case err := <-served:
		return err
	}
	if err := ready(); err != nil && !errors.Is(err, ErrDisconnected) {
		// ErrDisconnected means the master is draining us already: Drained
		// closes at the channel's EOF. Anything else: we will never count as
		// ready, so stop rather than wait for the master's ready timeout.
		srv.Close()
		<-served
		return fmt.Errorf("worker: report ready: %w", err)
	}
	if hl != nil && hp.watchdog > 0 {
		// From readiness on, as the master's watchdog counts; the
		// heartbeats stop with the drain (the channel closes then).
		stop := make(chan struct{})
		defer close(stop)
		go hl.beat(hp.watchdog, o.Alive, hp.heartbeat, stop, drained)
	}

	select {
	case err := <-served:
		return err
	case <-drained:
	}
	d.begin()
	dl.Close()
	<-served // Serve returns once the listener is closed; connections live on
	if o.OnDrain != nil {
		o.OnDrain()
	}
	d.waitGrace(o.Grace)

	ctx, cancel := context.WithTimeout(context.Background(), o.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(ctx)
	if err != nil {
		srv.Close()
		err = fmt.Errorf("worker: requests still running after %v were cut short: %w", o.ShutdownTimeout, err)
	}
	d.lingering.Wait()
	return err
}

func hasCertificate(srv *http.Server) bool {
	c := srv.TLSConfig
	return c != nil && (len(c.Certificates) > 0 || c.GetCertificate != nil || c.GetConfigForClient != nil)
}
