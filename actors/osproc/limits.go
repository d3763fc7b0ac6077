package osproc

import (
	"os"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// descriptorsPerWorker is what one live worker holds of the master's
// descriptors: its IPC socket, the pidfd os.Process holds, and the pidfd
// its exit is awaited on.
const descriptorsPerWorker = 3

// WarnDescriptorLimit says at start-up when the descriptor limit cannot
// hold the workers: each fork past it fails ("too many open files") and
// its slot backs off, which reads as a crash loop rather than as the
// limit it is. A rollout may hold up to 2×workers+max-surge workers at
// once (old ones draining while replacements start). Go raises the soft
// limit to the hard one at start, so the soft limit read here is the one
// in force.
func WarnDescriptorLimit(log zerolog.Logger, workers, maxSurge int) {
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) != nil {
		return
	}
	open, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	alive := 2*workers + maxSurge
	need := uint64(len(open) + descriptorsPerWorker*alive)
	if need > lim.Cur {
		log.Warn().Uint64("limit", lim.Cur).Uint64("needed", need).Int("workers", workers).
			Msg("descriptor limit too low for the workers during a rollout: raise it (ulimit -n, LimitNOFILE=) or forks will fail")
	}
}
