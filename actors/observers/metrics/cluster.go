package metrics

import (
	"bytes"
	"context"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/dutchmaster/dutchmaster/sockets/nodecluster"
)

// ClusterPath serves the metrics of the Node.js workers' prom-client
// registries, gathered over IPC and aggregated as prom-client's
// AggregatorRegistry does in a node:cluster primary (docs/node.md).
const ClusterPath = "/metrics/cluster"

// DefaultNodeTimeout bounds the wait for the workers' answers: that of
// prom-client's own primary.
const DefaultNodeTimeout = 5 * time.Second

// HeaderScrapeTimeout is the scrape's own timeout, in seconds, which
// Prometheus sends with every scrape: the wait is then 90% of it (the
// rest is for the answer), instead of NodeTimeout.
const HeaderScrapeTimeout = "X-Prometheus-Scrape-Timeout-Seconds"

// maxNodeTimeout bounds what HeaderScrapeTimeout may ask for.
const maxNodeTimeout = 5 * time.Minute

// Headers of a ClusterPath answer: how many workers were asked, and how
// many of them are in the aggregate (the others were logged).
const (
	HeaderWorkersAsked    = "Dutchmaster-Workers-Asked"
	HeaderWorkersAnswered = "Dutchmaster-Workers-Answered"
)

// clusterMetrics asks every listening Node.js worker for its metrics,
// waits at most NodeTimeout (or 90% of the scrape's own timeout), and answers with the aggregate of those
// that answered. A worker that does not answer, or answers an error, is
// left out and logged; the answer is 200 all the same, as long as the
// text could be made (an empty body when no worker listens).
func (c *Collector) clusterMetrics(w http.ResponseWriter, r *http.Request) {
	var peers []nodecluster.Peer
	if c.opts.NodeWorkers != nil {
		peers = c.opts.NodeWorkers()
	}
	ctx, cancel := context.WithTimeout(r.Context(), c.nodeTimeout(r))
	defer cancel()
	asked, answers, misses := nodecluster.GatherMetrics(ctx, peers)
	log := c.opts.Logger
	for _, m := range misses {
		log.Warn().Int("worker", m.Worker).Int("pid", m.PID).Err(m.Err).Msg("node worker's metrics left out of " + ClusterPath)
	}
	sets := make([][]nodecluster.Metric, len(answers))
	for i, a := range answers {
		sets[i] = a.Metrics
	}
	agg, err := nodecluster.Aggregate(sets)
	if err != nil {
		log.Warn().Err(err).Msg("node metrics not aggregated")
	}
	var body bytes.Buffer
	if len(agg) > 0 {
		_ = nodecluster.WriteText(&body, agg)
	}
	h := w.Header()
	h.Set("Content-Type", nodecluster.TextContentType)
	h.Set(HeaderWorkersAsked, strconv.Itoa(asked))
	h.Set(HeaderWorkersAnswered, strconv.Itoa(len(answers)))
	_, _ = w.Write(body.Bytes())
}

// nodeTimeout is how long the request waits for the workers: 90% of the
// scrape's timeout when it says one, else NodeTimeout.
func (c *Collector) nodeTimeout(r *http.Request) time.Duration {
	s, err := strconv.ParseFloat(r.Header.Get(HeaderScrapeTimeout), 64)
	if err != nil || s <= 0 || math.IsNaN(s) {
		return c.opts.NodeTimeout
	}
	return min(time.Duration(s*0.9*float64(time.Second)), maxNodeTimeout)
}
