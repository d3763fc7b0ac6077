//go:build linux

package main

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// unitFile reads a systemd unit file: the values of each key, in order,
// whatever the section (the examples use no key twice in two sections).
func unitFile(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not KEY=VALUE", path, line)
		}
		keys[k] = append(keys[k], v)
	}
	return keys
}

func one(t *testing.T, unit map[string][]string, key string) string {
	t.Helper()
	if len(unit[key]) != 1 {
		t.Fatalf("want one %s=, got %q", key, unit[key])
	}
	return unit[key][0]
}

// exampleUnits checks docs/systemd/web.{service,socket} and returns the
// master's flags from ExecStart, the socket's name, and ExecReload.
func exampleUnits(t *testing.T) (flags []string, fdName, reload string) {
	t.Helper()
	svc := unitFile(t, "../../docs/systemd/web.service")
	sock := unitFile(t, "../../docs/systemd/web.socket")
	for key, want := range map[string]string{"Type": "notify", "NotifyAccess": "main", "KillMode": "mixed", "KillSignal": "SIGTERM"} {
		if got := one(t, svc, key); got != want {
			t.Errorf("web.service: %s=%s, want %s", key, got, want)
		}
	}
	reload = one(t, svc, "ExecReload")
	if !strings.Contains(reload, "kill -USR2 $MAINPID") {
		t.Errorf("web.service: ExecReload=%s, want kill -USR2 $MAINPID", reload)
	}
	if one(t, sock, "Accept") != "no" {
		t.Error("web.socket: Accept= must be no")
	}
	fdName = one(t, sock, "FileDescriptorName")
	args := strings.Fields(one(t, svc, "ExecStart"))
	for i, a := range args[1:] {
		if a == "--" {
			flags = args[1 : i+1]
			break
		}
	}
	if !strings.Contains(strings.Join(flags, " "), "--listen "+fdName+"=") {
		t.Fatalf("web.service: ExecStart has no --listen %s=... matching web.socket's FileDescriptorName", fdName)
	}
	return flags, fdName, reload
}

// localize replaces what in the example's flags names this machine's
// paths and ports with the test's, and keeps the rest.
func localize(flags []string, fdName, addr, dir string) []string {
	var out []string
	for i := 0; i < len(flags); i++ {
		f := flags[i]
		if i+1 >= len(flags) {
			out = append(out, f)
			continue
		}
		switch f {
		case "--listen":
			out, i = append(out, f, fdName+"=tcp://"+addr), i+1
		case "--control", "--pidfile":
			out, i = append(out, f, filepath.Join(dir, filepath.Base(flags[i+1]))), i+1
		case "--metrics":
			out, i = append(out, f, "127.0.0.1:0"), i+1
		case "--workers":
			out, i = append(out, f, "2"), i+1
		default:
			out = append(out, f)
		}
	}
	return out
}

// datagram is one sd_notify message and its sender's pid.
type datagram struct {
	payload string
	pid     int
}

// notifySocket plays systemd's notify socket: every datagram, with its
// sender's credentials.
func notifySocket(t *testing.T) (string, chan datagram) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := conn.SyscallConn()
	raw.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) })
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan datagram, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf, oob := make([]byte, 4096), make([]byte, 1024)
		for {
			n, noob, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			d := datagram{payload: string(buf[:n])}
			if msgs, err := unix.ParseSocketControlMessage(oob[:noob]); err == nil {
				for i := range msgs {
					if c, err := unix.ParseUnixCredentials(&msgs[i]); err == nil {
						d.pid = int(c.Pid)
					}
				}
			}
			ch <- d
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return path, ch
}

