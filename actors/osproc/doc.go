// Package osproc is the real actors.Runtime: worker processes on the OS,
// with the listeners, IPC channel and notify socket of package sockets.
//
// Each worker is started through a trampoline: a re-exec of the current
// binary that sets LISTEN_PID to its own pid and then execs the worker
// command (os/exec fixes the environment before the child's pid exists,
// and socket-activation receivers insist on it). Importing this package
// installs the trampoline, so any binary that can start workers can also
// be the trampoline.
//
// A worker gets its own process group (a terminal's Ctrl-C reaches only
// the master) and dies with the master (parent-death signal SIGKILL). A
// master that calls ServeMainThread from main forks every worker from its
// main thread, and can re-execute itself there (Exec) keeping its workers
// (mainthread.go).
// Drain sends {"event":"disconnect"} and closes the IPC channel, or the
// stop signal to the worker's process, or both; Kill sends SIGKILL to the
// worker's whole process group, so children it spawned go too. Where the
// master may create cgroups (cgroup.go), each worker is also forked into a
// cgroup of its own, killed and removed when the worker exits, so that
// even the daemons it started (which left its process group) go with it;
// elsewhere, a subreaper master ends the orphans it adopted from the
// worker (orphans.go). Under a process limit, workers get a lower one than
// the master, which keeps room for its own threads (limits.go).
//
// The master's other dealings with the OS sit beside the runtime, each in
// a file of its own: the before-fork command (BeforeForkHook, started and
// killed the way a worker is), the user and group workers run as
// (Credential), the early check of the worker command (FindCommand), the
// reaping of adopted orphans (SetSubreaper, Reaper), the pidfile
// (CreatePIDFile) and the descriptor and process limits
// (WarnDescriptorLimit, WarnProcessLimit).
//
// For an upgrade in place (handover.go), Pause stops every reader of the
// runtime at a safe point, Handover gives the state and the descriptors
// (by number) the next image needs, and that image's Adopt and Reattach
// take the running workers over, their output pipes (made by the runtime,
// not by os/exec, for this), unfinished lines and exits included; Unpause
// goes on if the exec failed.
//
// With Config.NodeCluster the runtime is also the Node.js cluster primary
// (package sockets/nodecluster): each worker's channel has a session that
// answers Node's internal messages, the servers its listen() asks for come
// from one registry per runtime (shared by every generation, closed by
// Close), and the IPC drain of a worker that said online is the cluster's
// disconnect, with the channel left open.
package osproc
