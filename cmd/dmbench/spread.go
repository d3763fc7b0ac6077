package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
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
	conns := make([]net.Conn, spreadConns)
	errs := make([]error, spreadConns)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() { conns[i], errs[i] = net.DialTimeout("tcp", addr, timeout) })
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	pids := make([]int, spreadConns)
	for i, c := range conns {
		if errs[i] != nil {
			return nil, fmt.Errorf("spread: connection %d: %w", i, errs[i])
		}
		c.SetDeadline(time.Now().Add(timeout))
		wg.Go(func() { pids[i], errs[i] = askWorker(c) })
	}
	wg.Wait()
	perPID := map[int]int{}
	for i, pid := range pids {
		if errs[i] != nil {
			return nil, fmt.Errorf("spread: request on connection %d: %w", i, errs[i])
		}
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

// askWorker sends one request on c and returns the pid of the worker that
// answered it.
func askWorker(c net.Conn) (int, error) {
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: dmbench\r\n\r\n"); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if pid := loadtest.ServedBy(resp.Header, body); pid != 0 {
		return pid, nil
	}
	return 0, fmt.Errorf("no worker pid in the answer (status %d, %q)", resp.StatusCode, body)
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