// expect waits for the next datagram, which must come from pid and match
// want line by line ("MONOTONIC_USEC=*" matches any value), and returns it.
func expect(t *testing.T, ch chan datagram, pid int, want ...string) datagram {
	t.Helper()
	select {
	case d := <-ch:
		got := strings.Split(d.payload, "\n")
		ok := len(got) == len(want) && d.pid == pid
		for i := range want {
			if !ok {
				break
			}
			if prefix, any := strings.CutSuffix(want[i], "*"); any {
				ok = strings.HasPrefix(got[i], prefix)
			} else {
				ok = got[i] == want[i]
			}
		}
		if !ok {
			t.Fatalf("sd_notify from pid %d: %q\nwant from pid %d: %q", d.pid, got, pid, want)
		}
		return d
	case <-time.After(patience):
		t.Fatalf("no sd_notify %q within %s", want, patience)
		return datagram{}
	}
}

func monotonicUsec(t *testing.T) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Nano() / 1000
}

// TestSystemd plays systemd for the example units of docs/systemd: the
// socket of web.socket passed as fd 3 with LISTEN_FDS, LISTEN_FDNAMES and
// LISTEN_PID (the master's own pid), and a notify socket. The master
// adopts the socket instead of binding, says READY=1 once its workers
// listen, RELOADING=1 (with MONOTONIC_USEC) then READY=1 around a reload
// done with the unit's ExecReload, and STOPPING=1 on the unit's
// KillSignal; every datagram comes from the master (NotifyAccess=main),
// none from a worker. Then the socket outlives the master: a request sent
// while no master runs is answered by the workers of the next one.
func TestSystemd(t *testing.T) {
	flags, fdName, reload := exampleUnits(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sock, err := ln.(*net.TCPListener).File() // a duplicate, as systemd would pass
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	addr := ln.Addr().String()
	notify, datagrams := notifySocket(t)
	dir := t.TempDir()
	args := masterArgs(t, "systemd-worker", nil, localize(flags, fdName, addr, dir)...)
	env := []string{roleEnv + "=listen-pid-master", "LISTEN_FDS=1", "LISTEN_FDNAMES=" + fdName, "NOTIFY_SOCKET=" + notify}
	m := launchMaster(t, env, []*os.File{sock}, args...)
	pid := m.PID()

	e, _ := m.waitFor(0, "listening", nil)
	if e.str("address") != addr || e.str("listener") != fdName || e["socket_activated"] != true {
		t.Fatalf("listening event %v: want the socket of web.socket, at %s", e, addr)
	}
	expect(t, datagrams, pid, "READY=1", "STATUS=ready: 2 workers, generation 1")
	_, next := m.waitFor(0, "cluster ready", nil)
	if _, err := get(addr, "/"); err != nil {
		t.Fatal(err)
	}

	before := monotonicUsec(t)
	cmd := exec.Command("/bin/sh", "-c", strings.ReplaceAll(reload, "$MAINPID", strconv.Itoa(pid)))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ExecReload=%s: %v\n%s", reload, err, out)
	}
	d := expect(t, datagrams, pid, "RELOADING=1", "MONOTONIC_USEC=*", "STATUS=restarting: rolling to generation 2 (SIGUSR2), 2 workers")
	usec, _ := strconv.ParseInt(strings.TrimPrefix(strings.Split(d.payload, "\n")[1], "MONOTONIC_USEC="), 10, 64)
	if after := monotonicUsec(t); usec < before || usec > after {
		t.Fatalf("MONOTONIC_USEC=%d, not between %d and %d", usec, before, after)
	}
	expect(t, datagrams, pid, "READY=1", "STATUS=ready: 2 workers, generation 2; restart complete")
	m.waitFor(next, "restart complete", nil)

	m.signal(syscall.SIGTERM)
	expect(t, datagrams, pid, "STOPPING=1", "STATUS=stopping (SIGTERM): draining the workers")
	expect(t, datagrams, pid, "STATUS=stopped")
	if code := m.wait(); code != 0 {
		t.Fatalf("exit status %d", code)
	}

	// No master runs; the socket does. A request now waits in its queue.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("connect while no master runs: %v", err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET / HTTP/1.0\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	m2 := launchMaster(t, env, []*os.File{sock}, args...)
	workers, _ := listeningPIDs(m2, 0, 2)
	conn.SetReadDeadline(time.Now().Add(patience))
	body, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("the request sent between masters: %v", err)
	}
	answered := false
	for _, pid := range workers {
		answered = answered || strings.HasSuffix(string(body), "\r\n\r\n"+strconv.Itoa(pid))
	}
	if !answered {
		t.Fatalf("the request sent between masters got %q, want the pid of one of %v", body, workers)
	}
	expect(t, datagrams, m2.PID(), "READY=1", "STATUS=ready: 2 workers, generation 1")
	m2.stop()
	expect(t, datagrams, m2.PID(), "STOPPING=1", "STATUS=stopping (SIGTERM): draining the workers")
	expect(t, datagrams, m2.PID(), "STATUS=stopped")
	if len(datagrams) > 0 {
		d := <-datagrams
		t.Fatalf("unexpected sd_notify %q from pid %d", d.payload, d.pid)
	}
}

