package osproc

import (
	"bytes"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Without a cgroup per worker, a process that left its worker's process
// group (a daemon: fork, setsid, fork) escapes the group's kill. With a
// subreaper master (SetSubreaper) it is adopted by the master once its
// parent exits, and its environment, inherited from the worker, names the
// worker it came from (DUTCHMASTER_WORKER_ID): those orphans end with
// their worker, and all of them with the runtime.

// workerIDEnv is the variable that names a worker in its environment and
// that of its descendants.
const workerIDEnv = "DUTCHMASTER_WORKER_ID"

// adoptedOrphans lists the master's children, other than its workers,
// whose environment names a worker: the one given, or any (id < 0).
func (r *Runtime) adoptedOrphans(id int) []int {
	var out []int
	self := os.Getpid()
	for _, pid := range children(self) {
		if parentOf(pid) != self { // children lists every process on old kernels
			continue
		}
		r.mu.Lock()
		worker := r.byPID[pid] != nil
		r.mu.Unlock()
		if worker {
			continue
		}
		if got, ok := environWorker(pid); ok && (id < 0 || got == id) {
			out = append(out, pid)
		}
	}
	return out
}

// environWorker reads the worker id in pid's environment.
func environWorker(pid int) (int, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return 0, false
	}
	for kv := range bytes.SplitSeq(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte(workerIDEnv+"=")); ok {
			id, err := strconv.Atoi(string(v))
			return id, err == nil
		}
	}
	return 0, false
}

// killOrphans sends SIGKILL to the adopted orphans of worker id (any
// worker: id < 0). Each is the master's unreaped child, so its pid is not
// anyone else's; the pidfd keeps it so while the parent is checked again
// (the reaper may have taken it in between). An orphan's own children
// are adopted once it dies, so the scan goes on until it finds none
// (bounded: a process that forks faster than it is killed wins).
func (r *Runtime) killOrphans(id int) {
	for range 20 {
		pids := r.adoptedOrphans(id)
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			fd, err := unix.PidfdOpen(pid, 0)
			if err != nil {
				continue
			}
			if parentOf(pid) == os.Getpid() {
				_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
			}
			unix.Close(fd)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// parentOf reads pid's parent from /proc; 0 if it is gone.
func parentOf(pid int) int {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	f := bytes.Fields(data[i+1:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(string(f[1]))
	return ppid
}
