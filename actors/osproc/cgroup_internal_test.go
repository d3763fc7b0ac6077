package osproc

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestCgroupKillsWhatLeftTheGroup: a process forked into a worker's
// cgroup that then leaves its process group (setsid) still goes when the
// cgroup is removed, and so does the cgroup, and the runtime's at close.
func TestCgroupKillsWhatLeftTheGroup(t *testing.T) {
	tree := openCgroupTree(zerolog.Nop())
	if tree == nil {
		t.Skip("no writable cgroup v2 hierarchy")
	}
	defer tree.close()
	cg := tree.worker(1)
	if cg == nil {
		t.Fatal("no worker cgroup")
	}
	fd, err := cg.open()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	err = cmd.Start()
	fd.Close()
	if err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if pids := cg.pids(); len(pids) != 1 || pids[0] != cmd.Process.Pid {
		t.Errorf("cgroup.procs %v, want [%d]", pids, cmd.Process.Pid)
	}
	cg.kill()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("the process outlived its cgroup's kill")
	}
	cg.remove()
	if _, err := os.Stat(cg.dir); !os.IsNotExist(err) {
		t.Errorf("worker cgroup %s left: %v", cg.dir, err)
	}
	tree.close()
	if _, err := os.Stat(tree.dir); !os.IsNotExist(err) {
		t.Errorf("runtime cgroup %s left: %v", tree.dir, err)
	}
}

func TestUnescapeMount(t *testing.T) {
	if got := unescapeMount(`/sys/fs/my\040cgroup`); got != "/sys/fs/my cgroup" {
		t.Errorf("got %q", got)
	}
}

func TestWorkerProcessLimit(t *testing.T) {
	for _, c := range []struct{ limit, want uint64 }{{0, 0}, {40, 24}, {16, 1}, {5, 1}} {
		if got := workerProcessLimit(c.limit); got != c.want {
			t.Errorf("workerProcessLimit(%d) = %d, want %d", c.limit, got, c.want)
		}
	}
}
