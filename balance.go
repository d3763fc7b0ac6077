package dutchmaster

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/actors/observers/balance"
	"github.com/dutchmaster/dutchmaster/actors/osproc"
	"github.com/dutchmaster/dutchmaster/sockets"
	"github.com/dutchmaster/dutchmaster/sockets/nodecluster"
	"github.com/dutchmaster/dutchmaster/sockets/reuseport"
	"github.com/dutchmaster/dutchmaster/sockets/wire"
)

// The values of Options.Balance.
const (
	BalanceAuto       = "auto"
	BalanceKernel     = "kernel"
	BalanceRoundRobin = "round-robin" // Node.js cluster workers only
	BalanceShared     = "shared"
)

// balanceMode decides the mode the master takes for p (kernel,
// round-robin or shared), and why, for the log line. An explicit mode
// that cannot be had is an error. Node.js cluster workers listen where
// the app says, so they need no TCP --listen listener; where the kernel
// mode cannot be had, auto gives them round-robin, as Node's own primary.
func balanceMode(p plan) (mode, why string, err error) {
	switch p.balance {
	case BalanceShared, BalanceRoundRobin:
		return p.balance, "asked for", nil
	}
	no := func(reason string) (string, string, error) {
		if p.balance == BalanceKernel {
			return "", "", fieldErr("Balance", "Options.Balance kernel: %s", reason)
		}
		if p.nodeCluster {
			return BalanceRoundRobin, reason, nil
		}
		return BalanceShared, reason, nil
	}
	tcp := p.nodeCluster
	for _, s := range p.specs {
		tcp = tcp || isTCP(s)
	}
	if !tcp {
		return no("no TCP listener")
	}
	if socketActivated() {
		return no("the listeners come from systemd's socket activation")
	}
	if err := reuseport.Available(); err != nil {
		return no("the socket-selection program could not be loaded: " + err.Error())
	}
	if p.balance == BalanceKernel {
		return BalanceKernel, "asked for", nil
	}
	return BalanceKernel, "the socket-selection program loads", nil
}

// nodeServers is the registry that answers the Node.js cluster workers'
// queries in mode (nil for fds workers): kernel hands out slot sockets
// (groups are the --listen listeners' own), round-robin hands
// connections over.
func nodeServers(p plan, mode string, listeners []*sockets.Listener, groups []*reuseport.Group, log zerolog.Logger) *nodecluster.Registry {
	if !p.nodeCluster {
		return nil
	}
	return nodecluster.NewBalancedRegistry(listeners, nodeBalancing(mode, groups, log))
}

// nodeBalancing is how the Node.js servers are balanced in mode.
func nodeBalancing(mode string, groups []*reuseport.Group, log zerolog.Logger) nodecluster.Balancing {
	b := nodecluster.Balancing{Mode: nodecluster.Shared, Groups: groups, Log: log}
	switch mode {
	case BalanceKernel:
		b.Mode = nodecluster.Kernel
	case BalanceRoundRobin:
		b.Mode = nodecluster.RoundRobin
	}
	return b
}

func isTCP(s sockets.Spec) bool {
	switch s.Network {
	case "tcp", "tcp4", "tcp6":
		return true
	}
	return false
}

// socketActivated says whether systemd passed this process sockets.
func socketActivated() bool {
	return os.Getenv(wire.EnvListenFDs) != "" && os.Getenv(wire.EnvListenPID) == strconv.Itoa(os.Getpid())
}

// openBalanced binds every listener for the kernel mode: a TCP listener as
// a reuseport group of slots sockets (its Listener, for the log and the
// runtime's plan, is a copy of slot 0's socket), the others as usual.
// groups has an entry per listener, nil for a shared one.
func openBalanced(specs []sockets.Spec, slots int) (listeners []*sockets.Listener, groups []*reuseport.Group, err error) {
	defer func() {
		if err != nil {
			closeBalanced(listeners, groups)
			listeners, groups = nil, nil
		}
	}()
	for _, spec := range specs {
		if !isTCP(spec) {
			l, err := sockets.Bind(spec)
			if err != nil {
				return listeners, groups, err
			}
			listeners, groups = append(listeners, l), append(groups, nil)
			continue
		}
		g, err := reuseport.Bind(spec, slots)
		if err != nil {
			return listeners, groups, err
		}
		groups = append(groups, g)
		fd, err := unix.FcntlInt(g.Socket(0).Fd(), unix.F_DUPFD_CLOEXEC, 3)
		if err != nil {
			return listeners, groups, fmt.Errorf("%s: %w", spec, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err))
		}
		l, err := sockets.Adopt(fd, spec)
		if err != nil {
			unix.Close(fd)
			return listeners, groups, err
		}
		listeners = append(listeners, l)
	}
	return listeners, groups, nil
}

func closeBalanced(listeners []*sockets.Listener, groups []*reuseport.Group) error {
	var errs []error
	for _, l := range listeners {
		errs = append(errs, l.Close())
	}
	for _, g := range groups {
		if g != nil {
			errs = append(errs, g.Close())
		}
	}
	return errors.Join(errs...)
}

// balanceObserver keeps the groups' eligible slots, and the Node.js
// servers' eligible slots or workers, in step with the cluster; nil when
// nothing is balanced.
func balanceObserver(log zerolog.Logger, mode string, groups []*reuseport.Group, node *nodecluster.Registry) *balance.Observer {
	var targets []balance.Target
	for _, g := range groups {
		if g != nil {
			targets = append(targets, g)
		}
	}
	if node != nil && mode != BalanceShared {
		targets = append(targets, node)
	}
	if len(targets) == 0 {
		return nil
	}
	return balance.New(log, targets...)
}

// withRetire gives the runtime the groups and b's word on which drains
// retire a slot. A retired slot's worker is drained once its queue is
// empty, waiting at most half the kill timeout: the worker keeps the other
// half to finish what it accepted.
func withRetire(cfg *osproc.Config, mode string, groups []*reuseport.Group, b *balance.Observer, killTimeout time.Duration) {
	cfg.Balanced = groups
	if b == nil || mode != BalanceKernel {
		return
	}
	cfg.Retired = b.Retired
	cfg.RetireWait = killTimeout / 2
}

// withBalance has b see every step before the other observers: the
// kernel's choice changes before anything else happens.
func withBalance(b *balance.Observer, observe func(time.Time, core.Input, []core.Decision)) func(time.Time, core.Input, []core.Decision) {
	if b == nil {
		return observe
	}
	return func(now time.Time, in core.Input, out []core.Decision) {
		b.Observe(now, in, out)
		observe(now, in, out)
	}
}

// logBalance is the one line saying which balance the master took and
// why; logged once every start-up error is behind, so that a refused start
// prints its error alone, and only when there is something to balance.
// In the kernel mode it says too whether closing a slot's socket moves its
// queue to another slot (migrate) or resets it (a kernel older than 5.14).
func logBalance(log zerolog.Logger, mode, why string, listeners int, nodeCluster bool, groups []*reuseport.Group) {
	if listeners == 0 && !nodeCluster {
		return
	}
	e := log.Info()
	if mode == BalanceKernel {
		migrate := true
		for _, g := range groups {
			migrate = migrate && (g == nil || g.Migrates())
		}
		e = e.Bool("migrate", migrate)
	}
	e.Str("balance", mode).Str("reason", why).Msg("balance: " + mode + " (" + why + ")")
}
