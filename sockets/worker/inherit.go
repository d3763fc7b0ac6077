package worker

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dutchmaster/dutchmaster/sockets/wire"
)

var (
	// ErrNotActivated: this process inherited no sockets meant for it
	// (LISTEN_FDS unset, or LISTEN_PID names another process). A program
	// that also runs outside dutchmaster can fall back to net.Listen on it.
	ErrNotActivated = errors.New("worker: no inherited sockets")
	// ErrNoChannel: no IPC channel (NODE_CHANNEL_FD unset).
	ErrNoChannel = errors.New("worker: no IPC channel")
	// ErrDisconnected: the master closed the IPC channel.
	ErrDisconnected = errors.New("worker: IPC channel disconnected")
)

// maxInherited bounds LISTEN_FDS, as a guard against garbage.
const maxInherited = 1 << 12

// environ is the process environment, replaceable in tests.
type environ struct {
	lookup func(string) (string, bool)
	unset  func(string)
	pid    func() int
}

var osEnviron = environ{
	lookup: os.LookupEnv,
	unset:  func(k string) { os.Unsetenv(k) },
	pid:    os.Getpid,
}

// inherited is what this process received from the master, claimed once.
type inherited struct {
	sockets    []Socket
	socketsErr error
	ch         *channel // nil without IPC
	chErr      error    // NODE_CHANNEL_FD set but unusable
	notifyAddr string   // NOTIFY_SOCKET, "" without
	// watchdog is WATCHDOG_USEC when WATCHDOG_PID is this process: how
	// often the master wants a heartbeat; 0 without.
	watchdog time.Duration
	// maxRequests is DUTCHMASTER_MAX_REQUESTS; 0 without.
	maxRequests int64

	readyMu   sync.Mutex
	readySent bool

	watchOnce sync.Once
	drainOnce sync.Once
	drained   chan struct{}
}

// current claims the inherited state on first use.
var current = sync.OnceValue(func() *inherited { return claim(osEnviron) })

// claim reads and unsets the protocol variables and takes the descriptors
// they name.
func claim(e environ) *inherited {
	in := &inherited{drained: make(chan struct{})}
	in.sockets, in.socketsErr = claimSockets(e)
	in.ch, in.chErr = claimChannel(e)
	if v, ok := e.lookup(wire.EnvNotifySocket); ok {
		in.notifyAddr = v
		e.unset(wire.EnvNotifySocket)
	}
	in.watchdog = claimWatchdog(e)
	if v, ok := e.lookup(wire.EnvMaxRequests); ok {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
			in.maxRequests = n
		}
		e.unset(wire.EnvMaxRequests)
	}
	return in
}

// claimWatchdog reads WATCHDOG_USEC, meant for this process only when
// WATCHDOG_PID names it (as sd_watchdog_enabled does).
func claimWatchdog(e environ) time.Duration {
	usec, ok := e.lookup(wire.EnvWatchdogUSec)
	pid, pidOK := e.lookup(wire.EnvWatchdogPID)
	e.unset(wire.EnvWatchdogUSec)
	e.unset(wire.EnvWatchdogPID)
	if !ok {
		return 0
	}
	if pidOK && pid != strconv.Itoa(e.pid()) {
		return 0
	}
	n, err := strconv.ParseInt(usec, 10, 64)
	if err != nil || n <= 0 {
		return 0
	}
	return time.Duration(n) * time.Microsecond
}

func claimSockets(e environ) ([]Socket, error) {
	count, ok := e.lookup(wire.EnvListenFDs)
	pidStr, pidOK := e.lookup(wire.EnvListenPID)
	namesStr, _ := e.lookup(wire.EnvListenFDNames)
	for _, k := range []string{wire.EnvListenFDs, wire.EnvListenPID, wire.EnvListenFDNames, wire.EnvListenPIDFDID} {
		e.unset(k)
	}
	switch pid, err := strconv.Atoi(pidStr); {
	case !ok:
		return nil, ErrNotActivated
	case !pidOK:
		return nil, fmt.Errorf("%w: LISTEN_FDS is set but LISTEN_PID is not; start the worker through dutchmaster or systemd", ErrNotActivated)
	case err != nil || pid != e.pid():
		return nil, fmt.Errorf("%w: LISTEN_PID=%s is not this process (pid %d)", ErrNotActivated, pidStr, e.pid())
	}
	n, err := strconv.Atoi(count)
	if err != nil || n < 1 || n > maxInherited {
		return nil, fmt.Errorf("worker: LISTEN_FDS=%q is not a count of sockets", count)
	}
	var names []string
	if namesStr != "" {
		names = strings.Split(namesStr, ":")
	}
	sockets := make([]Socket, 0, n)
	for i := range n {
		fd := wire.FirstFD + i
		name := "LISTEN_FD_" + strconv.Itoa(fd) // go-systemd's name for an unnamed one
		if i < len(names) && names[i] != "" {
			name = names[i]
		}
		s, err := adopt(fd, name)
		if err != nil {
			for _, done := range sockets {
				done.close()
			}
			return nil, err
		}
		sockets = append(sockets, s)
	}
	return sockets, nil
}

func (s Socket) close() {
	if s.Listener != nil {
		s.Listener.Close()
	}
	if s.PacketConn != nil {
		s.PacketConn.Close()
	}
}
