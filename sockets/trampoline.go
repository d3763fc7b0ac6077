package sockets

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"github.com/dutchmaster/dutchmaster/sockets/wire"
	"golang.org/x/sys/unix"
)

// ExecWithListenPID replaces the calling process with argv, with
// LISTEN_PID set to the calling process's pid, which exec keeps: the worker
// then finds its own pid there, as systemd-style receivers require
// (go-systemd's activation, gunicorn, puma, unicorn, libsystemd).
//
// It is the body of the tiny re-exec of the dutchmaster binary that sits
// between the master and a worker, because os/exec fixes a child's
// environment before the child's pid exists. The runtime starts
// "dutchmaster <hidden subcommand> COMMAND ARGS..." with the worker's
// ExtraFiles and Environ, and the subcommand calls this first thing.
//
// Before exec it:
//   - resolves argv[0] through PATH (exec.LookPath, so a command found only
//     through a relative PATH entry is refused);
//   - sets LISTEN_PID when LISTEN_FDS is set, removes it otherwise, and
//     always removes LISTEN_PIDFDID (it would name the wrong process);
//   - sets WATCHDOG_PID when WATCHDOG_USEC is set, removes it otherwise;
//   - makes sure the inherited descriptors named by LISTEN_FDS and
//     NODE_CHANNEL_FD are open and not close-on-exec, so a mistake shows up
//     here, as an error, rather than as a worker with missing sockets.
//
// It returns only on failure.
func ExecWithListenPID(argv []string) error {
	if len(argv) == 0 || argv[0] == "" {
		return errors.New("exec worker: no command")
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("exec worker: %w", err)
	}
	if err := keepInherited(); err != nil {
		return fmt.Errorf("exec worker %s: %w", argv[0], err)
	}
	os.Unsetenv(wire.EnvListenPIDFDID)
	if _, ok := os.LookupEnv(wire.EnvListenFDs); ok {
		os.Setenv(wire.EnvListenPID, strconv.Itoa(os.Getpid()))
	} else {
		os.Unsetenv(wire.EnvListenPID)
	}
	// The same for the watchdog: WATCHDOG_PID names the process meant to
	// send the heartbeats, the worker itself.
	if _, ok := os.LookupEnv(wire.EnvWatchdogUSec); ok {
		os.Setenv(wire.EnvWatchdogPID, strconv.Itoa(os.Getpid()))
	} else {
		os.Unsetenv(wire.EnvWatchdogPID)
	}
	err = syscall.Exec(path, argv, os.Environ())
	return fmt.Errorf("exec worker %s: %w", path, err)
}

// keepInherited clears close-on-exec on the descriptors the protocol
// variables name, failing if one of them is not open.
func keepInherited() error {
	var fds []int
	if s, ok := os.LookupEnv(wire.EnvListenFDs); ok {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return fmt.Errorf("%s=%q is not a count", wire.EnvListenFDs, s)
		}
		for i := range n {
			fds = append(fds, wire.FirstFD+i)
		}
	}
	if s, ok := os.LookupEnv(wire.EnvChannelFD); ok {
		fd, err := strconv.Atoi(s)
		if err != nil || fd < 0 {
			return fmt.Errorf("%s=%q is not a descriptor", wire.EnvChannelFD, s)
		}
		fds = append(fds, fd)
	}
	for _, fd := range fds {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return fmt.Errorf("inherited fd %d (LISTEN_FDS/NODE_CHANNEL_FD) is not open: %w", fd, err)
		}
	}
	return nil
}
