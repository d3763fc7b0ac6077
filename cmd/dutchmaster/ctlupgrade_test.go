//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/actors/core"
	ctlserver "github.com/dutchmaster/dutchmaster/actors/observers/control"
	"github.com/dutchmaster/dutchmaster/sockets/control"
)

// upgradeMaster is a master's control socket in this process, with a
// Supervisor whose Upgrade does what the test says; "exec" replaces the
// control server as a new image does: the old one paused, a new one
// serving the same listening socket (a duplicate of its descriptor, as
// the exec keeps it) with the new version and the upgrade counted.
type upgradeMaster struct {
	t    *testing.T
	path string

	mu      sync.Mutex
	servers []*ctlserver.Server
	image   *image   // the running image's
	asked   []string // the binaries Upgrade was asked for
	upgrade func(m *upgradeMaster, binary string) (ctlserver.UpgradeStarted, error)
}

func newUpgradeMaster(t *testing.T, reports bool, upgrade func(m *upgradeMaster, binary string) (ctlserver.UpgradeStarted, error)) *upgradeMaster {
	m := &upgradeMaster{t: t, path: filepath.Join(t.TempDir(), "ctl.sock"), upgrade: upgrade, image: &image{version: "v1.2.0"}}
	opts := m.options(m.image)
	if !reports {
		opts.Upgrades = nil
	}
	s, err := ctlserver.Listen(opts)
	if err != nil {
		t.Fatal(err)
	}
	m.servers = append(m.servers, s)
	s.Serve(m)
	t.Cleanup(func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		for i := len(m.servers) - 1; i >= 0; i-- {
			m.servers[i].Close()
		}
	})
	return m
}

func (m *upgradeMaster) options(img *image) ctlserver.Options {
	return ctlserver.Options{Path: m.path, Name: "web", Logger: zerolog.Nop(), Version: img.version, Upgrades: func() control.UpgradeStatus {
		m.mu.Lock()
		defer m.mu.Unlock()
		return img.upgrades
	}}
}

// image is what one image of the master reports: a request its server
// took before the exec is answered by it, as the old one would.
type image struct {
	version  string
	upgrades control.UpgradeStatus
}

// exec is a successful exec of the new version.
func (m *upgradeMaster) exec(version string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.servers[len(m.servers)-1]
	old.Pause()
	fd, err := syscall.Dup(old.ListenerFD())
	if err != nil {
		m.t.Error(err)
		return
	}
	next := &image{version: version, upgrades: m.image.upgrades}
	next.upgrades.Count++
	next.upgrades.Last = time.Now()
	m.image = next
	s, err := ctlserver.ListenFD(m.options(next), fd)
	if err != nil {
		m.t.Error(err)
		return
	}
	m.servers = append(m.servers, s)
	s.Serve(m)
}

func (m *upgradeMaster) View(ctx context.Context) (core.View, error) {
	return core.View{Target: 1, Ready: true, Policy: "rolling"}, nil
}
func (m *upgradeMaster) Restart(context.Context, string) ([]core.Decision, error) {
	return nil, errors.New("not in this test")
}
func (m *upgradeMaster) Stop(string) {}
func (m *upgradeMaster) Scale(context.Context, int, string) ([]core.Decision, error) {
	return nil, errors.New("not in this test")
}
func (m *upgradeMaster) ReplaceWorker(context.Context, int, string) ([]core.Decision, error) {
	return nil, errors.New("not in this test")
}
func (m *upgradeMaster) Upgrade(ctx context.Context, binary string) (ctlserver.UpgradeStarted, error) {
	m.mu.Lock()
	m.asked = append(m.asked, binary)
	m.mu.Unlock()
	return m.upgrade(m, binary)
}

