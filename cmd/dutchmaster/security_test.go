//go:build linux

package main

import (
	"os"
	"strings"
	"testing"
)

// TestWorkersAsAnotherUser: a root master runs its workers as nobody
// (--user) while it keeps the sockets, and withholds its own environment
// from them (--env-clear) but for the keys allowed (--env-allow).
func TestWorkersAsAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root, as CI runs it: the master changes the workers' user")
	}
	dir, bin := sharedDir(t)
	m := launchMasterBinary(t, bin, []string{roleEnv + "=master", "MASTER_SECRET=hunter2"}, nil,
		"--log-format", "json", "--user", "nobody", "--env-clear", "--env-allow", "PATH",
		"--env", roleEnv+"=worker", "--env", "FROM_FLAG=1", "--dir", dir, "--workers", "1",
		"--listen", "http=tcp://127.0.0.1:0", "--", bin)

	addr := m.address()
	m.waitFor(0, "cluster ready", nil)
	who, err := get(addr, "/whoami")
	if err != nil {
		t.Fatal(err)
	}
	if who != "uid=65534 gid=65534" {
		t.Errorf("worker runs as %q, want nobody", who)
	}
	env, err := get(addr, "/env")
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]bool{}
	for _, kv := range strings.Split(env, "\n") {
		k, _, _ := strings.Cut(kv, "=")
		vars[k] = true
	}
	// (The worker API unsets LISTEN_* and NODE_CHANNEL_FD once it has read them.)
	for _, want := range []string{"PATH", "FROM_FLAG", "DUTCHMASTER_WORKER_ID", "DUTCHMASTER_SLOT"} {
		if !vars[want] {
			t.Errorf("worker environment lacks %s:\n%s", want, env)
		}
	}
	for _, withheld := range []string{"MASTER_SECRET", "HOME"} {
		if vars[withheld] {
			t.Errorf("worker environment has %s, which --env-clear withholds", withheld)
		}
	}
	m.stop()
}

// TestUnknownUser: an unknown --user is refused before any worker starts.
func TestUnknownUser(t *testing.T) {
	r := runDutchmaster(t, 0, "--user", "no-such-user-here", "--", "true")
	if r.code != exitUsage || !strings.Contains(r.stderr, "--user no-such-user-here: no such user") {
		t.Fatalf("want exit 2 naming the user:\n%s", r)
	}
}
