package metrics_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/actors/observers/metrics"
	"github.com/dutchmaster/dutchmaster/scenarios"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// cluster runs a scripted cluster of n workers whose steps feed a collector.
func cluster(t *testing.T, n int) (*scenarios.Driver, *metrics.Collector) {
	t.Helper()
	return clusterWith(t, n, core.Config{})
}

// clusterWith is cluster with a core configuration.
func clusterWith(t *testing.T, n int, cfg core.Config) (*scenarios.Driver, *metrics.Collector) {
	t.Helper()
	d := scenarios.NewDriver()
	t.Cleanup(d.Close)
	c := metrics.New(metrics.Options{Name: "web", View: func(context.Context) (core.View, error) { return d.Host.View(), nil }})
	d.Start(actors.Options{Logger: zerolog.Nop(), Observe: c.Observe, Workers: func() int { return n }, Core: cfg},
		func(o actors.Options) scenarios.Host { return scenarios.NewSyncHost(o) })
	return d, c
}

func get(t *testing.T, c *metrics.Collector, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	c.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

// has fails unless every line is in the /metrics text.
func has(t *testing.T, c *metrics.Collector, lines ...string) {
	t.Helper()
	code, body := get(t, c, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	for _, l := range lines {
		if !strings.Contains(body, l+"\n") {
			t.Errorf("/metrics lacks %q", l)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", grep(body, "dutchmaster_"))
	}
}

func grep(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestRollingRestart: a completed rollout of two workers counts one
// complete rollout, two restarts by rollout, four forks and four boots,
// and the gauges show two listening workers of generation 2. The first
// three workers take 2 s to get ready; the last one, forked when the
// third is ready, says ready at once (SettleWorkers), so the boots sum to
// 6 s and the rollout takes 2 s.
func TestRollingRestart(t *testing.T) {
	d, c := cluster(t, 2)
	d.Advance(2 * time.Second)
	must(t, d.SettleWorkers())
	if code, body := get(t, c, "/readyz"); code != http.StatusOK || !strings.Contains(body, "2/2 workers listening") {
		t.Fatalf("/readyz: %d %s", code, body)
	}
	must(t, d.Signal(syscall.SIGUSR2))
	d.Advance(2 * time.Second)
	must(t, d.SettleWorkers())
	has(t, c,
		`dutchmaster_rollouts_started_total{name="web"} 1`,
		`dutchmaster_rollouts_total{name="web",outcome="complete"} 1`,
		`dutchmaster_rollouts_total{name="web",outcome="aborted"} 0`,
		`dutchmaster_rollout_duration_seconds_sum{name="web",outcome="complete"} 2`,
		`dutchmaster_worker_restarts_total{cause="rollout",name="web"} 2`,
		`dutchmaster_worker_restarts_total{cause="failure",name="web"} 0`,
		`dutchmaster_worker_exits_total{cause="clean",name="web"} 2`,
		`dutchmaster_worker_fork_seconds_count{name="web"} 4`,
		`dutchmaster_worker_ready_seconds_count{name="web"} 4`,
		`dutchmaster_worker_ready_seconds_sum{name="web"} 6`,
		`dutchmaster_worker_ready_seconds_bucket{name="web",le="1"} 1`,
		`dutchmaster_worker_ready_seconds_bucket{name="web",le="2.5"} 4`,
		`dutchmaster_workers{name="web",state="listening"} 2`,
		`dutchmaster_workers{name="web",state="forking"} 0`,
		`dutchmaster_workers{name="web",state="draining"} 0`,
		`dutchmaster_target_workers{name="web"} 2`,
		`dutchmaster_generation{name="web"} 2`,
		`dutchmaster_ready{name="web"} 1`,
		`dutchmaster_rollout_in_progress{name="web"} 0`,
	)
	_, body := get(t, c, "/metrics")
	if !strings.Contains(body, "go_goroutines") || !strings.Contains(body, "process_") {
		t.Error("no Go runtime or process metrics")
	}
}

// TestWorkerHealth: a worker over its memory limit is recycled, one that
// misses its watchdog is counted as a miss.
func TestWorkerHealth(t *testing.T) {
	d, c := clusterWith(t, 2, core.Config{Watchdog: 10 * time.Second, Recycle: core.Recycle{MaxMemory: 100, MemorySamples: 1}})
	must(t, d.SettleWorkers())
	d.Send(core.UsageSampled{Samples: []core.RSSSample{{Worker: 1, RSS: 10}, {Worker: 2, RSS: 10}}})
	d.Send(core.UsageSampled{Samples: []core.RSSSample{{Worker: 1, RSS: 500}, {Worker: 2, RSS: 10}}})
	must(t, d.SettleWorkers())
	must(t, d.Deliver(2, actors.IPC{Line: []byte(`{"event":"heartbeat"}`)}))
	must(t, d.Deliver(3, actors.Notify{Payload: "WATCHDOG=1"}))
	d.Advance(11 * time.Second)
	has(t, c,
		`dutchmaster_worker_recycles_total{cause="memory",name="web"} 1`,
		`dutchmaster_worker_recycles_total{cause="lifetime",name="web"} 0`,
		`dutchmaster_worker_recycles_total{cause="max-requests",name="web"} 0`,
		`dutchmaster_watchdog_misses_total{name="web"} 2`,
	)
}

// TestFailuresAndAbort: a crash is a restart by failure and an exit by
// code; a replacement that crashes aborts the rollout; a scale down and
// up again is no restart at all.
func TestFailuresAndAbort(t *testing.T) {
	d, c := cluster(t, 2)
	must(t, d.SettleWorkers())
	must(t, d.Deliver(1, actors.Exited{Code: 1}))
	must(t, d.SettleWorkers())
	must(t, d.Signal(syscall.SIGUSR2))
	v := d.Host.View()
	newest := v.Workers[len(v.Workers)-1]
	must(t, d.Deliver(newest.ID, actors.Exited{Signal: syscall.SIGSEGV}))
	must(t, d.SettleWorkers())
	must(t, d.Signal(syscall.SIGTTOU))
	must(t, d.SettleWorkers())
	must(t, d.Signal(syscall.SIGTTIN))
	must(t, d.SettleWorkers())
	has(t, c,
		`dutchmaster_worker_restarts_total{cause="failure",name="web"} 1`,
		`dutchmaster_worker_restarts_total{cause="rollout",name="web"} 1`,
		`dutchmaster_rollouts_total{name="web",outcome="aborted"} 1`,
		`dutchmaster_worker_exits_total{cause="code",name="web"} 1`,
		`dutchmaster_worker_exits_total{cause="signal",name="web"} 1`,
		`dutchmaster_worker_exits_total{cause="clean",name="web"} 1`,
		`dutchmaster_workers{name="web",state="listening"} 2`,
	)
}

// TestHealth: /readyz says 503 until the target listens and again once
// the master stops; /healthz fails only when the cluster does not answer.
func TestHealth(t *testing.T) {
	d, c := cluster(t, 2)
	if code, body := get(t, c, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "0/2") {
		t.Fatalf("/readyz while forking: %d %s", code, body)
	}
	if code, _ := get(t, c, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}
	must(t, d.SettleWorkers())
	if code, _ := get(t, c, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz when ready: %d", code)
	}
	must(t, d.Signal(syscall.SIGTERM))
	if code, body := get(t, c, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "stopping") {
		t.Fatalf("/readyz while stopping: %d %s", code, body)
	}

	dead := metrics.New(metrics.Options{View: func(context.Context) (core.View, error) { return core.View{}, errors.New("no answer") }})
	if code, body := get(t, dead, "/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no answer") {
		t.Fatalf("/healthz of a dead cluster: %d %s", code, body)
	}
	if code, _ := get(t, dead, "/nope"); code != http.StatusNotFound {
		t.Fatalf("/nope: %d", code)
	}
}

// TestClusterPathWithoutNodeWorkers: with no Node.js worker listening,
// /metrics/cluster answers at once, empty, having asked nobody.
func TestClusterPathWithoutNodeWorkers(t *testing.T) {
	_, c := cluster(t, 1)
	rec := httptest.NewRecorder()
	c.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, metrics.ClusterPath, nil))
	if rec.Code != http.StatusOK || rec.Body.Len() != 0 || rec.Header().Get(metrics.HeaderWorkersAsked) != "0" || rec.Header().Get(metrics.HeaderWorkersAnswered) != "0" {
		t.Fatalf("%s: %d %v %q", metrics.ClusterPath, rec.Code, rec.Header(), rec.Body.String())
	}
}
