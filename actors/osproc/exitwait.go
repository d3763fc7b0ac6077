package osproc

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// A worker's exit is awaited through Go's netpoller on a pidfd, so that
// no OS thread of the master sits blocked in waitid per worker: 256
// workers cost a handful of threads, not 256 more. The wait leaves the
// worker unreaped (WNOWAIT): its pid and process-group id stay ours until
// cmd.Wait reaps it, after the group is killed.

// openExitWatch returns a pollable pidfd for pid, a child of ours that
// has not been reaped (so the pid cannot name anyone else yet), or nil if
// the kernel cannot make one: pidfd_open with PIDFD_NONBLOCK needs Linux
// 5.10. The worker then waits on a blocked thread instead.
func openExitWatch(pid int) *os.File {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil
	}
	// A non-blocking descriptor is registered with the netpoller; a pidfd
	// polls readable once its process has exited.
	return os.NewFile(uintptr(fd), "pidfd")
}

// awaitExit returns true once the worker has exited, leaving it unreaped,
// or false once the runtime is abandoned (Abandon interrupts the wait).
// The pidfd (if any) is closed here, so a worker holds it only while it
// lives.
func (p *process) awaitExit() bool {
	p.mu.Lock()
	w := p.exitWatch
	p.mu.Unlock()
	if w != nil {
		err := pollExit(w)
		for errors.Is(err, os.ErrDeadlineExceeded) {
			if p.runtime.gate.isAbandoned() {
				return false
			}
			err = pollExit(w)
		}
		p.mu.Lock()
		w.Close()
		p.exitWatch = nil
		p.mu.Unlock()
		if err == nil {
			return true
		}
		// The pidfd could not be polled or waited on (a kernel without
		// waitid(P_PIDFD), say): wait the old way, which returns at once
		// if the worker is already gone.
	}
	// Blocks this goroutine's thread until the worker exits; used only
	// where the kernel offers no pollable pidfd.
	var info unix.Siginfo
	for unix.Waitid(unix.P_PID, p.pid, &info, unix.WEXITED|unix.WNOWAIT, nil) == unix.EINTR {
	}
	return true
}

// pollExit parks the calling goroutine (not its thread) until the process
// behind pidfd has exited. The check runs before every park, so an exit
// between the check and the park still wakes it (the poller keeps the
// readiness edge).
func pollExit(pidfd *os.File) error {
	rc, err := pidfd.SyscallConn()
	if err != nil {
		return err
	}
	var waitErr error
	err = rc.Read(func(fd uintptr) bool {
		for {
			// si_signo stays 0 while the process runs (WNOHANG) and is
			// SIGCHLD once it has exited.
			var info unix.Siginfo
			err := unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOWAIT|unix.WNOHANG, nil)
			switch {
			case err == unix.EINTR:
				continue
			case err != nil:
				waitErr = err
				return true
			}
			return info.Signo != 0
		}
	})
	return errors.Join(err, waitErr)
}
