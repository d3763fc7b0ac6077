// Package systemd is the master's side of systemd's socket activation
// (sd_listen_fds(3)): ListenFDs takes the sockets systemd passed to the
// master (LISTEN_FDS, LISTEN_FDNAMES, meant for this process only when
// LISTEN_PID is its pid) and removes the variables, so that no child ever
// sees them; Match pairs them with the listener specs by name. A socket
// systemd holds survives a restart of the master: connections wait in its
// queue meanwhile.
//
// The master's sd_notify (READY=1, RELOADING=1, STOPPING=1, STATUS=, the
// watchdog) follows the cluster's steps, so it lives with the other
// observers of the cluster, in actors/observers/sdnotify.
//
// Workers never see the master's variables: sockets.WorkerFiles strips
// every protocol variable from their environment and sets its own.
package systemd
