package main

import (
	"encoding/json"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster/cmd/internal/loadtest"
)

// TestSoakShort is `make soak` at a small size: 4 workers, 8 rolling
// restarts under both loads, a worker SIGKILLed before and during most of
// them. Every failure must be on a connection of a killed worker, the
// master must exit 0, leave nothing, and keep its descriptors.
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
	for name, ok := range res.Verdict {
		if !ok && name != "rss_flat" { // 8 restarts are warm-up for the heap
			detail, _ := json.MarshalIndent(res, "", "  ")
			t.Errorf("%s does not hold:\n%s\nmaster log:\n%s", name, detail, log)
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

func TestMain(m *testing.M) {
	code := m.Run()
	if built != "" {
		os.RemoveAll(built)
	}
	os.Exit(code)
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
// completes, the master exits 0 and leaves nothing, and it holds two
// descriptors and one thread (blocked in waitid) per worker.
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
	if d := medians[1].FDs - medians[0].FDs; d != 2*4 {
		t.Errorf("4 more workers cost %d descriptors, want 8", d)
	}
}
