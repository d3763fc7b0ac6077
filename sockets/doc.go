// Package sockets is everything of dutchmaster that crosses the process
// boundary as a file descriptor, on the master's side:
//
//   - listener specs and binding (ParseSpec, ParseSpecs, Bind, BindAll): the
//     master binds every listener once and keeps it for its whole life, so a
//     connection that arrives while no worker accepts waits in the kernel's
//     queue instead of being refused;
//   - the IPC channel to one worker (NewChannel): a unix socketpair carrying
//     newline-delimited JSON, byte-compatible with Node.js's process.send;
//   - the notify socket (NewNotifySocket): sd_notify datagrams from every
//     worker, told apart by the sender pid the kernel attaches;
//   - what a worker inherits (PlanWorkerFiles) and the LISTEN_PID trampoline
//     (ExecWithListenPID) that makes systemd-style receivers accept it;
//   - CloseOnExecAll, so that a worker inherits nothing it was not given;
//   - Adopt, which wraps a listening socket the master inherited (systemd's
//     socket activation, package sockets/systemd) as a Listener.
//
// Package sockets/wire holds the protocol's names, framing and parsers,
// shared with the worker API; sockets/control is the control socket's
// protocol and client; sockets/systemd is systemd's socket activation.
// Nothing here knows the supervisor: the packages that watch the cluster
// (the control server, sd_notify) are under actors/observers.
//
// The worker protocol itself is docs/protocol.md; the Go side of it for
// applications is package sockets/worker. This package is Linux-only.
//
// Every descriptor this package hands out is close-on-exec in the master; a
// worker receives copies only through exec.Cmd.ExtraFiles, at the positions
// PlanWorkerFiles gives.
package sockets
