package osproc

import (
	"os/exec"
	"syscall"
)

// ownProcessGroup prepares cmd, before Start, the way the runtime starts
// every child of its own (workers and the before-fork command): as the
// leader of a process group of its own, so that a terminal's Ctrl-C
// reaches only the master and one kill takes whatever the child started,
// and with SIGKILL as its parent-death signal, so that it dies with the
// master. cred, if not nil, runs it as another user.
//
// The parent-death signal is tied to the OS thread that forks, not to the
// process: it fires when that thread exits. So every child is started
// through startOnMainThread: while ServeMainThread serves, the main thread
// forks it, the one thread that lives as long as the process and the one
// that calls execve when the master re-executes itself (execve ends every
// other thread, and would kill the children they forked); the signal then
// fires only when the master dies. Otherwise (no re-exec possible) the
// caller's thread forks: Go ends a thread only when a goroutine exits
// while locked to it, and this package locks only the main goroutine.
//
// The returned killGroup sends SIGKILL to the child's whole process group,
// once the child started. Before the child is reaped its group's id is
// surely its own; after Wait the id stays reserved only while a member of
// the group lives, so a worker's group is killed before Wait reaps it.
func ownProcessGroup(cmd *exec.Cmd, cred *syscall.Credential) (killGroup func() error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: cred}
	return func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}
