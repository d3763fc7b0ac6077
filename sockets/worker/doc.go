// Package worker is the Go side of dutchmaster's worker protocol, for
// applications that run under dutchmaster. It imports only the standard
// library (and sockets/internal/wire, the protocol's constants and framing),
// never the supervisor.
//
// A worker serves on sockets the master bound, says when it is ready, and
// drains when asked:
//
//	l, err := worker.Listener("web") // --listen web=tcp://:8080
//	if err != nil {
//		log.Fatal(err)
//	}
//	srv := &http.Server{Handler: mux}
//	if err := worker.ServeHTTP(srv, l); err != nil {
//		log.Fatal(err)
//	}
//	// drained: exit, the master has started a replacement already
//
// # What it reads
//
// The first call of any function of this package claims what the master
// passed, once, and removes the variables from the environment so that
// child processes do not inherit them or the descriptors (so call one, e.g.
// Sockets, before starting any child process):
//
//   - LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID (systemd's socket
//     activation): the sockets at descriptors 3, 4, ...; they are ignored
//     (ErrNotActivated) unless LISTEN_PID is this process. Their
//     descriptors are replaced by close-on-exec duplicates.
//   - NODE_CHANNEL_FD and NODE_CHANNEL_SERIALIZATION_MODE (Node.js's IPC
//     channel, newline-delimited JSON): for Ready, RequestRestart, Send, and
//     the master's drain request.
//   - NOTIFY_SOCKET (sd_notify): for Ready when there is no IPC channel.
//   - WATCHDOG_USEC and WATCHDOG_PID (--watchdog): ServeHTTP sends a
//     Heartbeat every third of the period while its handlers make progress.
//   - DUTCHMASTER_MAX_REQUESTS (--max-requests): ServeHTTP counts its
//     requests and asks for its recycle (RequestRecycle) once it reaches it.
//
// Run by hand, without these, Listener returns an error wrapping
// ErrNotActivated (fall back to net.Listen), Ready does nothing and Drained
// closes on SIGTERM only.
//
// # What ServeHTTP guarantees
//
// Given a master that drains this worker only after its replacement is
// ready (dutchmaster's invariant), ServeHTTP drops no request:
//
//   - Readiness is reported only once the server accepts, so the master
//     never drains the old worker before this one takes connections.
//   - On drain the listener is closed first: connections this worker has
//     not accepted stay queued in the socket, which the master and the other
//     workers still hold, and are served there.
//   - Requests in flight finish (up to HTTPOptions.ShutdownTimeout, 25 s by
//     default; the master's kill timeout, 30 s by default, is the hard
//     bound).
//   - Keep-alive connections are not closed under a client's feet: for a
//     grace period (HTTPOptions.Grace, 2 s) responses carry
//     "Connection: close" so clients move to new connections on their own,
//     and connections closed during the drain are closed with a lingering
//     half-close, so a request that races the close meets a clean end of
//     stream, is not processed, and can be retried (linger.go has the
//     details).
//
// What it cannot promise: a client that sends a non-idempotent request on a
// connection idle through the whole grace, at the very moment the server
// closes it, gets an end of stream instead of a response, and a client that
// does not retry reports an error. That is HTTP/1.1's own race, reduced here
// to connections idle for the whole grace; a longer Grace narrows it.
// HTTP/2 connections are drained by http.Server.Shutdown's GOAWAY. Hijacked
// connections (WebSocket) are the application's: use
// http.Server.RegisterOnShutdown or watch Drained.
package worker
