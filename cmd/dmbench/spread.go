package main

import (
	"fmt"
	"slices"
	"time"

	"github.com/dutchmaster/dutchmaster/cmd/internal/loadtest"
)

// spreadConns is how many keep-alive connections the spread opens at once:
// what a proxy's pool of connections to the app looks like.
const spreadConns = 16

// spreadStats is how spreadConns connections opened together landed on
// the workers: the connections each worker got, busiest first, and the
// bound on the busiest (an even share plus one).
type spreadStats struct {
	Connections int   `json:"connections"`
	PerWorker   []int `json:"per_worker"`
	Busiest     int   `json:"busiest"`
	Limit       int   `json:"limit"`
}

// measureSpread opens spreadConns connections to addr together, then
// sends one request on each and counts the workers (pids) that answered.
// A worker that got none counts as a 0.
func measureSpread(addr string, workers int, timeout time.Duration) (*spreadStats, error) {
	pids, err := loadtest.OpenTogether(addr, spreadConns, timeout)
	if err != nil {
		return nil, fmt.Errorf("spread: %w", err)
	}
	perPID := map[int]int{}
	for _, pid := range pids {
		perPID[pid]++
	}
	st := &spreadStats{Connections: spreadConns, Limit: (spreadConns+workers-1)/workers + 1}
	for _, n := range perPID {
		st.PerWorker = append(st.PerWorker, n)
	}
	for len(st.PerWorker) < workers {
		st.PerWorker = append(st.PerWorker, 0)
	}
	slices.SortFunc(st.PerWorker, func(a, b int) int { return b - a })
	st.Busiest = st.PerWorker[0]
	return st, nil
}

// balanceOf is the mode the master's "balance" line names.
func balanceOf(events []loadtest.Event) string {
	for _, e := range events {
		if b := e.Str("balance"); b != "" {
			return b
		}
	}
	return ""
}
