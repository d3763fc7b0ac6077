//go:build linux

package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The processes a worker starts, and the process limit: faults of the
// master's dealings with the OS's process table.
//
//	DM_FAULT=daemon   daemonWorker: starts a daemon the classic way (fork,
//	                  setsid, fork) that serves the worker's listener, then is
//	                  the raw worker; the daemon writes its pid into the
//	                  directory DM_DAEMON_DIR
const daemonStageEnv = "DM_DAEMON_STAGE"

// daemonWorker is the three stages of DM_FAULT=daemon: the worker, the
// intermediate child (a new session, it starts the daemon and exits, so
// that the daemon is nobody's child but init's or a subreaper's) and the
// daemon, which answers "daemon <pid>" on the listener it inherited.
func daemonWorker() int {
	switch os.Getenv(daemonStageEnv) {
	case "":
		mid := exec.Command(os.Args[0])
		mid.Env = append(os.Environ(), daemonStageEnv+"=mid")
		mid.ExtraFiles = []*os.File{os.NewFile(3, "listener")}
		mid.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := mid.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "daemon worker: %v\n", err)
			return 3
		}
		return rawWorker()
	case "mid":
		d := exec.Command(os.Args[0])
		d.Env = append(os.Environ(), daemonStageEnv+"=daemon")
		d.ExtraFiles = []*os.File{os.NewFile(3, "listener")}
		if err := d.Start(); err != nil {
			return 3
		}
		return 0
	default:
		ln, err := net.FileListener(os.NewFile(3, "listener"))
		if err != nil {
			return 3
		}
		pid := strconv.Itoa(os.Getpid())
		if err := os.WriteFile(filepath.Join(os.Getenv("DM_DAEMON_DIR"), pid), nil, 0o644); err != nil {
			return 3
		}
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "daemon "+pid) }))
		return 1
	}
}

