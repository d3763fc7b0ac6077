package osproc

import (
	"fmt"
	"os"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// descriptorsPerWorker is what one live worker holds of the master's
// descriptors: its IPC socket, the pidfd os.Process holds, and the pidfd
// its exit is awaited on.
const descriptorsPerWorker = 3

// outputDescriptors are the pipes from a worker's stdout and stderr the
// master holds when it logs worker output.
const outputDescriptors = 2

// forkSlack covers what forks hold only while they run (the pipe exec
// reports its failure on, both ends of an IPC socketpair, a before-fork
// command's pipes) and the descriptor a client check itself opens.
const forkSlack = 16

// WarnDescriptorLimit says at start-up when the descriptor limit cannot
// hold the workers: each fork past it fails ("too many open files") and
// its slot backs off, which reads as a crash loop rather than as the
// limit it is. A rollout may hold up to 2×workers+max-surge workers at
// once (old ones draining while replacements start). Go raises the soft
// limit to the hard one at start, so the soft limit read here is the one
// in force.
func WarnDescriptorLimit(log zerolog.Logger, workers, maxSurge int) {
	lim, err := DescriptorLimit()
	if err != nil {
		return
	}
	open, err := OpenDescriptors()
	if err != nil {
		return
	}
	alive := 2*workers + maxSurge
	need := open + descriptorsPerWorker*alive
	if need > lim {
		log.Warn().Int("limit", lim).Int("needed", need).Int("workers", workers).
			Msg("descriptor limit too low for the workers during a rollout: raise it (ulimit -n, LimitNOFILE=) or forks will fail")
	}
}

// DescriptorLimit is the process's descriptor limit in force
// (RLIMIT_NOFILE's soft limit).
func DescriptorLimit() (int, error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	return int(min(lim.Cur, 1<<30)), nil
}

// OpenDescriptors counts the process's open descriptors. It needs one
// descriptor itself, so it fails when none is left.
func OpenDescriptors() (int, error) {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	// The directory's own descriptor is among them.
	return len(names) - 1, err
}

// ForkReserve is how many descriptors the master keeps free for its
// forks, so that none of its own clients (control socket, metrics) can
// make a fork fail: from the steady state of workers, a rollout adds
// workers+maxSurge workers (2×workers+maxSurge at once), each holding
// descriptorsPerWorker, and the pipes of its output when logged
// (reserved always: the setting may change at a reload), plus what the
// forks hold while they run.
func ForkReserve(workers, maxSurge int) int {
	return (descriptorsPerWorker+outputDescriptors)*(workers+max(maxSurge, 1)) + forkSlack
}

// RoomForClient is nil while a client connection may take a descriptor:
// the open descriptors, one more and the reserve for forks stay within
// limit. Otherwise it says how close the master is to its limit.
func RoomForClient(limit, reserve int) error {
	open, err := OpenDescriptors()
	if err != nil {
		return fmt.Errorf("cannot count open descriptors: %w", err)
	}
	if open+1+reserve > limit {
		return fmt.Errorf("%d of %d descriptors open, %d kept for forking workers", open, limit, reserve)
	}
	return nil
}
