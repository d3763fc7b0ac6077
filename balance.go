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
	"github.com/dutchmaster/dutchmaster/sockets/reuseport"
	"github.com/dutchmaster/dutchmaster/sockets/wire"
)

// The values of Options.Balance.
const (
	BalanceAuto   = "auto"
	BalanceKernel = "kernel"
	BalanceShared = "shared"
)

// balanceMode decides between kernel and shared for p: whether the TCP
// listeners are balanced in the kernel, and why, for the log line. An
// explicit kernel that cannot be had is an error.
func balanceMode(p plan) (kernel bool, why string, err error) {
	if p.balance == BalanceShared {
		return false, "asked for", nil
	}
	no := func(reason string) (bool, string, error) {
		if p.balance == BalanceKernel {
			return false, "", fieldErr("Balance", "Options.Balance kernel: %s", reason)
		}
		return false, reason, nil
	}
	if p.nodeCluster {
		return no("Node.js cluster workers get their sockets from the master at listen()")
	}
	tcp := false
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
		return true, "asked for", nil
	}
	return true, "the socket-selection program loads", nil
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

// balanceObserver keeps the groups' eligible slots in step with the
// cluster; nil when no listener is balanced.
func balanceObserver(log zerolog.Logger, groups []*reuseport.Group) *balance.Observer {
	var targets []balance.Target
	for _, g := range groups {
		if g != nil {
			targets = append(targets, g)
		}
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
func withRetire(cfg *osproc.Config, groups []*reuseport.Group, b *balance.Observer, killTimeout time.Duration) {
	cfg.Balanced = groups
	if b == nil {
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
func logBalance(log zerolog.Logger, kernel bool, why string, listeners int, groups []*reuseport.Group) {
	if listeners == 0 {
		return
	}
	mode := BalanceShared
	e := log.Info()
	if kernel {
		mode = BalanceKernel
		migrate := true
		for _, g := range groups {
			migrate = migrate && (g == nil || g.Migrates())
		}
		e = e.Bool("migrate", migrate)
	}
	e.Str("balance", mode).Str("reason", why).Msg("balance: " + mode + " (" + why + ")")
}
