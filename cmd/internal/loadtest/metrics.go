package loadtest

import (
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// GoStats is what the master's Go runtime says of itself on /metrics (the
// Prometheus Go collector): what /proc cannot tell.
type GoStats struct {
	// Goroutines is go_goroutines (runtime.NumGoroutine: the runtime's
	// own system goroutines are not counted; the one serving the scrape
	// is).
	Goroutines int
	// HeapAlloc is go_memstats_heap_alloc_bytes: the bytes of the heap's
	// allocated objects, live or not yet swept, at the scrape. No GC is
	// forced, so it lies anywhere between the live heap and the heap goal.
	HeapAlloc int64
	// HeapGoal is go_memstats_next_gc_bytes: the heap size at which the
	// next GC starts. The runtime sets it at the end of each GC from the
	// heap that GC found live (with GOGC=100, about twice that, plus the
	// goroutine stacks and globals), so it follows the live heap without
	// the noise of where the scrape falls in the GC cycle. The collector
	// the master registers has no go_gc_heap_live_bytes (that needs
	// runtime/metrics collection, which it does not enable).
	HeapGoal int64
}

// Metric names, as the Go collector of client_golang exposes them.
const (
	metricGoroutines = "go_goroutines"
	metricHeapAlloc  = "go_memstats_heap_alloc_bytes"
	metricHeapGoal   = "go_memstats_next_gc_bytes"
)

// scrapeClient fetches /metrics without keeping connections: a kept
// connection would hold a goroutine in the master (and two here) from
// one reading to the next.
var scrapeClient = &http.Client{
	Transport: &http.Transport{DisableKeepAlives: true},
	Timeout:   10 * time.Second,
}

// ScrapeGo reads the Go collector's gauges from the /metrics endpoint at
// addr (host:port, as "metrics listening" logs it).
func ScrapeGo(addr string) (GoStats, error) {
	resp, err := scrapeClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return GoStats{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return GoStats{}, fmt.Errorf("GET http://%s/metrics: %s", addr, resp.Status)
	}
	return ParseGoStats(resp.Body)
}

// ParseGoStats reads GoStats from a text exposition. A metric may carry
// labels (the master's --name adds name="..."); each must appear once.
func ParseGoStats(r io.Reader) (GoStats, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(r)
	if err != nil {
		return GoStats{}, fmt.Errorf("/metrics: %w", err)
	}
	gauge := func(name string) (float64, error) {
		f := families[name]
		if f == nil || len(f.GetMetric()) != 1 || f.GetMetric()[0].GetGauge() == nil {
			return 0, fmt.Errorf("/metrics: no single gauge %s", name)
		}
		return f.GetMetric()[0].GetGauge().GetValue(), nil
	}
	var st GoStats
	g, err := gauge(metricGoroutines)
	if err != nil {
		return st, err
	}
	alloc, err := gauge(metricHeapAlloc)
	if err != nil {
		return st, err
	}
	goal, err := gauge(metricHeapGoal)
	if err != nil {
		return st, err
	}
	st.Goroutines, st.HeapAlloc, st.HeapGoal = int(g), int64(alloc), int64(goal)
	return st, nil
}
