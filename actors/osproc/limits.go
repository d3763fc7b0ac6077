package osproc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// descriptorsPerWorker is what one live worker holds of the master's
// descriptors: its IPC socket, the pidfd os.Process holds, and the pidfd
// its exit is awaited on.
const descriptorsPerWorker = 3

// outputDescriptors are the pipes from a worker's stdout and stderr the
// master holds when it logs or keeps worker output (Config.LogOutput,
// Config.Tail): counted for every worker, as it is the default.
const outputDescriptors = 2

// forkSlack covers what forks hold only while they run (the pipe exec
// reports its failure on, both ends of an IPC socketpair, a before-fork
// command's pipes) and the descriptor a client check itself opens.
const forkSlack = 16

// WarnDescriptorLimit says at start-up when the descriptor limit cannot
// hold the workers: each fork past it fails ("too many open files") and
// its slot backs off, which reads as a crash loop rather than as the
// limit it is. A rollout may hold up to 2×workers+max-surge workers at
// once (old ones draining while replacements start). Called once the
// listeners are bound: in the kernel-balanced mode the open descriptors
// then count a socket per balanced listener for each of the workers'
// slots, and each balanced listener's program and maps
// (reuseport.Descriptors); a replacement takes its predecessor's slot, so
// a rollout binds no more (a scale up does: ForkReserve). Go raises the
// soft limit to the hard one at start, so the soft limit read here is the
// one in force.
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
	need := open + (descriptorsPerWorker+outputDescriptors)*alive
	if need > lim {
		log.Warn().Int("limit", lim).Int("needed", need).Int("workers", workers).
			Msg("descriptor limit too low for the workers during a rollout: raise it (ulimit -n, LimitNOFILE=) or forks will fail")
	}
}

// The process limit (RLIMIT_NPROC, ulimit -u) counts every task (process
// or thread) of the master's user, the workers' included. A Go master that
// cannot start a thread aborts, and every worker dies with it; so the
// master keeps room of its own: workers get a lower limit, set by the
// trampoline before it execs the worker (nprocHeadroom below the
// master's), and the master forks no worker once its user's tasks leave
// less than that room. A root master is exempt from the limit, and so
// none of this applies to it.
const nprocHeadroom = 16

// trampolineNprocEnv carries the workers' process limit to the trampoline.
const trampolineNprocEnv = "DUTCHMASTER_TRAMPOLINE_NPROC"

// processLimit is the master's process limit, or 0 where none binds it.
func processLimit() uint64 {
	if os.Getuid() == 0 {
		return 0
	}
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NPROC, &lim) != nil || lim.Cur == unix.RLIM_INFINITY {
		return 0
	}
	return lim.Cur
}

// workerProcessLimit is the process limit workers get; 0: theirs is the
// master's.
func workerProcessLimit(limit uint64) uint64 {
	if limit == 0 {
		return 0
	}
	return max(limit, nprocHeadroom+1) - nprocHeadroom
}

// userTasks counts the tasks whose real user is this process's, as the
// kernel does for the process limit.
func userTasks() uint64 {
	uid := strconv.Itoa(os.Getuid())
	procs, _ := filepath.Glob("/proc/[0-9]*/status")
	var n uint64
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var mine bool
		for line := range strings.Lines(string(data)) {
			if f, ok := strings.CutPrefix(line, "Uid:"); ok {
				ids := strings.Fields(f)
				mine = len(ids) > 0 && ids[0] == uid
			}
			if f, ok := strings.CutPrefix(line, "Threads:"); ok && mine {
				t, _ := strconv.ParseUint(strings.TrimSpace(f), 10, 64)
				n += t
				break
			}
		}
	}
	return n
}

// ErrProcessLimit: a fork would have left the master too little of its
// process limit.
var ErrProcessLimit = errors.New("process limit (ulimit -u, LimitNPROC=) reached: no room for another worker beside the master's own threads")

// checkProcessLimit fails a fork that would leave the master less than
// nprocHeadroom tasks below its limit.
func checkProcessLimit(limit uint64) error {
	if limit == 0 {
		return nil
	}
	if used := userTasks(); used+1 > workerProcessLimit(limit) {
		return fmt.Errorf("%w (%d of %d tasks in use, %d kept for the master)", ErrProcessLimit, used, limit, nprocHeadroom)
	}
	return nil
}

// WarnProcessLimit says at start-up when the process limit cannot hold
// the workers beside the master's room: forks past it fail and back off.
// Each worker counts as one task here; its threads come on top.
func WarnProcessLimit(log zerolog.Logger, workers, maxSurge int) {
	limit := processLimit()
	if limit == 0 {
		return
	}
	need := userTasks() + uint64(2*workers+maxSurge) + nprocHeadroom
	if need > limit {
		log.Warn().Uint64("limit", limit).Uint64("needed", need).Int("workers", workers).Int("kept_for_master", nprocHeadroom).
			Msg("process limit too low for the workers: raise it (ulimit -u, LimitNPROC=) or forks will fail")
	}
}

// limitWorkerProcesses lowers the process limit of the trampoline, and so
// of the worker it execs, to what DUTCHMASTER_TRAMPOLINE_NPROC says.
func limitWorkerProcesses() error {
	s := os.Getenv(trampolineNprocEnv)
	os.Unsetenv(trampolineNprocEnv)
	if s == "" {
		return nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return fmt.Errorf("%s=%q: %w", trampolineNprocEnv, s, err)
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NPROC, &lim); err != nil {
		return err
	}
	// The hard limit goes down too: a worker must not take the master's
	// room back.
	lim.Cur, lim.Max = min(lim.Cur, n), min(lim.Max, n)
	return unix.Setrlimit(unix.RLIMIT_NPROC, &lim)
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
// forks hold while they run. In the kernel-balanced mode a fork into a
// slot that has no socket (a scale up, or a slot back after a scale
// down) binds slotSockets first (Runtime.SlotSockets); reserved for every
// fork, the bound itself being on the safe side of the slots' count.
func ForkReserve(workers, maxSurge, slotSockets int) int {
	return (descriptorsPerWorker+outputDescriptors+slotSockets)*(workers+max(maxSurge, 1)) + forkSlack
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
