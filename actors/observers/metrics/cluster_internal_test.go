package metrics

import (
	"net/http/httptest"
	"testing"
	"time"
)

// TestNodeTimeoutFromScrape: the wait for the workers is 90% of the
// timeout a Prometheus scrape states, bounded; without a usable one, the
// collector's own.
func TestNodeTimeoutFromScrape(t *testing.T) {
	c := &Collector{opts: Options{NodeTimeout: DefaultNodeTimeout}}
	for header, want := range map[string]time.Duration{
		"": DefaultNodeTimeout, "x": DefaultNodeTimeout, "0": DefaultNodeTimeout, "-3": DefaultNodeTimeout, "NaN": DefaultNodeTimeout,
		"10": 9 * time.Second, "0.5": 450 * time.Millisecond, "1e9": maxNodeTimeout,
	} {
		r := httptest.NewRequest("GET", ClusterPath, nil)
		if header != "" {
			r.Header.Set(HeaderScrapeTimeout, header)
		}
		if got := c.nodeTimeout(r); got != want {
			t.Errorf("%s: %q gives %s, want %s", HeaderScrapeTimeout, header, got, want)
		}
	}
}