// TestSystemdUpgrade: under the example unit, with its socket passed by
// socket activation and --upgrade-signal SIGWINCH, the signal (what
// `systemctl kill --kill-whom=main --signal=SIGWINCH web` sends) upgrades
// the master in place to the binary it was started from: RELOADING=1 then
// READY=1 from the same pid (MAINPID does not change), the workers go on,
// a reload afterwards is a rolling restart as before, and a stop ends the
// master with the socket left to systemd.
func TestSystemdUpgrade(t *testing.T) {
	flags, fdName, _ := exampleUnits(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sock, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	addr := ln.Addr().String()
	notify, datagrams := notifySocket(t)
	args := masterArgs(t, "systemd-worker", nil, append(localize(flags, fdName, addr, t.TempDir()), "--upgrade-signal", "SIGWINCH")...)
	env := []string{roleEnv + "=listen-pid-master", "LISTEN_FDS=1", "LISTEN_FDNAMES=" + fdName, "NOTIFY_SOCKET=" + notify}
	m := launchMaster(t, env, []*os.File{sock}, args...)
	pid := m.PID()
	expect(t, datagrams, pid, "READY=1", "STATUS=ready: 2 workers, generation 1")
	_, next := m.waitFor(0, "cluster ready", nil)
	workers, _ := listeningPIDs(m, 0, 2)

	m.signal(syscall.SIGWINCH)
	expect(t, datagrams, pid, "RELOADING=1", "MONOTONIC_USEC=*", "STATUS=*")
	expect(t, datagrams, pid, "READY=1", "STATUS=*")
	e, next := m.waitFor(next, "upgrade: took over", nil)
	if e.num("pid") != pid || e.num("workers") != 2 {
		t.Fatalf("took over: %v, want pid %d with 2 workers", e, pid)
	}
	for _, w := range workers {
		if !alive(w) {
			t.Fatalf("worker pid %d did not survive the upgrade", w)
		}
	}
	if body, err := get(addr, "/"); err != nil || body == "" {
		t.Fatalf("GET / after the upgrade: %q, %v", body, err)
	}

	m.signal(syscall.SIGUSR2)
	expect(t, datagrams, pid, "RELOADING=1", "MONOTONIC_USEC=*", "STATUS=restarting: rolling to generation 2 (SIGUSR2), 2 workers")
	expect(t, datagrams, pid, "READY=1", "STATUS=ready: 2 workers, generation 2; restart complete")
	m.waitFor(next, "restart complete", nil)
	waitGone(t, values(workers)...)
	m.signal(syscall.SIGTERM)
	expect(t, datagrams, pid, "STOPPING=1", "STATUS=stopping (SIGTERM): draining the workers")
	expect(t, datagrams, pid, "STATUS=stopped")
	if code := m.wait(); code != 0 {
		t.Fatalf("exit status %d", code)
	}
	if _, err := net.Dial("tcp", addr); err != nil {
		t.Fatalf("the socket did not outlive the master: %v", err)
	}
}
