// Command dmsoak runs dutchmaster long and wide: a soak of many rolling
// restarts under load with workers SIGKILLed at random, and a scale run
// with hundreds of workers.
//
//	dmsoak [-restarts 200] [-workers 4] [-keepalive 4] [-close 4] [flags]
//	dmsoak -scale [-counts 64,128,256] [-repeat 3] [flags]
//
// The soak starts dutchmaster with the example worker on 127.0.0.1 and
// two closed-loop loads, one on kept-alive connections (each used for at
// most -max-per-conn requests) and one with a new connection per request.
// Before each rolling restart (SIGUSR2) it SIGKILLs a random listening
// worker with probability -kill, and during each restart, once a first
// replacement listens, with probability -kill-during. Each kill stops the
// worker first (SIGSTOP) and reads from /proc the connections it has
// accepted, so that a failed request can be told apart: it is excused
// only if it failed on a connection that a killed worker held when it was
// killed. Every other failure counts, and must not happen. The master
// runs with --metrics on 127.0.0.1. After each restart, once the cluster
// has settled, its RSS, descriptors, threads and CPU are read from /proc,
// and its goroutines and heap (allocated bytes and the GC's heap goal)
// from its /metrics; descriptors, RSS, heap goal and goroutines must stay
// flat (judge, in soak.go, says how each is judged).
//
// The scale run starts -counts workers of the example worker, restarts
// them once and stops them, for each count in turn, -repeat times, and
// reports (medians of the repeats) the time and the master's CPU per
// worker for each phase, its RSS, threads, descriptors and goroutines,
// and the marginal cost of the workers added from one count to the next.
//
// Output: one JSON line (the soak) or one per run (scale), then a
// summary for a reader. Exit status 1 if the run could not complete, a
// request failed unexcused, the master did not exit 0, a worker was left
// behind, or (soak) the master's descriptors, RSS, heap or goroutines did
// not stay flat.
// docs/reliability.md has the figures.
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
	fs := flag.NewFlagSet("dmsoak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := soakConfig{Log: stderr}
	fs.IntVar(&cfg.Restarts, "restarts", 200, "rolling restarts to complete")
	fs.IntVar(&cfg.Workers, "workers", 4, "workers")
	fs.DurationVar(&cfg.Boot, "boot", 20*time.Millisecond, "the example worker's boot delay (HELLO_BOOT_DELAY)")
	fs.DurationVar(&cfg.Work, "work", time.Millisecond, "time each request takes in the worker (HELLO_WORK)")
	fs.DurationVar(&cfg.Grace, "grace", 500*time.Millisecond, "the example worker's drain grace (HELLO_GRACE)")
	fs.IntVar(&cfg.KeepAliveClients, "keepalive", 4, "closed-loop clients on kept-alive connections")
	fs.IntVar(&cfg.MaxPerConn, "max-per-conn", 100, "requests per kept-alive connection before the client opens a new one")
	fs.IntVar(&cfg.CloseClients, "close", 4, "closed-loop clients with a new connection per request")
	fs.Float64Var(&cfg.KillBetween, "kill", 0.5, "chance of a SIGKILL of a random listening worker before each restart")
	fs.Float64Var(&cfg.KillDuring, "kill-during", 0.25, "chance of one during each restart")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of the random kills")
	fs.Int64Var(&cfg.MaxRequests, "max-requests", 50_000_000, "bound of the requests each load sends")
	fs.DurationVar(&cfg.Timeout, "timeout", 10*time.Second, "per-request timeout")
	fs.DurationVar(&cfg.Patience, "patience", 60*time.Second, "bound of every wait on the master or a log event")
	series := fs.String("series", "", "write the master's readings after each restart to this JSON file")

	scale := fs.Bool("scale", false, "the scale run instead of the soak")
	counts := fs.String("counts", "64,128,256", "scale: worker counts, one run each")
	scaleBoot := fs.Duration("scale-boot", 0, "scale: the example worker's boot delay")
	maxSurge := fs.Int("max-surge", 1, "scale: replacements starting at once")
	repeat := fs.Int("repeat", 3, "scale: runs of each count (the report takes the medians)")

	dmBin := fs.String("dutchmaster", "", "dutchmaster binary (default: go build into a temporary directory)")
	helloBin := fs.String("hello", "", "example worker binary (default: go build into a temporary directory)")
	logDir := fs.String("logs", "", "directory to keep the master logs in")
	quiet := fs.Bool("q", false, "no progress notes on stderr")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *quiet {
		cfg.Log = nil
	}
	if cfg.Restarts < 1 || cfg.Workers < 1 || cfg.KeepAliveClients < 0 || cfg.CloseClients < 0 || cfg.KeepAliveClients+cfg.CloseClients == 0 {
		fmt.Fprintln(stderr, "dmsoak: -restarts and -workers must be at least 1, and some clients are needed")
		return 2
	}
	var scaleCounts []int
	for _, f := range strings.Split(*counts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(stderr, "dmsoak: -counts %q: want positive counts separated by commas\n", *counts)
			return 2
		}
		scaleCounts = append(scaleCounts, n)
	}

	bin := loadtest.Binaries{Dutchmaster: *dmBin, Hello: *helloBin}
	if bin.Dutchmaster == "" || bin.Hello == "" {
		dir, err := os.MkdirTemp("", "dmsoak-")
		if err != nil {
			fmt.Fprintf(stderr, "dmsoak: %v\n", err)
			return 1
		}
		defer os.RemoveAll(dir)
		built, err := loadtest.Build(dir)
		if err != nil {
			fmt.Fprintf(stderr, "dmsoak: %v\n", err)
			return 1
		}
		if bin.Dutchmaster == "" {
			bin.Dutchmaster = built.Dutchmaster
		}
		if bin.Hello == "" {
			bin.Hello = built.Hello
		}
	}
	enc := json.NewEncoder(stdout)

	if *scale {
		runs, medians, err := runScale(scaleConfig{Counts: scaleCounts, Repeat: *repeat, Boot: *scaleBoot, MaxSurge: *maxSurge, Patience: cfg.Patience, Log: cfg.Log}, bin)
		for _, r := range runs {
			enc.Encode(r)
		}
		if err != nil {
			fmt.Fprintf(stderr, "dmsoak: %v\n", err)
			return 1
		}
		printScale(stdout, medians)
		for _, r := range runs {
			if r.ExitStatus != "0" || r.LeftBehind > 0 {
				return 1
			}
		}
		return 0
	}

	cfg.note("%d workers, %d rolling restarts under %d keep-alive and %d new-connection clients", cfg.Workers, cfg.Restarts, cfg.KeepAliveClients, cfg.CloseClients)
	res, masterLog, err := runSoak(cfg, bin)
	if *logDir != "" {
		if werr := os.WriteFile(filepath.Join(*logDir, "master-soak.log"), []byte(masterLog), 0o644); werr != nil {
			fmt.Fprintf(stderr, "dmsoak: %v\n", werr)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "dmsoak: %v\n", err)
		return 1
	}
	enc.Encode(res)
	printSoak(stdout, res)
	if *series != "" {
		data, _ := json.Marshal(res.series)
		if werr := os.WriteFile(*series, data, 0o644); werr != nil {
			fmt.Fprintf(stderr, "dmsoak: %v\n", werr)
		}
	}
	if !res.ok() {
		return 1
	}
	return 0
}
