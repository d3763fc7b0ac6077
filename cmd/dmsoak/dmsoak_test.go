package main

import (
	"encoding/json"
	"math"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dutchmaster/dutchmaster/cmd/internal/loadtest"
)

// TestSoakShort is `make soak` at a small size: 4 workers, 8 rolling
// restarts under both loads, a worker SIGKILLed before and during most of
// them. Every failure must be on a connection of a killed worker, the
// master must exit 0, leave nothing, and keep its descriptors and
// goroutines; every reading must have the master's goroutines and heap.
func TestSoakShort(t *testing.T) {
	bin := binaries(t)
	cfg := soakConfig{
		Workers: 4, Restarts: 8, Boot: 20 * time.Millisecond, Work: time.Millisecond, Grace: 500 * time.Millisecond,
		KeepAliveClients: 2, MaxPerConn: 50, CloseClients: 2,
		KillBetween: 0.75, KillDuring: 0.5, Seed: 7,
		MaxRequests: 1_000_000, Timeout: 10 * time.Second, Patience: 30 * time.Second,
	}
	res, log, err := runSoak(cfg, bin)
	if err != nil {
		t.Fatalf("%v\nmaster log:\n%s", err, log)
	}
	if res.Kills.Between+res.Kills.During == 0 {
		t.Error("no worker was killed: the soak proved nothing about kills")
	}
	if res.Requests == 0 {
		t.Error("no request was sent")
	}
	if len(res.series) != cfg.Restarts {
		t.Errorf("%d readings of the master, want one per restart (%d)", len(res.series), cfg.Restarts)
	}
	for _, x := range res.series {
		// The scrape itself runs on a goroutine of the master, so 0 is
		// no reading; the heap holds at least the actor system.
		if x.Goroutines <= 0 || x.HeapAllocKiB <= 0 || x.HeapGoalKiB <= 0 {
			t.Errorf("restart %d: goroutines %d, heap alloc %d KiB, heap goal %d KiB: not read from /metrics",
				x.Restart, x.Goroutines, x.HeapAllocKiB, x.HeapGoalKiB)
		}
	}
	for _, name := range []string{"no_unexcused_failure", "restarts_done", "master_exit_0", "nothing_left_behind",
		"fds_flat", "rss_flat", "heap_flat", "goroutines_flat"} {
		if _, ok := res.Verdict[name]; !ok {
			t.Errorf("no verdict %s in %v", name, res.Verdict)
		}
	}
	for name, ok := range res.Verdict {
		// 8 restarts are warm-up for the heap.
		if !ok && name != "rss_flat" && name != "heap_flat" {
			detail, _ := json.MarshalIndent(res, "", "  ")
			t.Errorf("%s does not hold:\n%s\nmaster log:\n%s", name, detail, log)
		}
	}
}

// TestJudgeCatchesLeaks: readings of a master that keeps one goroutine
// more every 10 restarts, or whose heap goal grows by 1% a restart, fail
// goroutines_flat or heap_flat; a steady one passes both: goroutines
// coming and going within the slack, a heap goal that grows in the first
// quarter only (warm-up), or one that jumps by up to 20% from one GC to
// the next as in a real run.
func TestJudgeCatchesLeaks(t *testing.T) {
	series := func(goroutines func(i int) int, heapGoal func(i int) int64) []masterSample {
		var out []masterSample
		for i := range 200 {
			out = append(out, masterSample{Restart: i + 1, RSSKiB: 20000, FDs: 22, Threads: 13,
				Goroutines: goroutines(i), HeapAllocKiB: heapGoal(i) / 2, HeapGoalKiB: heapGoal(i)})
		}
		return out
	}
	steadyG := func(i int) int { return 18 + i%3 } // 18 to 20
	warmHeap := func(i int) int64 { return 6000 + 30*int64(min(i, 40)) }
	// The heap goals of a 60-restart run, in KiB, one GC every 6 restarts.
	gcs := []int64{12823, 12341, 11252, 13180, 12487, 12555, 10155}
	noisyHeap := func(i int) int64 { return gcs[i/6%len(gcs)] }
	for _, c := range []struct {
		name                 string
		samples              []masterSample
		goroutines, heapFlat bool
	}{
		{"steady", series(steadyG, warmHeap), true, true},
		{"heap goal from GC to GC", series(steadyG, noisyHeap), true, true},
		{"goroutine leak", series(func(i int) int { return 18 + i/10 }, warmHeap), false, true},
		{"heap leak", series(steadyG, func(i int) int64 { return int64(6000 * math.Pow(1.01, float64(i))) }), true, false},
		{"no goroutine read", series(func(int) int { return 0 }, warmHeap), false, true},
	} {
		res := &soakResult{}
		judge(res, c.samples, 200)
		if res.Verdict["goroutines_flat"] != c.goroutines || res.Verdict["heap_flat"] != c.heapFlat {
			t.Errorf("%s: goroutines_flat %v, heap_flat %v; want %v, %v (master %+v)", c.name,
				res.Verdict["goroutines_flat"], res.Verdict["heap_flat"], c.goroutines, c.heapFlat, res.Master)
		}
	}
}

