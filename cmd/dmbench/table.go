package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
)

// printTable prints the runs for a reader, then every target a run missed.
func printTable(w io.Writer, results []*result) {
	if len(results) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workers\tmode\trequests\tfailed\tsteady p50/p99/max ms\trestart p50/p99/max ms\trestart s avg/max\tideal s\tdrain ms\tsig→fork ms\tRSS MB\tCPU s\tidle %\tbalance\tspread of 16\tmaster rps\treuseport rps\tratio\tworker CPU µs/req master/reuseport\t")
	for _, r := range results {
		var sum, worst, drain float64
		for _, rs := range r.Restarts {
			sum += rs.DurationMs
			worst = max(worst, rs.DurationMs)
			drain = max(drain, rs.SlowestDrainMs)
		}
		avg, ideal := 0.0, 0.0
		if n := len(r.Restarts); n > 0 {
			avg, ideal = sum/float64(n), r.Restarts[0].IdealMs
		}
		tput := "-\t-\t-\t-"
		if t := r.Throughput; t != nil {
			tput = fmt.Sprintf("%.0f\t%.0f\t%.3f\t%.0f/%.0f", t.SharedRPS, t.ReusePortRPS, t.Ratio, t.SharedCPUus, t.ReusePortCPUus)
		}
		idle := "-"
		if t, ok := r.Targets["idle_cpu_pct"]; ok {
			idle = fmt.Sprintf("%.3f", t.Value)
		}
		spread := "-"
		if r.Spread != nil {
			spread = strings.Trim(strings.ReplaceAll(fmt.Sprint(r.Spread.PerWorker), " ", "/"), "[]")
		}
		s, x := r.Latency.Steady, r.Latency.Restart
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%.1f/%.1f/%.1f\t%.1f/%.1f/%.1f\t%.3f/%.3f\t%.2f\t%.0f\t%.3f\t%.1f\t%.2f\t%s\t%s\t%s\t%s\t\n",
			r.Workers, r.Mode, r.Requests, r.Failed,
			s.P50, s.P99, s.Max, x.P50, x.P99, x.Max,
			avg/1000, worst/1000, ideal/1000, drain, r.SignalToFirstFork.Max,
			r.Master.PeakRSSMB, r.Master.CPUS, idle, r.Balance, spread, tput)
	}
	tw.Flush()
	for _, r := range results {
		printMissed(w, fmt.Sprintf("%d workers, %s", r.Workers, r.Mode), r.Targets)
	}
}

// printMissed writes a line for each target of a run that was missed, by
// name; run says which run.
func printMissed(w io.Writer, run string, targets map[string]target) {
	for _, name := range slices.Sorted(maps.Keys(targets)) {
		if t := targets[name]; !t.Met {
			fmt.Fprintf(w, "missed: %s: %s = %v (limit %v)\n", run, name, t.Value, t.Limit)
		}
	}
}
