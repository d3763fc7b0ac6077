package loadtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat:
// 100 on every Linux configuration Go supports.
const clockTicks = 100

// CPU returns the CPU time pid has used so far, user plus system, all its
// threads (not its children): /proc/<pid>/stat fields 14 and 15.
func CPU(pid int) (time.Duration, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	// f[0] is field 3 (state), so utime (14) and stime (15) are f[11], f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	var ticks int64
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// statFields returns the fields of /proc/<pid>/stat after the command
// name: f[0] is field 3, the state.
func statFields(pid int) ([]string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	// "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: no ')' in %q", pid, s)
	}
	return strings.Fields(s[i+1:]), nil
}

// Status reads the numeric fields of /proc/<pid>/status that a run
// reports: VmRSS, VmHWM (in bytes) and Threads.
type Status struct {
	RSS, PeakRSS int64 // bytes
	Threads      int
}

// ReadStatus reads /proc/<pid>/status.
func ReadStatus(pid int) (Status, error) {
	var st Status
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	found := 0
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			st.RSS, found = n<<10, found+1
		case "VmHWM":
			st.PeakRSS, found = n<<10, found+1
		case "Threads":
			st.Threads, found = int(n), found+1
		}
	}
	if found != 3 {
		return st, fmt.Errorf("/proc/%d/status: VmRSS, VmHWM or Threads missing", pid)
	}
	return st, sc.Err()
}

// PeakRSS returns pid's peak resident set size in bytes (VmHWM).
func PeakRSS(pid int) (int64, error) {
	st, err := ReadStatus(pid)
	return st.PeakRSS, err
}

// RunTime returns the CPU time pid's threads alive now have used, in
// nanoseconds (the first field of /proc/<pid>/task/*/schedstat): finer
// than CPU's clock ticks, for short quiet periods.
func RunTime(pid int) (time.Duration, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var total time.Duration
	for _, t := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue // the thread exited meanwhile
		}
		f := strings.Fields(string(data))
		if len(f) == 0 {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/task/%s/schedstat: %w", pid, t.Name(), err)
		}
		total += time.Duration(ns)
	}
	return total, nil
}

// FDs counts pid's open descriptors.
func FDs(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents), err
}

// Children returns the pids whose parent is pid.
func Children(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f, err := statFields(p); err == nil && len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

// Alive reports whether pid is a process that is not a zombie.
func Alive(pid int) bool {
	f, err := statFields(pid)
	return err == nil && len(f) > 0 && f[0] != "Z"
}

// WorkerAlive reports whether worker id, once pid, still runs. A pid is
// reused once its process is gone (pid_max is 32768 on many machines, a
// long soak forks thousands of workers, and other programs fork too), so
// a live process counts only if its environment names the worker
// (DUTCHMASTER_WORKER_ID). If the environment cannot be read (a worker
// run as another user), the pid alone decides.
func WorkerAlive(pid, id int) bool {
	if !Alive(pid) {
		return false
	}
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return Alive(pid)
	}
	want := fmt.Sprintf("DUTCHMASTER_WORKER_ID=%d", id)
	for kv := range bytes.SplitSeq(env, []byte{0}) {
		if string(kv) == want {
			return true
		}
	}
	return false
}

// PeerPorts returns the remote ports of the TCP connections that pid holds
// open with local port port: for a worker, the client-side ports of the
// connections it has accepted. It takes a duplicate of each of pid's
// socket descriptors (pidfd_getfd, Linux 5.6; it needs the right to
// ptrace pid) and asks it for its addresses. Stop the process first
// (StopAndWait), for a reading that cannot change.
func PeerPorts(pid, port int) (map[int]bool, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	peers := map[int]bool{}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil || !strings.HasPrefix(target, "socket:[") {
			continue
		}
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fd, err := unix.PidfdGetfd(pidfd, n, 0)
		if err != nil {
			if errors.Is(err, unix.EBADF) {
				continue // closed meanwhile
			}
			return nil, fmt.Errorf("pidfd_getfd %d of pid %d: %w", n, pid, err)
		}
		local, lerr := unix.Getsockname(fd)
		remote, rerr := unix.Getpeername(fd)
		unix.Close(fd)
		if lerr != nil || rerr != nil || inetPort(local) != port {
			continue // not a connected TCP socket on port
		}
		if p := inetPort(remote); p > 0 {
			peers[p] = true
		}
	}
	return peers, nil
}

// inetPort is the port of an IPv4 or IPv6 address, -1 for another kind.
func inetPort(sa unix.Sockaddr) int {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Port
	case *unix.SockaddrInet6:
		return a.Port
	}
	return -1
}

// StopAndWait sends SIGSTOP to pid through pidfd-backed p and waits, at
// most patience, until every thread of pid has stopped: kill(2) returns
// before they have, and a thread still running could accept a connection.
func StopAndWait(p *os.Process, patience time.Duration) error {
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	deadline := time.Now().Add(patience)
	for {
		stopped, err := allStopped(p.Pid)
		if err != nil || stopped {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d: threads still running %s after SIGSTOP", p.Pid, patience)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// allStopped reports whether every thread of pid is stopped (state T).
func allStopped(pid int) (bool, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return false, err
	}
	for _, t := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, t.Name()))
		if err != nil {
			continue // gone
		}
		s := string(data)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || i+2 >= len(s) {
			continue
		}
		if st := s[i+2]; st != 'T' && st != 't' && st != 'Z' && st != 'X' {
			return false, nil
		}
	}
	return true, nil
}
