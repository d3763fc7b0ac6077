package osproc_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/osproc"
	"github.com/dutchmaster/dutchmaster/sockets"
	"github.com/dutchmaster/dutchmaster/sockets/testproc"
)

// The roles are what this binary does when re-run as a worker (or as a
// master, or a worker's child); each returns the exit code. They speak on
// the IPC channel with plain reads and writes on the inherited descriptor
// (blocking, so no poller is set up and no descriptor is added).
func init() {
	for name, run := range map[string]func(args []string) int{
		"report":  roleReport,
		"lines":   roleLines,
		"drain":   roleDrain,
		"notify":  roleNotify,
		"spawner": roleSpawner,
		"sleeper": roleSleeper,
		"exit":    roleExit,
		"chatter": roleChatter,
		"master":  roleMaster,
	} {
		testproc.Register(name, run)
	}
}

// report is what the "report" role tells about itself, as its one IPC line.
type report struct {
	PID, PPID, PGID int
	FDs             []int          // open descriptors, from /proc/self/fd
	Links           map[int]string // readlink of each
	CloseOnExec     map[int]bool   // FD_CLOEXEC of each
	Sockets         map[int]string // local address of each socket descriptor
	Peers           map[int]int    // pid of the peer of each connected unix socket
	Env             []string
	Cwd             string // readlink /proc/self/cwd
	Getwd           string // getcwd(2)
}

// roleReport lists its descriptors first thing, before anything in this
// process can open one, then reports and exits.
func roleReport([]string) int {
	fds, links, err := listFDs()
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		return 1
	}
	rep := report{
		PID: os.Getpid(), PPID: os.Getppid(), PGID: syscall.Getpgrp(),
		FDs: fds, Links: links, Env: os.Environ(),
		CloseOnExec: map[int]bool{}, Sockets: map[int]string{}, Peers: map[int]int{},
	}
	for _, fd := range fds {
		if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
			rep.CloseOnExec[fd] = flags&unix.FD_CLOEXEC != 0
		}
		if sa, err := unix.Getsockname(fd); err == nil {
			rep.Sockets[fd] = sockaddrString(sa)
		}
		if cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil && cred.Pid > 0 {
			rep.Peers[fd] = int(cred.Pid)
		}
	}
	rep.Cwd, _ = os.Readlink("/proc/self/cwd")
	rep.Getwd, _ = unix.Getwd()
	workerIPC().send(rep)
	return 0
}

// listFDs reads /proc/self/fd with raw system calls, leaving out the
// directory's own descriptor.
func listFDs() ([]int, map[int]string, error) {
	dir, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	defer unix.Close(dir)
	var names []string
	buf := make([]byte, 16<<10)
	for {
		n, err := unix.Getdents(dir, buf)
		if err != nil {
			return nil, nil, err
		}
		if n == 0 {
			break
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
	var fds []int
	links := map[int]string{}
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		if err != nil || fd == dir {
			continue
		}
		fds = append(fds, fd)
		link := make([]byte, 4096)
		if n, err := unix.Readlink("/proc/self/fd/"+name, link); err == nil {
			links[fd] = string(link[:n])
		}
	}
	return fds, links, nil
}

func sockaddrString(sa unix.Sockaddr) string {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return "inet " + netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)).String()
	case *unix.SockaddrInet6:
		return "inet " + netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port)).String()
	case *unix.SockaddrUnix:
		if sa.Name == "" || sa.Name == "@" {
			return "unix unnamed"
		}
		return "unix " + sa.Name
	}
	return fmt.Sprintf("%T", sa)
}

// channel is a worker's end of its IPC channel.
type channel struct {
	f *os.File
	r *bufio.Reader
}

func workerIPC() *channel {
	fd, err := strconv.Atoi(os.Getenv("NODE_CHANNEL_FD"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "no NODE_CHANNEL_FD:", err)
		os.Exit(3)
	}
	f := os.NewFile(uintptr(fd), "ipc")
	return &channel{f: f, r: bufio.NewReader(f)}
}

func (c *channel) send(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	c.write(append(b, '\n'))
}

func (c *channel) write(b []byte) {
	if _, err := c.f.Write(b); err != nil {
		fmt.Fprintln(os.Stderr, "ipc write:", err)
		os.Exit(3)
	}
}

// readAll reads lines until EOF (the master's drain, or its death).
func (c *channel) readAll() []string {
	var lines []string
	for {
		line, err := c.r.ReadString('\n')
		if line != "" {
			lines = append(lines, strings.TrimSuffix(line, "\n"))
		}
		if err != nil {
			return lines
		}
	}
}

