package metrics

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves /metrics, /metrics/cluster, /healthz and /readyz.
func (c *Collector) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(c.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("GET "+ClusterPath, c.clusterMetrics)
	mux.HandleFunc("GET /healthz", c.healthz)
	mux.HandleFunc("GET /readyz", c.readyz)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "dutchmaster: /metrics, "+ClusterPath+", /healthz, /readyz", http.StatusNotFound)
	})
	return mux
}

// healthz: the master is alive when its cluster actor answers. A liveness
// probe that fails here should restart the container: the supervisor
// itself is stuck.
func (c *Collector) healthz(w http.ResponseWriter, r *http.Request) {
	if _, err := c.view(); err != nil {
		http.Error(w, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

// readyz: ready while at least the target count of workers listen and the
// master is not stopping. A readiness probe that fails here takes the pod
// out of its Service's endpoints until workers listen again.
func (c *Collector) readyz(w http.ResponseWriter, r *http.Request) {
	v, err := c.view()
	if err != nil {
		http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	msg := fmt.Sprintf("%d/%d workers listening, generation %d", v.Listening(), v.Target, v.Generation)
	switch {
	case v.Stopping:
		http.Error(w, "not ready: stopping; "+msg, http.StatusServiceUnavailable)
	case !Ready(v):
		http.Error(w, "not ready: "+msg, http.StatusServiceUnavailable)
	default:
		fmt.Fprintln(w, "ready: "+msg)
	}
}