// binaries builds dutchmaster and the example worker once for the tests.
func binaries(t *testing.T) loadtest.Binaries {
	t.Helper()
	bin, err := build()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

var build = sync.OnceValues(func() (loadtest.Binaries, error) {
	dir, err := os.MkdirTemp("", "dmsoak-test-")
	if err != nil {
		return loadtest.Binaries{}, err
	}
	built = dir
	return loadtest.Build(dir)
})

// built is the directory build used, removed by TestMain.
var built string

// TestMain also fails the run if a goroutine outlives the tests: a load
// client, a log reader or an HTTP transport left running.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if built != "" {
			os.RemoveAll(built)
		}
		os.Exit(code)
	}))
}

func TestExcusedBy(t *testing.T) {
	t0 := time.Now()
	k := &kill{PID: 10, At: t0, Ports: map[int]bool{40000: true}}
	for _, c := range []struct {
		name string
		f    loadtest.Failure
		want bool
	}{
		{"on a connection the worker held", loadtest.Failure{LocalPort: 40000, Dialed: t0.Add(-time.Second), End: t0.Add(time.Millisecond)}, true},
		{"failed dial", loadtest.Failure{Dialed: t0.Add(-time.Second), End: t0.Add(time.Millisecond)}, false},
		{"another connection", loadtest.Failure{LocalPort: 40001, Dialed: t0.Add(-time.Second), End: t0.Add(time.Millisecond)}, false},
		{"port reused after the kill", loadtest.Failure{LocalPort: 40000, Dialed: t0.Add(time.Millisecond), End: t0.Add(time.Second)}, false},
		{"failed before the kill", loadtest.Failure{LocalPort: 40000, Dialed: t0.Add(-time.Second), End: t0.Add(-time.Millisecond)}, false},
	} {
		if got := excusedBy(c.f, []*kill{k}) != nil; got != c.want {
			t.Errorf("%s: excused %v, want %v", c.name, got, c.want)
		}
	}
}

// TestScaleSmall is the scale run at 4 and 8 workers: every phase
// completes, the master exits 0 and leaves nothing, and it holds five
// descriptors per worker (its IPC socket, two pidfds: os.Process's and
// the one the exit is awaited on, and the pipes of its stdout and stderr,
// which the master reads to keep their last lines for ctl logs), and its
// slot's socket when it balances in the kernel.
func TestScaleSmall(t *testing.T) {
	bin := binaries(t)
	runs, medians, err := runScale(scaleConfig{Counts: []int{4, 8}, Repeat: 1, MaxSurge: 1, Patience: 30 * time.Second}, bin)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 2 || len(medians) != 2 {
		t.Fatalf("%d runs, %d medians", len(runs), len(medians))
	}
	for _, r := range runs {
		if r.ExitStatus != "0" || r.LeftBehind != 0 {
			t.Errorf("%d workers: exit %s, %d left behind", r.Workers, r.ExitStatus, r.LeftBehind)
		}
	}
	perWorker := 5
	if medians[0].Balance == "kernel" {
		perWorker++ // its slot's socket
	}
	if d := medians[1].FDs - medians[0].FDs; d != perWorker*4 {
		t.Errorf("4 more workers cost %d descriptors with balance %q, want %d", d, medians[0].Balance, perWorker*4)
	}
	for _, r := range runs {
		if r.Goroutines <= 0 || r.RestartGoroutines <= 0 {
			t.Errorf("%d workers: goroutines %d settled, %d after the restart: not read from /metrics", r.Workers, r.Goroutines, r.RestartGoroutines)
		}
	}
}
