package sockets

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestPlanWorkerFiles(t *testing.T) {
	a := mustBind(t, "web=tcp://127.0.0.1:0")
	b := mustBind(t, "unix://"+filepath.Join(t.TempDir(), "b.sock")) // no name: DefaultName(1)
	ch, child, err := NewChannel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	defer child.Close()

	plan := PlanWorkerFiles([]*Listener{a, b}, child, "/run/dm/notify.sock")
	if !slices.Equal(plan.ExtraFiles, []*os.File{a.File(), b.File(), child}) {
		t.Errorf("ExtraFiles %v, want the listeners in order, then the channel", plan.ExtraFiles)
	}
	wantEnv := []string{
		"LISTEN_FDS=2", "LISTEN_FDNAMES=web:listen1",
		"NODE_CHANNEL_FD=5", "NODE_CHANNEL_SERIALIZATION_MODE=json",
		"NOTIFY_SOCKET=/run/dm/notify.sock",
	}
	if !slices.Equal(plan.Env, wantEnv) || plan.ChannelFD != 5 {
		t.Errorf("Env %q, ChannelFD %d\nwant %q, 5", plan.Env, plan.ChannelFD, wantEnv)
	}

	base := []string{"PATH=/bin", "LISTEN_FDS=9", "LISTEN_PID=1", "LISTEN_PIDFDID=7", "NOTIFY_SOCKET=/run/systemd/notify",
		"WATCHDOG_USEC=1", "WATCHDOG_PID=1", "NODE_UNIQUE_ID=3", "NODE_CHANNEL_FD=9", "HOME=/root"}
	got := plan.Environ(base)
	want := append([]string{"PATH=/bin", "HOME=/root"}, wantEnv...)
	if !slices.Equal(got, want) {
		t.Errorf("Environ:\n got %q\nwant %q", got, want)
	}
}

func TestPlanWorkerFilesWithoutExtras(t *testing.T) {
	plan := PlanWorkerFiles(nil, nil, "")
	if len(plan.ExtraFiles) != 0 || len(plan.Env) != 0 || plan.ChannelFD != -1 {
		t.Fatalf("got %+v, want nothing to inherit", plan)
	}
	// Even then the master's own systemd variables must not leak through.
	if got := plan.Environ([]string{"NOTIFY_SOCKET=/run/systemd/notify", "A=b"}); !slices.Equal(got, []string{"A=b"}) {
		t.Fatalf("Environ = %q", got)
	}

	ch, child, err := NewChannel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	defer child.Close()
	if plan := PlanWorkerFiles(nil, child, ""); plan.ChannelFD != 3 || !slices.Equal(plan.Env, []string{"NODE_CHANNEL_FD=3", "NODE_CHANNEL_SERIALIZATION_MODE=json"}) {
		t.Fatalf("channel only: %+v", plan)
	}
}
