package osproc

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/dutchmaster/dutchmaster/actors/core"
)

// Usage is what a running worker's processes hold and have used, for
// `ctl status`: the same processes that Processes counts.
type Usage struct {
	// Processes counts them.
	Processes int
	// RSS is the sum of their resident set sizes, in bytes (memory shared
	// between them is counted once per process, as ps does).
	RSS int64
	// CPU is the processor time they used, user and system: the worker
	// cgroup's cpu.stat (which keeps the time of processes gone), else the
	// sum over the processes, each with that of the children it waited for.
	CPU time.Duration
}

// Usage reads what a running worker's processes use; zero when no such
// worker runs. It reads /proc (and the worker's cgroup) on every call.
func (r *Runtime) Usage(id core.WorkerID) Usage {
	p := r.process(id)
	if p == nil {
		return Usage{}
	}
	var pids []int
	if p.cgroup != nil {
		pids = p.cgroup.pids()
	} else {
		pids = append(descendants(p.pid), r.adoptedOrphans(int(id))...)
	}
	u := Usage{Processes: len(pids)}
	for _, pid := range pids {
		if st, ok := readProcStat(pid); ok {
			u.RSS += st.rss
			u.CPU += st.cpu
		}
	}
	if p.cgroup != nil {
		if cpu, ok := cgroupCPU(p.cgroup.dir); ok {
			u.CPU = cpu
		}
	}
	return u
}

// descendants lists pid and the processes below it that are still its
// descendants.
func descendants(pid int) []int {
	out := []int{pid}
	for _, c := range children(pid) {
		if parentOf(c) == pid { // children lists every process on old kernels
			out = append(out, descendants(c)...)
		}
	}
	return out
}

// The kernel reports times in /proc/PID/stat in USER_HZ ticks, which is
// 100 on every Linux architecture as seen from user space.
const userHZ = 100

var pageSize = int64(os.Getpagesize())

type procStat struct {
	rss int64
	cpu time.Duration
}

// readProcStat reads a process's resident set size and the CPU time of
// it and of its waited-for children from /proc/PID/stat.
func readProcStat(pid int) (procStat, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	return parseProcStat(data)
}

// parseProcStat reads /proc/PID/stat: "pid (comm) state ppid ...", where
// comm may hold spaces and parentheses; after it, utime, stime, cutime
// and cstime are the 12th to 15th fields and rss (pages) the 22nd.
func parseProcStat(data []byte) (procStat, bool) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := bytes.Fields(data[i+1:])
	if len(f) < 22 {
		return procStat{}, false
	}
	var ticks int64
	for _, k := range []int{11, 12, 13, 14} {
		n, err := strconv.ParseInt(string(f[k]), 10, 64)
		if err != nil {
			return procStat{}, false
		}
		ticks += max(n, 0)
	}
	pages, err := strconv.ParseInt(string(f[21]), 10, 64)
	if err != nil {
		return procStat{}, false
	}
	return procStat{rss: pages * pageSize, cpu: time.Duration(ticks) * time.Second / userHZ}, true
}

// cgroupCPU reads usage_usec from a cgroup's cpu.stat, which cgroup v2
// keeps without the cpu controller enabled.
func cgroupCPU(dir string) (time.Duration, bool) {
	data, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return 0, false
	}
	for line := range bytes.Lines(data) {
		f := bytes.Fields(line)
		if len(f) == 2 && string(f[0]) == "usage_usec" {
			us, err := strconv.ParseInt(string(f[1]), 10, 64)
			if err != nil {
				return 0, false
			}
			return time.Duration(us) * time.Microsecond, true
		}
	}
	return 0, false
}

// SampleMemory reads the resident memory of every running worker's
// processes every interval (from /proc, or the worker's cgroup's process
// list: a few small reads per process) and passes the round to send
// while enabled reports true, until ctx is done. Workers that are not
// running yet (their fork is under way) are left out.
func (r *Runtime) SampleMemory(ctx context.Context, every time.Duration, enabled func() bool, send func(core.UsageSampled)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !enabled() {
			continue
		}
		r.mu.Lock()
		ids := make([]core.WorkerID, 0, len(r.procs))
		for id := range r.procs {
			ids = append(ids, id)
		}
		r.mu.Unlock()
		if len(ids) == 0 {
			continue
		}
		slices.Sort(ids)
		in := core.UsageSampled{Samples: make([]core.RSSSample, 0, len(ids))}
		for _, id := range ids {
			if u := r.Usage(id); u.Processes > 0 {
				in.Samples = append(in.Samples, core.RSSSample{Worker: id, RSS: u.RSS})
			}
		}
		send(in)
	}
}
