package dutchmaster

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster/sockets/control"
)

// TestReloadThatHangs: Options.Reload runs off Run's loop. A read that
// never returns refuses its restart at reloadTimeout, and every restart
// after it at once while it has not returned; status answers meanwhile,
// and a stop does not wait for it.
func TestReloadThatHangs(t *testing.T) {
	defer func(d time.Duration) { reloadTimeout = d }(reloadTimeout)
	reloadTimeout = 300 * time.Millisecond

	sock := filepath.Join(t.TempDir(), "c.sock")
	release := make(chan struct{})
	defer close(release)
	calls := make(chan struct{}, 10)
	opts := Options{
		Command: []string{"sleep", "1000"}, Ready: "timer:10ms", Workers: func() int { return 1 },
		ControlSocket: sock, KillTimeout: 5 * time.Second,
	}
	opts.Reload = func() (Options, error) {
		calls <- struct{}{}
		<-release
		return opts, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- Run(ctx, opts) }()

	do := func(cmd string) control.Reply {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, err := control.Dial(sock, time.Second)
			if err == nil {
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				rep, err := c.Do(control.Request{Command: cmd})
				c.Close()
				if err != nil {
					t.Fatalf("%s: %v", cmd, err)
				}
				return rep
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v", cmd, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	start := time.Now()
	if rep := do(control.CommandRestart); rep.OK || !strings.Contains(rep.Error, "not read within 300ms") {
		t.Fatalf("restart with a read that hangs: %+v, want refused as not read within 300ms", rep)
	}
	if took := time.Since(start); took < reloadTimeout {
		t.Errorf("refused after %s, before the read's %s were up", took, reloadTimeout)
	}
	<-calls
	if rep := do(control.CommandRestart); rep.OK || !strings.Contains(rep.Error, "has not returned") {
		t.Fatalf("restart while a read given up on still hangs: %+v, want refused at once", rep)
	}
	if len(calls) != 0 {
		t.Errorf("a second read began while the first still hangs")
	}
	if rep := do(control.CommandStatus); !rep.OK || rep.Status == nil {
		t.Fatalf("status while a read hangs: %+v", rep)
	}
	cancel()
	select {
	case err := <-ran:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run still running 20s after its context was done, with a read of the configuration hanging")
	}
}
