package systemd

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/sockets"
	"github.com/dutchmaster/dutchmaster/sockets/wire"
)

// Socket is one descriptor passed by socket activation.
type Socket struct {
	FD   int
	Name string // its LISTEN_FDNAMES entry; "" when systemd gave none
}

// ListenFDs returns the sockets systemd passed to this process, in order,
// and unsets LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES and LISTEN_PIDFDID
// whatever they say. It returns none when LISTEN_PID is not this
// process's pid (the variables were meant for another process), or when
// LISTEN_PIDFDID is set and does not name this process.
func ListenFDs() ([]Socket, error) {
	fds, pidStr, names := os.Getenv(wire.EnvListenFDs), os.Getenv(wire.EnvListenPID), os.Getenv(wire.EnvListenFDNames)
	pidfdID, hasPidfdID := os.LookupEnv(wire.EnvListenPIDFDID)
	for _, k := range []string{wire.EnvListenFDs, wire.EnvListenPID, wire.EnvListenFDNames, wire.EnvListenPIDFDID} {
		os.Unsetenv(k)
	}
	if fds == "" {
		return nil, nil
	}
	if pid, err := strconv.Atoi(pidStr); err != nil || pid != os.Getpid() {
		return nil, nil
	}
	if hasPidfdID && !isSelf(pidfdID) {
		return nil, nil
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 0 || n > 1<<12 {
		return nil, fmt.Errorf("socket activation: %s=%q is not a count", wire.EnvListenFDs, fds)
	}
	var nameList []string
	if names != "" {
		nameList = strings.Split(names, ":")
	}
	out := make([]Socket, n)
	for i := range n {
		out[i] = Socket{FD: wire.FirstFD + i}
		if i < len(nameList) {
			out[i].Name = nameList[i]
		}
	}
	return out, nil
}

// isSelf reports whether id is the inode of a pidfd of this process; it
// cannot tell on a kernel without pidfds, and then says yes.
func isSelf(id string) bool {
	want, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		return false
	}
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return true
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return true
	}
	return st.Ino == want
}

// Match pairs the --listen specs with the activated sockets and adopts
// the sockets it pairs (sockets.Adopt). The result has one entry per spec,
// nil for a spec no socket was passed for (the caller binds it itself),
// and the sockets nobody asked for, which the caller should close.
//
// A socket pairs with the spec of the same name: set the socket unit's
// FileDescriptorName= to the --listen name. With no specs at all, every
// socket is adopted, under its own name (or listen<i> when systemd gave
// none, or the name "unknown" or "stored").
func Match(specs []sockets.Spec, activated []Socket) (listeners []*sockets.Listener, unused []Socket, err error) {
	if len(specs) == 0 {
		for i, s := range activated {
			name := s.Name
			if name == "" || name == "unknown" || name == "stored" {
				name = sockets.DefaultName(i)
			}
			l, err := sockets.Adopt(s.FD, sockets.Spec{Name: name})
			if err != nil {
				closeAll(listeners)
				return nil, nil, err
			}
			listeners = append(listeners, l)
		}
		return listeners, nil, nil
	}
	listeners = make([]*sockets.Listener, len(specs))
	taken := make([]bool, len(activated))
	for i, spec := range specs {
		for j, s := range activated {
			if taken[j] || s.Name != spec.Name {
				continue
			}
			l, err := sockets.Adopt(s.FD, spec)
			if err != nil {
				closeAll(listeners)
				return nil, nil, err
			}
			listeners[i], taken[j] = l, true
			break
		}
	}
	for j, s := range activated {
		if !taken[j] {
			unused = append(unused, s)
		}
	}
	return listeners, unused, nil
}

func closeAll(ls []*sockets.Listener) {
	for _, l := range ls {
		if l != nil {
			l.Close()
		}
	}
}
