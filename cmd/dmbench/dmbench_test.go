package main

import (
	"encoding/json"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dutchmaster/dutchmaster/cmd/internal/loadtest"
)

// TestMain fails the run if a goroutine outlives the tests: a load
// client, a log reader, a worker's stderr reader.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRollingRestartsLoseNothing is `make bench`'s scenario at a small
// size: 2 workers of the example worker (300 ms boot, 5 ms per request)
// under a closed-loop load of 4 clients, 2 rolling restarts, in both
// connection modes; not one request may fail. The run is paced by counts
// and log events only (each restart after 300 more requests, the next one
// once "restart complete" is logged), never by timing.
func TestRollingRestartsLoseNothing(t *testing.T) {
	bin, err := loadtest.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{loadtest.ModeClose, loadtest.ModeKeepAlive} {
		t.Run(mode, func(t *testing.T) {
			cfg := config{
				Workers: 2, Mode: mode, Clients: 4, Restarts: 2,
				Boot: 300 * time.Millisecond, Work: 5 * time.Millisecond,
				Between: 300, MaxRequests: 200_000,
				Timeout: 10 * time.Second, Patience: 30 * time.Second,
			}
			res, log, err := run(cfg, bin)
			if err != nil {
				t.Fatalf("%v\nmaster log:\n%s", err, log)
			}
			if len(res.Restarts) != cfg.Restarts {
				t.Fatalf("%d restarts completed, want %d", len(res.Restarts), cfg.Restarts)
			}
			if res.Failed != 0 {
				detail, _ := json.MarshalIndent(res.FailureDetail, "", "  ")
				t.Errorf("%d of %d requests failed: %v\nfirst failures: %s\nmaster log:\n%s",
					res.Failed, res.Requests, res.Failures, detail, log)
			}
			for i, rs := range res.Restarts {
				if rs.Requests == 0 {
					t.Errorf("restart %d: no request overlapped it, so it proves nothing", i+1)
				}
			}
			if least := cfg.Between * int64(cfg.Restarts+1); res.Requests < least {
				t.Errorf("%d requests, want at least %d", res.Requests, least)
			}
		})
	}
}

// TestParseUpgraded: ctl upgrade's report is found among other lines and
// read whole; anything else is an error that quotes the output.
func TestParseUpgraded(t *testing.T) {
	got, err := parseUpgraded("upgrading pid 4242 to /tmp/dutchmaster-vB\nupgraded: pid 4242 kept, vA → vB, master unavailable 12.345ms\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := (upgradedLine{PID: 4242, From: "vA", To: "vB", Unavailable: 12345 * time.Microsecond}); got != want {
		t.Errorf("parseUpgraded = %+v, want %+v", got, want)
	}
	for _, out := range []string{
		"",
		"ctl: upgrade refused: a fork is under way\n",
		"upgraded: pid 4242 kept, vA → vB, master unavailable soon\n",
	} {
		if _, err := parseUpgraded(out); err == nil {
			t.Errorf("parseUpgraded(%q): no error", out)
		}
	}
}

func TestSpanOf(t *testing.T) {
	if got, want := spanOf([]float64{40, 10, 30, 20}), (minMedMax{N: 4, Min: 10, Median: 20, Max: 40}); got != want {
		t.Errorf("spanOf = %+v, want %+v", got, want)
	}
	if got := spanOf(nil); got != (minMedMax{}) {
		t.Errorf("spanOf(nil) = %+v", got)
	}
}

// TestUpgradesLoseNothing is `dmbench -upgrade` at a small size: 2
// workers under a closed-loop load of 4 clients, 3 in-place upgrades
// alternating two builds (the second during a rolling restart), in both
// connection modes; not one request may fail, every upgrade must change
// the version and keep the master's pid, the rollout must complete under
// the new image, and the upgrades outside it must keep the workers. The
// run is paced by counts and log events only.
func TestUpgradesLoseNothing(t *testing.T) {
	dir := t.TempDir()
	bin, err := buildUpgradeBinaries(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{loadtest.ModeClose, loadtest.ModeKeepAlive} {
		t.Run(mode, func(t *testing.T) {
			cfg := upgradeConfig{Kind: "upgrade", Upgrades: 3, Rollout: true, config: config{
				Workers: 2, Mode: mode, Clients: 4,
				Boot: 300 * time.Millisecond, Work: 5 * time.Millisecond,
				Between: 100, MaxRequests: 200_000,
				Timeout: 10 * time.Second, Patience: 30 * time.Second,
			}}
			res, log, err := runUpgrades(cfg, bin, dir)
			if err != nil {
				t.Fatalf("%v\nmaster log:\n%s", err, log)
			}
			if len(res.Upgrades) != cfg.Upgrades {
				t.Fatalf("%d upgrades, want %d", len(res.Upgrades), cfg.Upgrades)
			}
			if res.Failed != 0 {
				detail, _ := json.MarshalIndent(res.FailureDetail, "", "  ")
				t.Errorf("%d of %d requests failed: %v\nfirst failures: %s\nmaster log:\n%s",
					res.Failed, res.Requests, res.Failures, detail, log)
			}
			for i, up := range res.Upgrades {
				from, to := upgradeVersions[i%2], upgradeVersions[(i+1)%2]
				if up.From != from || up.To != to {
					t.Errorf("upgrade %d: %s → %s, want %s → %s", up.N, up.From, up.To, from, to)
				}
				if up.Rollout != (up.N == 2) || (!up.Rollout && !up.WorkersKept) {
					t.Errorf("upgrade %d: rollout %v, workers kept %v", up.N, up.Rollout, up.WorkersKept)
				}
				if up.Requests == 0 {
					t.Errorf("upgrade %d: no request overlapped it, so it proves nothing", up.N)
				}
			}
			if r := res.Rollout; r == nil || r.Upgrade != 2 || !r.CompletedUnderNew {
				t.Errorf("rollout %+v: want upgrade 2's, completed under the new image", r)
			}
		})
	}
}
