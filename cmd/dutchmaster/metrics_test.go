//go:build linux

package main

import (
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fetch GETs a URL path, whatever the status.
func fetch(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// TestMetricsAfterRollout: after a rolling restart of two workers,
// /metrics counts one complete rollout, two restarts by rollout, two
// clean exits, four forks and four boots, shows two listening workers of
// generation 2, all labelled with the master's name; /healthz and /readyz
// say 200.
func TestMetricsAfterRollout(t *testing.T) {
	m := startMaster(t, "worker", []string{"DM_TEST_BOOT=50ms"}, "--name", "web", "--metrics", "127.0.0.1:0", "--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
	e, _ := m.waitFor(0, "metrics listening", nil)
	addr := e.str("address")
	_, next := m.waitFor(0, "cluster ready", nil)
	if code, body := fetch(t, addr, "/readyz"); code != http.StatusOK || body != "ready: 2/2 workers listening, generation 1\n" {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	m.signal(syscall.SIGUSR2)
	m.waitFor(next, "restart complete", nil)

	code, body := fetch(t, addr, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	for _, want := range []string{
		`dutchmaster_rollouts_started_total{name="web"} 1`,
		`dutchmaster_rollouts_total{name="web",outcome="complete"} 1`,
		`dutchmaster_rollouts_total{name="web",outcome="aborted"} 0`,
		`dutchmaster_rollout_duration_seconds_count{name="web",outcome="complete"} 1`,
		`dutchmaster_worker_restarts_total{cause="rollout",name="web"} 2`,
		`dutchmaster_worker_restarts_total{cause="failure",name="web"} 0`,
		`dutchmaster_worker_exits_total{cause="clean",name="web"} 2`,
		`dutchmaster_worker_fork_seconds_count{name="web"} 4`,
		`dutchmaster_worker_ready_seconds_count{name="web"} 4`,
		`dutchmaster_worker_ready_seconds_bucket{name="web",le="0.05"} 0`,
		`dutchmaster_workers{name="web",state="listening"} 2`,
		`dutchmaster_workers{name="web",state="forking"} 0`,
		`dutchmaster_target_workers{name="web"} 2`,
		`dutchmaster_generation{name="web"} 2`,
		`dutchmaster_ready{name="web"} 1`,
		`dutchmaster_rollout_in_progress{name="web"} 0`,
	} {
		if !strings.Contains(body, "\n"+want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if !strings.Contains(body, "# TYPE dutchmaster_worker_fork_seconds histogram") || !strings.Contains(body, `process_open_fds{name="web"}`) {
		t.Error("/metrics lacks the fork histogram or the process metrics")
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
	if code, body := fetch(t, addr, "/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	m.stop()
}

// TestReadyzNotReady: while the workers are not ready, /readyz is 503 and
// says how many listen, and /healthz is still 200 (the master is alive).
func TestReadyzNotReady(t *testing.T) {
	m := startMaster(t, "worker", []string{"DM_TEST_FAIL=never-ready", "DM_TEST_FAIL_GEN=1"}, "--metrics", "127.0.0.1:0", "--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
	e, _ := m.waitFor(0, "metrics listening", nil)
	addr := e.str("address")
	m.waitFor(0, "fork", map[string]any{"worker": 2})
	if code, body := fetch(t, addr, "/readyz"); code != http.StatusServiceUnavailable || body != "not ready: 0/2 workers listening, generation 1\n" {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	if code, _ := fetch(t, addr, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}
	if _, body := fetch(t, addr, "/metrics"); !strings.Contains(body, "\ndutchmaster_ready 0\n") || !strings.Contains(body, "\ndutchmaster_workers{state=\"forking\"} 2\n") {
		t.Fatalf("/metrics while not ready:\n%s", body)
	}
	m.stop()
}
