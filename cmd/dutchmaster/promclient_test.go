package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The tests of this file run testdata/promclient/app.js, an app that
// uses prom-client's cluster metrics (AggregatorRegistry) unmodified,
// with the prom-client that .ci/run installs there (npm ci).

// promClientApp starts a master with n workers of testdata/promclient/app.js
// and --metrics, and returns it with its metrics address and the workers'
// pids by id.
func promClientApp(t *testing.T, n int, env ...string) (m *master, metricsAddr string, pids map[int]int) {
	t.Helper()
	dir, err := filepath.Abs("testdata/promclient")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "prom-client", "package.json")); err != nil {
		t.Fatalf("prom-client is not installed: run npm ci in %s (make test does)", dir)
	}
	_, port, _ := net.SplitHostPort(freeTCP(t))
	flags := []string{"--dir", dir, "--workers", strconv.Itoa(n), "--metrics", "127.0.0.1:0",
		"--env", "HOST=127.0.0.1", "--env", "PORT=" + port}
	for _, kv := range env {
		flags = append(flags, "--env", kv)
	}
	m = startMasterCommand(t, []string{nodeBinary(t), "app.js"}, flags...)
	e, _ := m.waitFor(0, "metrics listening", nil)
	m.waitFor(0, "cluster ready", nil)
	pids, _ = listeningPIDs(m, 0, n)
	return m, e.str("address"), pids
}

// clusterMetrics GETs /metrics/cluster: the body, and how many workers
// were asked and answered.
func clusterMetrics(t *testing.T, addr string) (body string, asked, answered int) {
	t.Helper()
	c := &http.Client{Timeout: 2 * patience}
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics/cluster", nil)
	if err != nil {
		t.Fatal(err)
	}
	// As Prometheus says its scrape timeout: a generous one, so that the
	// workers' answers count, never the machine's speed.
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", strconv.Itoa(int(patience.Seconds())))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/plain; version=0.0.4; charset=utf-8" {
		t.Fatalf("/metrics/cluster: %d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	asked, _ = strconv.Atoi(resp.Header.Get("Dutchmaster-Workers-Asked"))
	answered, _ = strconv.Atoi(resp.Header.Get("Dutchmaster-Workers-Answered"))
	return string(b), asked, answered
}

// TestPromClientClusterMetrics: the master answers prom-client's cluster
// metrics as a node:cluster primary with an AggregatorRegistry would:
// every worker is asked and included (the counter each worker increments
// by 10^slot sums to 111; each slot's own series is there), a max
// aggregator takes the largest pid, an omitted metric is left out. A
// worker whose collection fails is left out and logged; the others are
// still served.
func TestPromClientClusterMetrics(t *testing.T) {
	fail := filepath.Join(t.TempDir(), "fail")
	m, addr, pids := promClientApp(t, 3, "FAIL_SLOT=2", "FAIL_FILE="+fail)
	body, asked, answered := clusterMetrics(t, addr)
	if asked != 3 || answered != 3 {
		t.Errorf("asked %d, answered %d; want 3 and 3", asked, answered)
	}
	maxPID := 0
	for _, pid := range pids {
		maxPID = max(maxPID, pid)
	}
	for _, want := range []string{
		"# HELP app_jobs_total Jobs done\n# TYPE app_jobs_total counter\napp_jobs_total{kind=\"test\"} 111\n",
		"app_worker_jobs_total{slot=\"0\"} 1\n",
		"app_worker_jobs_total{slot=\"1\"} 1\n",
		"app_worker_jobs_total{slot=\"2\"} 1\n",
		fmt.Sprintf("app_worker_pid %d\n", maxPID),
		"app_fragile 3\n",
		// prom-client's default metrics are not registered by the app
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics/cluster lacks %q", want)
		}
	}
	if strings.Contains(body, "app_omitted") {
		t.Error("/metrics/cluster shows a metric whose aggregator is omit")
	}
	if t.Failed() {
		t.Fatalf("/metrics/cluster:\n%s", body)
	}

	if err := os.WriteFile(fail, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	body, asked, answered = clusterMetrics(t, addr)
	if asked != 3 || answered != 2 || !strings.Contains(body, "app_jobs_total{kind=\"test\"} 11\n") || strings.Contains(body, `slot="2"`) {
		t.Fatalf("with slot 2 failing: asked %d, answered %d, want 3 and 2 and the sum of slots 0 and 1:\n%s", asked, answered, body)
	}
	e, _ := m.waitFor(0, "node worker's metrics left out of /metrics/cluster", nil)
	if !strings.Contains(e.str("error"), "collection failed in slot 2") {
		t.Errorf("left-out worker logged as %v, want the worker's error", e)
	}
	m.stop()
	waitGone(t, values(pids)...)
}

// TestPromClientAnswerOverOneMiB: a worker's answer of several MiB
// (4,000 series of ~650 bytes each: 2.5 MiB) is one process.send line longer
// than the old 1 MiB bound; it arrives whole, and every series of both
// workers is in the aggregate.
func TestPromClientAnswerOverOneMiB(t *testing.T) {
	const series = 4000
	m, addr, pids := promClientApp(t, 2, "BIG_SERIES="+strconv.Itoa(series))
	body, asked, answered := clusterMetrics(t, addr)
	if asked != 2 || answered != 2 {
		t.Fatalf("asked %d, answered %d; want 2 and 2", asked, answered)
	}
	if n := strings.Count(body, "\napp_big{series=\""); n != series {
		t.Errorf("%d app_big series, want %d", n, series)
	}
	if n := strings.Count(body, "x\"} 2\n"); n != series {
		t.Errorf("%d app_big series summed over both workers, want %d", n, series)
	}
	if len(body) < 2<<20 {
		t.Errorf("the aggregate is %d bytes, want the test to exceed 2 MiB", len(body))
	}
	m.stop()
	waitGone(t, values(pids)...)
}
