package osproc_test

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/actors/osproc"
)

// TestLiveWorkersTakeNoThreadEach: workers that are running cost the
// master no OS thread each (their exits are awaited through the poller),
// and two pidfds each (os.Process's and the exit watch) that are gone
// once their exits are reported.
func TestLiveWorkersTakeNoThreadEach(t *testing.T) {
	const n = 32
	rt := newRuntime(t, osproc.Config{Command: role(t, "drain", "ipc")})
	threads, pidfds := threadCount(t), pidfdCount(t)

	recs := map[core.WorkerID]*recorder{}
	for id := core.WorkerID(1); id <= n; id++ {
		recs[id], _ = spawn(t, rt, actors.WorkerSpec{ID: id})
	}
	// A worker's first IPC line is read by a goroutine its runtime
	// goroutine starts right before awaiting the exit: once every worker's
	// has arrived, all of them are (or are about to be) waiting.
	for id, rec := range recs {
		if ipc := expect[actors.IPC](t, rec); string(ipc.Line) != `{"event":"ready"}` {
			t.Fatalf("worker %d: %q, want ready", id, ipc.Line)
		}
	}
	if got := threadCount(t) - threads; got >= n/2 {
		t.Errorf("%d more threads with %d workers running, want far fewer than one each", got, n)
	}
	if got := pidfdCount(t) - pidfds; got != 2*n {
		t.Errorf("%d more pidfds with %d workers running, want %d (two each)", got, n, 2*n)
	}

	for id, rec := range recs {
		rt.Drain(id, actors.DrainIPC)
		if ex, _ := until[actors.Exited](t, rec); ex.Code != 0 || ex.Signal != 0 {
			t.Errorf("worker %d: Exited %+v, want a clean exit", id, ex)
		}
	}
	if got := pidfdCount(t); got != pidfds {
		t.Errorf("%d pidfds once every worker exited, %d before", got, pidfds)
	}
}

// threadCount reads this process's OS threads from /proc/self/status.
func threadCount(t *testing.T) int {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Threads line in /proc/self/status")
	return 0
}

// pidfdCount counts this process's open pidfds.
func pidfdCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && target == "anon_inode:[pidfd]" {
			n++
		}
	}
	return n
}