// daemonPIDs lists the daemons that wrote their pid into dir.
func daemonPIDs(t *testing.T, dir string) []int {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitDaemons waits until n daemons wrote their pid into dir, and lists
// them. A daemon writes it once it runs, which may be well after its
// worker listens and after the master counts it among the worker's
// processes.
func waitDaemons(t *testing.T, dir string, n int) []int {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		pids := daemonPIDs(t, dir)
		if len(pids) >= n {
			if len(pids) > n {
				t.Fatalf("%d daemons %v, want %d", len(pids), pids, n)
			}
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d daemons %v after %s, want %d", len(pids), pids, patience, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFaultWorkerDaemonizesHelper: workers that each start a daemon
// (fork, setsid, fork) sharing their listener. The master counts the
// daemon among the worker's processes (ctl status), ends it with its
// worker, so that after a rolling restart every answer comes from the new
// generation, and none is left once the master stopped: the port binds
// again. With and without --subreaper (the cgroup per worker needs
// neither), and, with --subreaper, without the cgroup hierarchy (the
// master in a mount namespace where it is not mounted): the orphans the
// subreaper adopts stand in for the cgroup.
func TestFaultWorkerDaemonizesHelper(t *testing.T) {
	for _, c := range []struct {
		name      string
		subreaper bool
		noCgroups bool
	}{
		{"cgroup", false, false},
		{"cgroup+subreaper", true, false},
		{"subreaper-without-cgroups", true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var via []string
			if c.noCgroups {
				if _, err := exec.LookPath("unshare"); err != nil {
					t.Skip("no unshare(1)")
				}
				// Every cgroup2 mount goes, in the master's own mount
				// namespace only.
				via = []string{"unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
					`for m in $(awk '$9 == "cgroup2" {print $5}' /proc/self/mountinfo); do umount -l "$m" || exit 1; done; exec "$@"`, "sh"}
			}
			dir := t.TempDir()
			// A daemon the master failed to end is the test's to end.
			t.Cleanup(func() {
				for _, pid := range daemonPIDs(t, dir) {
					if alive(pid) {
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				}
			})
			sock := filepath.Join(dir, "ctl.sock")
			self, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			flags := []string{"--env", roleEnv + "=worker", "--env", faultEnv + "=daemon", "--env", "DM_DAEMON_DIR=" + dir,
				"--control", sock, "--workers", "2", "--listen", "http=tcp://127.0.0.1:0"}
			if c.subreaper {
				flags = append(flags, "--subreaper")
			}
			m := startMasterVia(t, via, []string{self}, flags...)
			addr := m.address()
			_, next := m.waitFor(0, "cluster ready", nil)
			if c.noCgroups {
				m.waitFor(0, "no cgroup per worker: a worker's processes that leave its process group may outlive it", nil)
			}

			// Each worker's daemon is counted with it (once adopted, without
			// a cgroup: the intermediate exits before the worker goes on).
			deadline := time.Now().Add(patience)
			for {
				st := status(t, sock)
				counts := map[int]int{}
				for _, w := range st.Workers {
					counts[w.ID] = w.Processes
				}
				if len(st.Workers) == 2 && st.Workers[0].Processes >= 2 && st.Workers[1].Processes >= 2 {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("worker process counts %v, want at least 2 each (the worker and its daemon)", counts)
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			first := waitDaemons(t, dir, 2)

			m.signal(syscall.SIGUSR2)
			m.waitFor(next, "restart complete", nil)
			st := status(t, sock)
			var current []string
			for _, w := range st.Workers {
				if w.Generation != 2 {
					t.Fatalf("worker %d of generation %d after the rollout", w.ID, w.Generation)
				}
				current = append(current, strconv.Itoa(w.PID))
			}
			// The new generation's daemons answer too: they are its
			// processes. The old generation's must not.
			newDaemons := map[string]bool{}
			for _, pid := range waitDaemons(t, dir, 4) {
				if !slices.Contains(first, pid) {
					newDaemons["daemon "+strconv.Itoa(pid)] = true
				}
			}
			stale := 0
			for i := range 40 {
				body, err := get(addr, "/")
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				if !slices.Contains(current, body) && !newDaemons[body] {
					stale++
				}
			}
			if stale > 0 {
				t.Errorf("%d of 40 answers after the rollout came from neither a worker of generation 2 (%v) nor its daemon", stale, current)
			}

			all := daemonPIDs(t, dir)
			m.stop()
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Errorf("after the stop: %v", err)
			} else {
				ln.Close()
			}
			waitGone(t, all...)
			if !c.noCgroups {
				checkNoCgroupLeft(t, m.PID())
			}
		})
	}
}

// checkNoCgroupLeft fails if a cgroup of the master's is left.
func checkNoCgroupLeft(t *testing.T, pid int) {
	t.Helper()
	for _, root := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		left, _ := filepath.Glob(filepath.Join(root, fmt.Sprintf("dutchmaster-%d-*", pid)))
		if len(left) > 0 {
			t.Errorf("cgroups left after the stop: %v", left)
		}
	}
}

// TestFaultProcessLimit: an unprivileged master under a process limit
// (ulimit -u) its workers cannot fit in says so at start, keeps room for
// its own threads (forks past the room fail and back off), never dies,
// and SIGTERM ends it with 0. A uid of its own, so that no other
// process counts against the limit; a few runs, since the abort it
// guards against came and went.
func TestFaultProcessLimit(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run the master as another user")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("no setpriv(1)")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The test binary must be reachable by the other user.
	dir, err := os.MkdirTemp("", "dm-nproc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "dutchmaster.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	uid := strconv.Itoa(61000 + os.Getpid()%4000)
	for run := range 3 {
		t.Run(strconv.Itoa(run), func(t *testing.T) {
			// setpriv drops to the uid; the shell's ulimit then sets the
			// soft and the hard limit, as an unprivileged user's would be.
			via := []string{"setpriv", "--reuid", uid, "--regid", uid, "--clear-groups", "/bin/bash", "-c",
				`ulimit -u 40 && exec "$@"`, "sh"}
			cmd := exec.Command(via[0], append(via[1:], bin, "--log-format", "json", "--control", "none",
				"--workers", "200", "--listen", "http=tcp://127.0.0.1:0", "--env", roleEnv+"=worker", "--", bin)...)
			cmd.Env = append(os.Environ(), roleEnv+"=master")
			cmd.Dir = dir
			m := launch(t, cmd)
			e, _ := m.waitFor(0, "process limit too low for the workers: raise it (ulimit -u, LimitNPROC=) or forks will fail", nil)
			if e.num("limit") != 40 {
				t.Errorf("limit %d, want 40", e.num("limit"))
			}
			m.waitFor(0, "fork failed", nil)
			// A while under the limit, forks failing and backing off.
			deadline := time.Now().Add(3 * time.Second)
			for time.Now().Before(deadline) {
				select {
				case <-m.Done():
					t.Fatalf("the master died under the process limit:\n%s", tail(m.Log(), 20))
				case <-time.After(100 * time.Millisecond):
				}
			}
			m.stop()
		})
	}
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}
