package osproc

import (
	"bytes"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/actors/core"
)

// reapGrace is how long a child must have been a zombie before the reaper
// takes it. The master's own waits (os/exec, for workers and before-fork
// commands) reap their children as soon as they exit; a zombie still there
// after this long is an orphan nobody in the master waits for.
const reapGrace = time.Second

// Reaper reaps the zombies of orphans the master adopted, which is the
// job of PID 1, and of a child subreaper (PR_SET_CHILD_SUBREAPER): when a
// worker's own child outlives the worker, it becomes the master's child,
// and once it exits only the master can clear its process table entry.
//
// It never takes a worker (workers are waited for by the runtime; the
// reaper learns them from the cluster's steps, through Observe) and never
// a child of the master younger than reapGrace as a zombie, so it does
// not steal an exit status an os/exec Wait is about to collect.
type Reaper struct {
	log     zerolog.Logger
	workers *workerPIDs
	stop    chan struct{}
	done    chan struct{}
}

// StartReaper starts reaping; Close ends it.
func StartReaper(log zerolog.Logger) *Reaper {
	r := &Reaper{log: log, workers: newWorkerPIDs(), stop: make(chan struct{}), done: make(chan struct{})}
	go r.run()
	return r
}

// Close stops reaping and waits until the reaper is done.
func (r *Reaper) Close() {
	close(r.stop)
	<-r.done
}

// Observe keeps the workers' pids from the cluster's steps (an
// actors.Options.Observe), so that the reaper never takes a worker.
func (r *Reaper) Observe(_ time.Time, in core.Input, _ []core.Decision) {
	switch in := in.(type) {
	case core.WorkerSpawned:
		r.workers.add(int(in.Worker), in.PID)
	case core.WorkerExited:
		r.workers.remove(int(in.Worker))
	}
}

func (r *Reaper) run() {
	defer close(r.done)
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, syscall.SIGCHLD)
	defer signal.Stop(sigchld)
	var pending map[int]string // zombie children seen at the last scan, with their start time
	var scan <-chan time.Time
	for {
		select {
		case <-r.stop:
			return
		case <-sigchld:
			if scan == nil {
				scan = time.After(reapGrace)
			}
		case <-scan:
			scan = nil
			next := map[int]string{}
			for pid, started := range zombieChildren() {
				if r.workers.has(pid) {
					continue
				}
				if pending[pid] == started {
					var ws unix.WaitStatus
					if got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); err == nil && got == pid {
						r.log.Debug().Int("pid", pid).Int("status", ws.ExitStatus()).Msg("reaped an adopted orphan")
					}
					continue
				}
				next[pid] = started
			}
			pending = next
			if len(pending) > 0 {
				scan = time.After(reapGrace)
			}
		}
	}
}

// zombieChildren lists the master's children that are zombies, with
// their start times (so that a reused pid is not mistaken for the same
// process).
func zombieChildren() map[int]string {
	self := os.Getpid()
	out := map[int]string{}
	for _, pid := range children(self) {
		data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		// "pid (comm) S ppid ... starttime(22nd) ...": split after the
		// command name, which may hold spaces and parentheses.
		i := bytes.LastIndexByte(data, ')')
		if i < 0 {
			continue
		}
		f := bytes.Fields(data[i+1:])
		if len(f) < 20 || string(f[0]) != "Z" || string(f[1]) != strconv.Itoa(self) {
			continue
		}
		out[pid] = string(f[19])
	}
	return out
}

// children lists pid's children from /proc/PID/task/*/children, or, on a
// kernel without it, every process.
func children(pid int) []int {
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
	var out []int
	seen := false
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		seen = true
		for _, f := range bytes.Fields(data) {
			if n, err := strconv.Atoi(string(f)); err == nil {
				out = append(out, n)
			}
		}
	}
	if seen {
		return out
	}
	all, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range all {
		if n, err := strconv.Atoi(filepath.Base(p)); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// SetSubreaper makes this process a child subreaper
// (PR_SET_CHILD_SUBREAPER): the orphans of its descendants become its
// children, for a Reaper to reap.
func SetSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("PR_SET_CHILD_SUBREAPER: %w", err)
	}
	return nil
}

// workerPIDs are the pids of the running workers, from the cluster's steps.
type workerPIDs struct {
	mu   sync.Mutex
	pids map[int]bool
	byID map[int]int
}

func newWorkerPIDs() *workerPIDs { return &workerPIDs{pids: map[int]bool{}, byID: map[int]int{}} }

func (w *workerPIDs) add(id, pid int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pids[pid], w.byID[id] = true, pid
}

func (w *workerPIDs) remove(id int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.pids, w.byID[id])
	delete(w.byID, id)
}

func (w *workerPIDs) has(pid int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pids[pid]
}
