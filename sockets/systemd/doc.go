// Package systemd is the master's side of systemd's two protocols
// (../shared reference: sd_listen_fds(3), sd_notify(3)):
//
//   - socket activation: ListenFDs takes the sockets systemd passed to
//     the master (LISTEN_FDS, LISTEN_FDNAMES, meant for this process only
//     when LISTEN_PID is its pid) and removes the variables, so that no
//     child ever sees them; Match pairs them with the --listen specs by
//     name. A socket systemd holds survives a restart of the master:
//     connections wait in its queue meanwhile.
//   - sd_notify: Notifier tells systemd when the cluster is ready
//     (READY=1, the first generation listens), when a rolling restart
//     begins and ends (RELOADING=1 with MONOTONIC_USEC, then READY=1),
//     when the master stops (STOPPING=1), with a one-line STATUS=, and
//     pets the watchdog (WATCHDOG=1) while the cluster actor answers.
//
// Workers never see the master's variables: sockets.WorkerFiles strips
// every protocol variable from their environment and sets its own.
package systemd