// roleLines writes n lines {"seq":i}, one line longer than the channel's
// bound, then {"seq":-1}, and exits at once.
func roleLines(args []string) int {
	n, _ := strconv.Atoi(args[0])
	c := workerIPC()
	var b []byte
	for i := range n {
		b = fmt.Appendf(b, "{\"seq\":%d}\n", i)
	}
	c.write(b)
	huge := make([]byte, 0, sockets.MaxLineBytes+16)
	huge = append(huge, '"')
	huge = append(huge, strings.Repeat("x", sockets.MaxLineBytes)...)
	huge = append(huge, '"', '\n')
	c.write(huge)
	c.write([]byte("{\"seq\":-1}\n"))
	return 0
}

// drainReport is what the "drain" role saw.
type drainReport struct {
	Lines    []string // read on the channel before EOF
	EOF      bool
	Signals  []int
	TimedOut bool
}

// roleDrain says ready, then waits for what args[0] names ("ipc": the
// disconnect message and EOF; "signal": a signal; "both"), reports what it
// got on the channel (still open in this direction) and exits 0.
func roleDrain(args []string) int {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTERM)
	c := workerIPC()
	c.send(map[string]string{"event": "ready"})
	read := make(chan []string, 1)
	go func() { read <- c.readAll() }()
	wantIPC, wantSignal := args[0] != "signal", args[0] != "ipc"
	var got drainReport
	timeout := time.After(testTimeout)
	for (wantIPC && !got.EOF) || (wantSignal && len(got.Signals) == 0) {
		select {
		case got.Lines = <-read:
			got.EOF = true
		case s := <-sigs:
			got.Signals = append(got.Signals, int(s.(syscall.Signal)))
		case <-timeout:
			got.TimedOut = true
			c.send(got)
			return 1
		}
	}
	c.send(got)
	return 0
}

// roleNotify sends READY=1 and its identity with sd_notify, says so on
// the channel, and stays until drained.
func roleNotify([]string) int {
	ok, err := daemon.SdNotify(false, "READY=1\nSTATUS=worker "+os.Getenv("DUTCHMASTER_WORKER_ID"))
	if !ok || err != nil {
		fmt.Fprintln(os.Stderr, "sd_notify:", ok, err)
		return 1
	}
	c := workerIPC()
	c.send(map[string]string{"event": "notified"})
	c.readAll()
	return 0
}

// spawned is what the "spawner" role reports.
type spawned struct {
	Child      int // pid of the sleeper it started
	ChildPGID  int
	WorkerPGID int
}

// roleSpawner starts a sleeper child (in the worker's process group, as
// os/exec does by default, with the worker's stdout and stderr), reports, then stays until drained ("stay") or exits at
// once, leaving the child running ("exit").
func roleSpawner(args []string) int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	child := exec.Command(exe)
	child.Env = append(os.Environ(), testproc.Environ("sleeper")...)
	child.Stdout, child.Stderr = os.Stdout, os.Stderr // as a shell's child would
	if err := child.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	pgid, _ := syscall.Getpgid(child.Process.Pid)
	c := workerIPC()
	c.send(spawned{Child: child.Process.Pid, ChildPGID: pgid, WorkerPGID: syscall.Getpgrp()})
	if args[0] == "exit" {
		return 0
	}
	c.readAll()
	return 0
}

func roleSleeper([]string) int {
	time.Sleep(time.Hour)
	return 0
}

func roleExit(args []string) int {
	code, _ := strconv.Atoi(args[0])
	return code
}

// roleChatter writes two stdout lines, six stderr lines and a last stderr
// line without a newline, then exits 1.
func roleChatter([]string) int {
	fmt.Fprint(os.Stdout, "out 1\nout 2\r\n")
	for i := 1; i <= 6; i++ {
		fmt.Fprintf(os.Stderr, "err %d\n", i)
	}
	fmt.Fprint(os.Stderr, "err 7")
	return 1
}

// roleMaster is a small master: it forks one sleeper worker through a
// Runtime, prints "worker PID NOTIFY_SOCKET" on stdout and blocks (until
// killed).
func roleMaster([]string) int {
	rt, err := osproc.New(osproc.Config{Command: []string{os.Args[0]}, Env: testproc.Environ("sleeper")})
	if err != nil {
		fmt.Fprintln(os.Stderr, "master:", err)
		return 1
	}
	events := make(chan any, 16)
	rt.Fork(actors.WorkerSpec{ID: 1}, func(msg any) { events <- msg })
	switch msg := (<-events).(type) {
	case actors.Spawned:
		fmt.Printf("worker %d %s\n", msg.PID, rt.NotifySocket())
	default:
		fmt.Fprintf(os.Stderr, "master: %+v\n", msg)
		return 1
	}
	time.Sleep(time.Hour)
	return 0
}
