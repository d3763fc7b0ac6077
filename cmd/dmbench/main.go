// Command dmbench measures dutchmaster's rolling restarts under load: it
// starts dutchmaster with the example worker on 127.0.0.1, drives a
// closed-loop HTTP load through it while sending rolling restarts
// (SIGUSR2), and prints one JSON line per run, then a table.
//
//	dmbench [-workers 2,4,8] [-mode close,keepalive] [-duration 20s]
//	        [-clients 16] [-restarts 5] [-balance kernel] [flags]
//
// A run is one worker count in one connection mode. It reports requests
// and failures by kind (every failure listed up to 20, placed against the
// restarts and drains); latency percentiles in steady state and inside
// restart windows ("signal received" to "restart complete" in the
// master's log); each restart's duration beside the ideal (workers × boot
// delay, one replacement at a time); signal-to-first-fork latency; the
// master's peak RSS (VmHWM) and CPU (utime+stime), and its CPU over a
// quiet period; how 16 keep-alive connections opened together spread over
// the workers; and throughput through the master's listener (-balance:
// one socket per slot, balanced in the kernel, by default) against the
// same workers each binding the port with SO_REUSEPORT.
//
// The load is bounded in count (-max-requests) and time, and every wait on
// a process is bounded by -patience. The exit status is 1 if a run could
// not complete or a request failed; the timing targets are reported, never
// turned into an exit status. docs/performance.md has the figures.
//
//	dmbench -node [-workers 2,4] [-restarts 5] [-pm2 PM2-CLI]
//
// runs the Node.js comparison instead (node.go): the same plain-HTTP Node.js
// app under dutchmaster, a 20-line node:cluster primary and PM2, side by
// side. Its exit status is 1 only if a run could not complete: failed
// requests are figures there, since the other primaries are expected to
// fail some.
//
//	dmbench -upgrade [-workers 4] [-upgrades 10] [-soak-upgrades 100]
//	        [-between 200] [-mode close,keepalive]
//
// upgrades the master in place under load instead (upgrade.go): two builds
// of dutchmaster with different version strings take turns through `ctl
// upgrade`, -upgrades times per connection mode (the middle one during a
// rolling restart, which completes under the new image), then
// -soak-upgrades times in one run. It reports failed requests, how long
// the master was unavailable per upgrade (by its log and by ctl), and the
// master's RSS and descriptors after the first upgrade and after the last.
// Its exit status is 1 if a request failed or a run could not complete.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/dutchmaster/dutchmaster/cmd/internal/loadtest"
)

func main() {
	os.Exit(mainRun(os.Args[1:], os.Stdout, os.Stderr))
}

func mainRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dmbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	workers := fs.String("workers", "2,4,8", "worker counts, comma-separated: one run each (and each mode)")
	modes := fs.String("mode", "close,keepalive", "connection modes: close (a new connection per request), keepalive, or both comma-separated")
	cfg := config{Log: stderr}
	fs.DurationVar(&cfg.Duration, "duration", 20*time.Second, "load per run; the restarts are spread over it")
	fs.IntVar(&cfg.Clients, "clients", 16, "concurrent closed-loop clients")
	fs.IntVar(&cfg.Restarts, "restarts", 5, "rolling restarts per run")
	fs.StringVar(&cfg.Balance, "balance", "kernel", "the master's --balance (kernel, shared, auto; empty: its default)")
	fs.DurationVar(&cfg.Boot, "boot", 300*time.Millisecond, "the example worker's boot delay (HELLO_BOOT_DELAY)")
	fs.DurationVar(&cfg.Work, "work", 5*time.Millisecond, "time each request takes in the worker (HELLO_WORK)")
	fs.DurationVar(&cfg.Warmup, "warmup", time.Second, "requests started this early in the load are not steady state")
	fs.Int64Var(&cfg.MaxRequests, "max-requests", 10_000_000, "bound of the requests sent per load")
	fs.DurationVar(&cfg.Timeout, "timeout", 10*time.Second, "per-request timeout (a failure of kind timeout)")
	fs.DurationVar(&cfg.Patience, "patience", 60*time.Second, "bound of every wait on the master, a worker or a log event")
	fs.DurationVar(&cfg.Idle, "idle", 5*time.Second, "quiet period over which the master's idle CPU is measured (0: skip)")
	fs.DurationVar(&cfg.Throughput, "throughput", 3*time.Second, "length of each of the 4 shared/SO_REUSEPORT throughput segments (0: skip)")
	dmBin := fs.String("dutchmaster", "", "dutchmaster binary (default: go build into a temporary directory)")
	helloBin := fs.String("hello", "", "example worker binary (default: go build into a temporary directory)")
	logDir := fs.String("logs", "", "directory to keep each run's master log in")
	quiet := fs.Bool("q", false, "no progress notes on stderr")
	pm2Bin := fs.String("pm2", "", "with -node: the PM2 CLI to use (default: npm install pm2@latest into a temporary directory; skipped if that fails)")
	nodeMode := fs.Bool("node", false, "instead: the Node.js comparison (dutchmaster, a node:cluster primary, PM2) with -workers 2,4 by default (node.go)")
	upgradeMode := fs.Bool("upgrade", false, "instead: in-place upgrades of the master (ctl upgrade) under load, with -workers 4 by default (upgrade.go)")
	upgrades := fs.Int("upgrades", 10, "with -upgrade: upgrades per worker count and mode, the middle one during a rolling restart")
	soakUpgrades := fs.Int("soak-upgrades", 100, "with -upgrade: upgrades of the soak run (first worker count and mode), which compares the master's RSS and descriptors after the first and the last (0: no soak)")
	fs.Int64Var(&cfg.Between, "between", 200, "with -upgrade: requests finished before the first upgrade and between two")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *quiet {
		cfg.Log = nil
	}
	workersSet := false
	fs.Visit(func(f *flag.Flag) { workersSet = workersSet || f.Name == "workers" })
	if *nodeMode && !workersSet {
		*workers = "2,4"
	}
	if *upgradeMode && !workersSet {
		*workers = "4"
	}
	counts, err := parseCounts(*workers)
	if err == nil {
		err = checkModes(*modes)
	}
	if err == nil && (cfg.Clients < 1 || cfg.Restarts < 0 || cfg.Duration <= 0) {
		err = errors.New("-clients must be at least 1, -restarts at least 0, -duration positive")
	}
	if err == nil && *upgradeMode {
		err = checkUpgradeFlags(*nodeMode, *dmBin, *upgrades, *soakUpgrades, cfg.Between)
	}
	if err != nil {
		fmt.Fprintf(stderr, "dmbench: %v\n", err)
		return 2
	}

	if *upgradeMode {
		return upgradeBench(cfg, counts, strings.Split(*modes, ","), *upgrades, *soakUpgrades, *helloBin, stdout, stderr, *logDir)
	}
	if *nodeMode {
		return nodeBench(cfg, counts, *dmBin, *pm2Bin, stdout, stderr)
	}

	bin := loadtest.Binaries{Dutchmaster: *dmBin, Hello: *helloBin}
	if bin.Dutchmaster == "" || bin.Hello == "" {
		dir, err := os.MkdirTemp("", "dmbench-")
		if err != nil {
			fmt.Fprintf(stderr, "dmbench: %v\n", err)
			return 1
		}
		defer os.RemoveAll(dir)
		built, err := loadtest.Build(dir)
		if err != nil {
			fmt.Fprintf(stderr, "dmbench: %v\n", err)
			return 1
		}
		if bin.Dutchmaster == "" {
			bin.Dutchmaster = built.Dutchmaster
		}
		if bin.Hello == "" {
			bin.Hello = built.Hello
		}
	}

	status := 0
	var results []*result
	enc := json.NewEncoder(stdout)
	for _, n := range counts {
		for _, mode := range strings.Split(*modes, ",") {
			c := cfg
			c.Workers, c.Mode = n, mode
			res, masterLog, err := run(c, bin)
			if *logDir != "" {
				name := filepath.Join(*logDir, fmt.Sprintf("master-%d-%s.log", n, mode))
				if werr := os.WriteFile(name, []byte(masterLog), 0o644); werr != nil {
					fmt.Fprintf(stderr, "dmbench: %v\n", werr)
				}
			}
			if err != nil {
				fmt.Fprintf(stderr, "dmbench: %d workers, %s: %v\n", n, mode, err)
				status = 1
				continue
			}
			if res.Failed > 0 {
				status = 1
			}
			enc.Encode(res)
			results = append(results, res)
		}
	}
	printTable(stdout, results)
	return status
}

func parseCounts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-workers %q: want positive counts separated by commas", s)
		}
		out = append(out, n)
	}
	return out, nil
}

func checkModes(s string) error {
	for _, m := range strings.Split(s, ",") {
		if m != loadtest.ModeClose && m != loadtest.ModeKeepAlive {
			return fmt.Errorf("-mode %q: want %s, %s, or both separated by a comma", s, loadtest.ModeClose, loadtest.ModeKeepAlive)
		}
	}
	return nil
}

func checkUpgradeFlags(node bool, dutchmaster string, upgrades, soak int, between int64) error {
	switch {
	case node:
		return errors.New("-upgrade and -node: one or the other")
	case dutchmaster != "":
		return errors.New("-dutchmaster: not with -upgrade, which builds two versions of it")
	case upgrades < 1 || soak < 0 || between < 1:
		return errors.New("-upgrades and -between must be at least 1, -soak-upgrades at least 0")
	}
	return nil
}
