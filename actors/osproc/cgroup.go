package osproc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/actors/core"
)

// Each worker runs in a cgroup of its own, so that everything it starts
// ends with it, however it got away: a daemon that forked twice and
// called setsid has left the worker's process group and been adopted by
// init, but it stays in its cgroup. The layout, in the cgroup v2
// hierarchy, under the master's own cgroup:
//
//	<master's cgroup>/dutchmaster-<master pid>-<n>/worker-<worker id>
//
// n counts the runtimes of one master process (1 for the binary's). The
// worker is forked straight into its cgroup (clone3 with
// CLONE_INTO_CGROUP), so not even its first child escapes. When the worker
// exits, its cgroup is killed (cgroup.kill, or SIGKILL to each process in
// cgroup.procs on kernels before 5.14) and removed; the runtime's cgroup
// goes when the runtime closes. No controller is enabled: cgroup.procs
// and cgroup.kill need none, and so the "no internal processes" rule,
// which holds only for controllers, does not stand in the way of the
// master staying in its own cgroup.
//
// The master needs write access to its own cgroup: root on a host, or a
// delegated cgroup under systemd (Delegate=yes). Without it (or without
// the unified hierarchy) the runtime logs once and goes on with process
// groups alone, plus, with a subreaper, the orphans it adopted.

// cgroupDrain bounds the wait for a killed cgroup to empty before it is
// removed; a process stuck in the kernel may outlast it, and the cgroup
// is then removed when the runtime closes.
const cgroupDrain = 2 * time.Second

// cgroupRuntimes numbers the runtimes of this process, for their cgroups'
// names.
var cgroupRuntimes atomic.Int64

// cgroupTree is a runtime's cgroup, the parent of its workers'.
type cgroupTree struct {
	dir string
	log zerolog.Logger

	mu  sync.Mutex
	off bool // forking into a cgroup failed: workers start without
}

// openCgroupTree creates the runtime's cgroup, or returns nil (with one
// log line) where the kernel or the master's rights offer none. Empty
// cgroups left by masters that are gone are removed on the way.
func openCgroupTree(log zerolog.Logger) *cgroupTree {
	own, err := ownCgroupDir()
	if err == nil {
		removeStaleCgroups(own)
		dir := filepath.Join(own, fmt.Sprintf("dutchmaster-%d-%d", os.Getpid(), cgroupRuntimes.Add(1)))
		if err = os.Mkdir(dir, 0o755); err == nil {
			return &cgroupTree{dir: dir, log: log}
		}
	}
	log.Info().Err(err).Msg("no cgroup per worker: a worker's processes that leave its process group may outlive it")
	return nil
}

// ownCgroupDir is this process's cgroup v2 directory.
func ownCgroupDir() (string, error) {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	var path string
	found := false
	for line := range strings.Lines(string(data)) {
		if p, ok := strings.CutPrefix(strings.TrimSpace(line), "0::"); ok {
			path, found = p, true
		}
	}
	if !found {
		return "", errors.New("not in a cgroup v2 hierarchy")
	}
	mnt, root, err := cgroup2Mount()
	if err != nil {
		return "", err
	}
	rel, ok := strings.CutPrefix(path, root)
	if !ok {
		return "", fmt.Errorf("cgroup %s is outside the mounted cgroup2 hierarchy", path)
	}
	dir := filepath.Join(mnt, rel)
	if unix.Access(dir, unix.W_OK) != nil {
		return "", fmt.Errorf("cgroup %s is not writable", dir)
	}
	return dir, nil
}

// cgroup2Mount finds the cgroup2 mount (at /sys/fs/cgroup, or at
// /sys/fs/cgroup/unified in the hybrid layout) and the cgroup it shows.
func cgroup2Mount() (mountpoint, root string, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "id parent major:minor root mountpoint options... - fstype source super-options"
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		f := strings.Fields(pre)
		if len(f) >= 5 {
			return unescapeMount(f[4]), unescapeMount(f[3]), nil
		}
	}
	return "", "", errors.New("no cgroup2 hierarchy mounted")
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeStaleCgroups removes the empty cgroups of masters that are gone
// (one killed by SIGKILL never removed its own).
func removeStaleCgroups(own string) {
	dirs, _ := filepath.Glob(filepath.Join(own, "dutchmaster-*-*"))
	for _, dir := range dirs {
		f := strings.Split(filepath.Base(dir), "-")
		pid, err := strconv.Atoi(f[1])
		if err != nil || pid == os.Getpid() || unix.Kill(pid, 0) != unix.ESRCH {
			continue
		}
		workers, _ := filepath.Glob(filepath.Join(dir, "worker-*"))
		for _, w := range workers {
			_ = unix.Rmdir(w) // fails while a process is left in it
		}
		_ = unix.Rmdir(dir)
	}
}

// worker creates a worker's cgroup; nil when workers start without.
func (t *cgroupTree) worker(id core.WorkerID) *workerCgroup {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	off := t.off
	t.mu.Unlock()
	if off {
		return nil
	}
	dir := filepath.Join(t.dir, "worker-"+strconv.Itoa(int(id)))
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		t.log.Warn().Err(err).Int("worker", int(id)).Msg("worker started without a cgroup")
		return nil
	}
	return &workerCgroup{dir: dir}
}

// disable stops putting workers in cgroups, after a fork into one failed
// (clone3 refused by a seccomp filter, say).
func (t *cgroupTree) disable(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.off {
		t.off = true
		t.log.Warn().Err(err).Msg("forking into a cgroup failed: workers start without a cgroup of their own from now on")
	}
}

// close removes the runtime's cgroup, killing whatever is left in its
// workers' cgroups.
func (t *cgroupTree) close() {
	if t == nil {
		return
	}
	workers, _ := filepath.Glob(filepath.Join(t.dir, "worker-*"))
	for _, w := range workers {
		(&workerCgroup{dir: w}).remove()
	}
	_ = unix.Rmdir(t.dir)
}

// workerCgroup is one worker's cgroup.
type workerCgroup struct {
	dir string
}

// open returns a descriptor of the cgroup for SysProcAttr.CgroupFD; the
// caller closes it once the fork is done.
func (w *workerCgroup) open() (*os.File, error) {
	return os.OpenFile(w.dir, os.O_RDONLY|unix.O_DIRECTORY, 0)
}

// pids lists the processes in the cgroup.
func (w *workerCgroup) pids() []int {
	data, err := os.ReadFile(filepath.Join(w.dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range bytes.Fields(data) {
		if n, err := strconv.Atoi(string(f)); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// kill sends SIGKILL to every process in the cgroup. cgroup.kill does it
// at once, forks under way included; without it, the processes listed are
// killed until none is left (a fork between two reads is caught by the
// next).
func (w *workerCgroup) kill() {
	if os.WriteFile(filepath.Join(w.dir, "cgroup.kill"), []byte("1"), 0) == nil {
		return
	}
	deadline := time.Now().Add(cgroupDrain)
	for pids := w.pids(); len(pids) > 0 && time.Now().Before(deadline); pids = w.pids() {
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// remove kills what is left in the cgroup and removes it, once the
// processes are gone (bounded by cgroupDrain).
func (w *workerCgroup) remove() {
	w.kill()
	deadline := time.Now().Add(cgroupDrain)
	for {
		err := unix.Rmdir(w.dir)
		if err == nil || errors.Is(err, syscall.ENOENT) || !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}
