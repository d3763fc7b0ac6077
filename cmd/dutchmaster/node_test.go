//go:build linux

package main

import (
	"os/exec"
	"strconv"
	"syscall"
	"testing"
)

// TestNodeWorker: a plain Node.js worker (server.listen({fd: 3}),
// process.send) is supervised like any other: it becomes ready over IPC,
// asks for its own replacement, and drains on the master's disconnect.
func TestNodeWorker(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed; .ci/run installs it (apt-get install nodejs)")
	}
	m := startMasterCommand(t, []string{node, "testdata/worker.js"}, "--worker-protocol", "fds", "--workers", "2", "--listen", "http=tcp://127.0.0.1:0")
	addr := m.address()
	_, next := m.waitFor(0, "cluster ready", nil)
	old, _ := listeningPIDs(m, 0, 2)

	body, err := get(addr, "/restart")
	if err != nil {
		t.Fatal(err)
	}
	asker, _ := strconv.Atoi(body)
	_, next = m.waitFor(next, "worker requested restart", map[string]any{"pid": asker})
	_, next = m.waitFor(next, "restart complete", nil)
	waitGone(t, asker)

	traffic := startLoad(addr, 4, 100000)
	m.signal(syscall.SIGUSR2)
	_, next = m.waitFor(next, "restart complete", nil)
	traffic.finish()
	if n := traffic.failed.Load(); n != 0 {
		t.Errorf("%d requests failed during the rolling restart; first: %v", n, traffic.firstErr.Load())
	}
	for _, e := range m.all("worker exited") {
		if e.str("reason") != "clean" {
			t.Errorf("worker %d exited with %q, want a clean exit after disconnect", e.num("worker"), e.str("reason"))
		}
	}
	m.stop()
	waitGone(t, values(old)...)
}