// runCtlHere runs ctl in this process.
func runCtlHere(args ...string) result {
	var stdout, stderr bytes.Buffer
	code := runCtl(args, &stdout, &stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// TestCtlUpgrade: ctl upgrade asks for the upgrade of the binary given
// (made absolute), and once the master accepted it and executed the new
// binary, prints one line with the pid kept, both versions and how long
// the master did not answer; with --json, the master's reply and its new
// status.
func TestCtlUpgrade(t *testing.T) {
	next := []string{"v1.3.0", "v1.4.0"}
	m := newUpgradeMaster(t, true, func(m *upgradeMaster, binary string) (ctlserver.UpgradeStarted, error) {
		m.mu.Lock()
		defer m.mu.Unlock()
		to := next[0]
		next = next[1:]
		return ctlserver.UpgradeStarted{Version: m.image.version, Binary: binary, Exec: func() { m.exec(to) }}, nil
	})
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	r := runCtlHere("--control", m.path, "upgrade", "--binary", "bin/dutchmaster")
	line := strings.TrimSpace(r.stdout)
	prefix := "upgraded: pid " + itoa(os.Getpid()) + " kept, v1.2.0 → v1.3.0, master unavailable "
	if r.code != 0 || !strings.HasPrefix(line, prefix) || strings.Count(r.stdout, "\n") != 1 || r.stderr != "" {
		t.Fatalf("ctl upgrade: want one line %q...\n%s", prefix, r)
	}
	if d, err := time.ParseDuration(strings.TrimPrefix(line, prefix)); err != nil || d < 0 {
		t.Fatalf("unavailable %q: %v", strings.TrimPrefix(line, prefix), err)
	}
	if want := filepath.Join(wd, "bin/dutchmaster"); len(m.asked) != 1 || m.asked[0] != want {
		t.Fatalf("the master was asked for %q, want %q", m.asked, want)
	}

	// A second one, the master's own binary, as JSON.
	r = runCtlHere("--control", m.path, "--json", "upgrade")
	var out struct {
		control.Reply
		Unavailable float64 `json:"unavailable_seconds"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &out) != nil {
		t.Fatalf("ctl upgrade --json: %s", r)
	}
	if !out.OK || out.Upgrade == nil || out.Upgrade.PID != os.Getpid() || out.Upgrade.Version != "v1.3.0" || out.Upgrade.Binary != "" ||
		out.Status == nil || out.Status.Version != "v1.4.0" || out.Status.Upgrades == nil || out.Status.Upgrades.Count != 2 || out.Unavailable <= 0 {
		t.Fatalf("ctl upgrade --json: %+v %+v %+v\n%s", out.Reply, out.Upgrade, out.Status, r.stdout)
	}
}

// TestCtlUpgradeRefusedOrFailed: a refusal is printed as the master gave
// it, exit 1; an exec that failed (the master goes on, its count of
// failures grew) is printed with the master's reason, exit 1; a master
// that reports no upgrades is not asked; a master that neither upgrades
// nor fails is waited for until --timeout, exit 3.
func TestCtlUpgradeRefusedOrFailed(t *testing.T) {
	refused := newUpgradeMaster(t, true, func(*upgradeMaster, string) (ctlserver.UpgradeStarted, error) {
		return ctlserver.UpgradeStarted{}, errors.New("upgrade refused: the new binary cannot take over: state format 2 is newer than it reads")
	})
	r := runCtlHere("--control", refused.path, "upgrade")
	if r.code != exitError || r.stdout != "" || r.stderr != "dutchmaster ctl: upgrade refused: the new binary cannot take over: state format 2 is newer than it reads\n" {
		t.Fatalf("refused: %s", r)
	}

	failed := newUpgradeMaster(t, true, func(m *upgradeMaster, binary string) (ctlserver.UpgradeStarted, error) {
		return ctlserver.UpgradeStarted{Version: "v1.2.0", Binary: "/opt/new/dutchmaster", Exec: func() {
			m.mu.Lock()
			m.image.upgrades.Failed++
			m.image.upgrades.LastError = "exec /opt/new/dutchmaster: exec format error"
			m.mu.Unlock()
		}}, nil
	})
	r = runCtlHere("--control", failed.path, "upgrade")
	if r.code != exitError || r.stdout != "" ||
		r.stderr != "dutchmaster ctl: upgrade failed: exec /opt/new/dutchmaster: exec format error (the master goes on as it was)\n" {
		t.Fatalf("failed: %s", r)
	}

	silent := newUpgradeMaster(t, false, nil)
	r = runCtlHere("--control", silent.path, "upgrade")
	if r.code != exitError || !strings.Contains(r.stderr, "does not report upgrades") || len(silent.asked) != 0 {
		t.Fatalf("a master without upgrades: %s (asked %q)", r, silent.asked)
	}

	stuck := newUpgradeMaster(t, true, func(*upgradeMaster, string) (ctlserver.UpgradeStarted, error) {
		return ctlserver.UpgradeStarted{Version: "v1.2.0", Binary: "/opt/new/dutchmaster"}, nil
	})
	r = runCtlHere("--control", stuck.path, "--timeout", "300ms", "upgrade")
	if r.code != exitTimedOut || !strings.Contains(r.stderr, "timed out after 300ms: the master did not report the upgrade done or failed") {
		t.Fatalf("stuck: %s", r)
	}
}

// TestCtlUpgradeUsage: upgrade takes no argument, --binary is for
// upgrade only and wants a path.
func TestCtlUpgradeUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"upgrade", "/opt/new/dutchmaster"}, "upgrade takes no argument: give the new binary as --binary PATH"},
		{[]string{"status", "--binary", "/opt/new/dutchmaster"}, "--binary is for upgrade, not status"},
		{[]string{"upgrade", "--binary", ""}, `--binary "": want the new binary's path`},
	} {
		r := runCtlHere(append([]string{"--control", "/nonexistent/ctl.sock"}, c.args...)...)
		if r.code != exitUsage || r.stderr != "dutchmaster ctl: "+c.want+"\n"+ctlUsageHint+"\n" {
			t.Errorf("ctl %q: %s", c.args, r)
		}
	}
}

// TestStatusUpgradesLine: ctl status says how often the master was
// upgraded in place, its version, and the last failure; nothing before
// any upgrade was asked.
func TestStatusUpgradesLine(t *testing.T) {
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	s := &control.Status{Name: "web", PID: 42, Now: now, Target: 1, Policy: "rolling", Ready: true, Version: "v1.3.0",
		Upgrades: &control.UpgradeStatus{Count: 2, Last: now.Add(-5 * time.Minute), Failed: 1, LastError: "exec /opt/x: exec format error"}}
	var b bytes.Buffer
	printStatus(&b, s)
	if want := "\nupgrades: 2, the last 5m0s ago, version v1.3.0; 1 failed, the last: exec /opt/x: exec format error\n"; !strings.Contains(b.String(), want) {
		t.Fatalf("want %q in:\n%s", want, b.String())
	}
	s.Upgrades = &control.UpgradeStatus{}
	b.Reset()
	printStatus(&b, s)
	if strings.Contains(b.String(), "upgrades") {
		t.Fatalf("an upgrades line before any upgrade:\n%s", b.String())
	}
}
