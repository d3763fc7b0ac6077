// Package dutchmaster runs a supervised cluster of worker processes on
// sockets it owns, and replaces them without dropping a connection: no
// worker is stopped before its replacement is listening.
//
// The dutchmaster binary is a thin layer over Run; a Go program can embed
// the supervisor the same way:
//
//	err := dutchmaster.Run(ctx, dutchmaster.Options{
//		Command: []string{"./server"},
//		Listen:  []string{"http=tcp://127.0.0.1:8080"},
//		Workers: func() int { return 4 },
//		Logger:  zerolog.New(os.Stderr),
//	})
//
// Run handles the restart signal (SIGUSR2), SIGTERM and SIGINT itself,
// and returns after a graceful stop, or when ctx is done (which stops
// gracefully too).
//
// This package is the facade: it checks the Options (a *ConfigError names
// the field at fault) and wires the cluster (package actors) to the OS
// (package actors/osproc, which also holds the master's pidfile, reaper,
// credentials and before-fork command) and to the operator's ways in.
//
// An operator reaches a running master through the options of
// docs/operations.md: a control socket (ControlSocket, for `dutchmaster
// ctl`), metrics and health endpoints (MetricsAddress), a journal of the
// core's inputs and decisions (Record, for `dutchmaster replay`), a
// pidfile, and systemd's protocols, which need no option: sd_notify when
// NOTIFY_SOCKET is set, and listeners taken from socket activation
// (LISTEN_FDS) when systemd passes them.
package dutchmaster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/actors/osproc"
	"github.com/dutchmaster/dutchmaster/fsm"
	"github.com/dutchmaster/dutchmaster/sockets"
	"github.com/dutchmaster/dutchmaster/sockets/nodecluster"
	"github.com/dutchmaster/dutchmaster/sockets/reuseport"
)

// Run starts the workers and supervises them until a graceful stop (the
// stop signals, or ctx done). Errors in the options, a missing command, a
// listener, control socket or metrics address that cannot be bound, a
// journal that cannot be created, or a PIDFile held by a live master are
// returned as *ConfigError before any worker starts.
func Run(ctx context.Context, opts Options) error {
	start := time.Now() // the journal's steps count from here
	plan, err := prepare(opts)
	if err != nil {
		return err
	}
	// The new image of an upgrade in place takes over what the old one
	// handed over instead of binding and forking.
	handed, err := takeHandedState()
	if err != nil {
		return fmt.Errorf("taking over from the previous master: %w", err)
	}
	if handed != nil {
		start = handed.Started
		plan.core.Seed = handed.Cluster.Core.Config.Seed
	} else {
		// The recycles' jitter: a seed per master, which the journal records.
		plan.core.Seed = rand.Uint64()
	}
	// Signals are taken before anything is created, so that a stop during
	// start-up is a graceful stop, not a default death that leaves the pid
	// file and sockets behind; they queue until the loop below reads them.
	// Stopped last, once everything is cleaned up.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, handledSignals(plan.restartSignal, opts.UpgradeSignal)...)
	defer signal.Stop(sigs)
	// A closed log pipe (a log shipper that died, a `| tee` that ended)
	// must not end the master, and its workers with it. With SIGPIPE
	// taken, a write to stdout or stderr fails with EPIPE instead: the log
	// is lost, the service is not. The signal is dropped unread, and it is
	// a handler rather than SIG_IGN, which workers would inherit.
	pipe := make(chan os.Signal, 1)
	signal.Notify(pipe, syscall.SIGPIPE)
	defer signal.Stop(pipe)
	if opts.Name != "" {
		opts.Logger = opts.Logger.With().Str("name", opts.Name).Logger()
	}
	log := opts.Logger
	m := &master{opts: opts, plan: plan, started: start, handed: handed, sigs: sigs}
	m.executable, _ = os.Executable()
	if opts.PIDFile != "" {
		var pf *osproc.PIDFile
		if handed != nil && handed.PIDFile >= 0 {
			pf, err = osproc.AdoptPIDFile(opts.PIDFile, handed.PIDFile)
		} else {
			pf, err = osproc.CreatePIDFile(opts.PIDFile)
		}
		if errors.Is(err, osproc.ErrPIDFileHeld) {
			return fieldErr("PIDFile", "Options.PIDFile %w; stop it first, or give this one another Options.PIDFile", err)
		}
		if err != nil {
			return fieldErr("PIDFile", "Options.PIDFile %w", err)
		}
		defer pf.Remove()
		m.pidfile = pf
	}
	// Launchers leak descriptors without close-on-exec; none of them may
	// reach a worker. Done before binding, which sets the flag itself. The
	// descriptors an old image handed over are among them: each is taken
	// over below, and passed to a worker only as the runtime plans.
	if err := sockets.CloseOnExecAll(); err != nil {
		return fmt.Errorf("marking inherited descriptors close-on-exec: %w", err)
	}
	if handed != nil {
		err = m.adoptSockets()
	} else {
		err = m.openSockets()
	}
	if err != nil {
		return err
	}
	defer closeBalanced(m.listeners, m.groups)
	for _, l := range m.listeners {
		if handed == nil { // else listening since the first master of this line
			log.Info().Str("listener", l.Name()).Str("spec", l.String()).Str("address", l.Addr().String()).
				Bool("socket_activated", m.activated[l]).Msg("listening")
		}
	}
	rcfg := runtimeConfig(opts, plan, m.listeners)
	if opts.LogTail > 0 {
		rcfg.Tail = osproc.NewOutputLog(opts.LogTail, 0, -1)
	}
	rcfg.NodeServers = m.registry
	balancer := balanceObserver(log, m.mode, m.groups, m.registry)
	withRetire(&rcfg, m.mode, m.groups, balancer, plan.core.KillTimeout)
	var rt *osproc.Runtime
	if handed != nil {
		rt, err = osproc.Adopt(rcfg, handed.Runtime)
	} else {
		rt, err = osproc.New(rcfg)
	}
	if err != nil {
		if m.registry != nil {
			m.registry.Close()
		}
		return &ConfigError{Err: err}
	}
	m.runtime = rt
	if handed == nil {
		osproc.WarnDescriptorLimit(log, plan.workers(), plan.core.MaxSurge)
		osproc.WarnProcessLimit(log, plan.workers(), plan.core.MaxSurge)
	}
	defer rt.Close()
	ops, err := openOperations(opts, plan, log, start, rt, m.listeners, rcfg.Tail, m)
	if err != nil {
		return err
	}
	m.ops = ops

	aopts := actors.Options{
		Runtime: rt, Logger: log, Workers: plan.workers, Core: plan.core, Ready: plan.ready, Drain: plan.drain,
		Observe: withBalance(balancer, ops.observe),
	}
	system := actors.NewSystem(log)
	defer system.Shutdown()
	if handed == nil {
		logBalance(log, m.mode, m.modeWhy, len(m.listeners), plan.nodeCluster, m.groups)
		m.cluster = actors.Start(system, aopts)
	} else {
		aopts.Resume = &handed.Cluster
		aopts.Resumed = func(now time.Time, timers []core.Decision) {
			if ops.journal != nil {
				ops.journal.Resumed(now, m.version(), timers)
			}
		}
		m.resumeObservers(balancer)
		if m.cluster, err = actors.StartResumed(system, aopts); err != nil {
			ops.close()
			return fmt.Errorf("taking over from the previous master: %w", err)
		}
	}
	defer m.cluster.Shutdown()
	// Runs first: no more control requests, notifications or journal
	// lines once the cluster is gone.
	defer ops.close()
	restarts := make(chan restartRequest)
	upgrades := make(chan upgradeRequest)
	ops.serve(m.cluster, restarts, upgrades)
	m.sampleMemory()
	defer m.stopSampling()
	if handed != nil {
		m.upgraded()
		// Signals the old image had taken and not yet handled: now.
		for _, s := range handed.Signals {
			sigs <- syscall.Signal(s)
		}
	}

	signals := actors.Signals{Restart: plan.restartSignal}
	done := ctx.Done()
	for {
		select {
		case sig := <-sigs:
			s := sig.(syscall.Signal)
			if s == opts.UpgradeSignal {
				log.Info().Str("signal", fsm.SignalName(s)).Msg("signal received: upgrade")
				m.upgrade(upgradeRequest{})
				continue
			}
			in, ok := signals.Input(s)
			if !ok {
				log.Warn().Str("signal", fsm.SignalName(s)).Msg("signal ignored")
				continue
			}
			log.Info().Str("signal", fsm.SignalName(s)).Msg("signal received")
			if _, restart := in.(core.RestartRequested); restart && m.opts.Reload != nil {
				m.requestRestart(pendingRestart{in: in})
				continue
			}
			m.cluster.Send(in)
		case req := <-restarts:
			if m.opts.Reload != nil {
				m.requestRestart(pendingRestart{req: &req})
				continue
			}
			m.restart(pendingRestart{req: &req})
		case req := <-upgrades:
			m.upgrade(req)
		case res := <-m.reloading.done:
			m.reloaded(res)
		case <-m.reloading.timeout:
			m.reloadTimedOut()
		case <-done:
			done = nil
			m.cluster.Stop("context done")
		case <-m.cluster.Done():
			return nil
		}
	}
}

// master is a running Run: what a configuration reload changes, and what
// an upgrade hands over.
type master struct {
	opts    Options
	plan    plan
	runtime *osproc.Runtime
	cluster *actors.Cluster
	ops     *operations
	// The sockets: listeners in the order workers inherit them, those
	// systemd passed, the reuseport groups (by listener, nil for a shared
	// one) and the Node.js cluster servers (nil for fds workers).
	listeners []*sockets.Listener
	activated map[*sockets.Listener]bool
	groups    []*reuseport.Group
	registry  *nodecluster.Registry
	// mode is the balance in force, modeWhy why it was taken.
	mode, modeWhy string
	reloading     reloading
	// sampling: the workers' memory is sampled while MaxMemory is set
	// (a reload may set or clear it).
	sampling     atomic.Bool
	stopSampling func()
	// started is when the first master of this line started (an upgrade
	// keeps it); executable is the binary as it was started, the default
	// for an upgrade; handed is what the previous image handed over (nil
	// for a fresh start).
	started    time.Time
	executable string
	pidfile    *osproc.PIDFile
	handed     *handedState
	sigs       chan os.Signal // the signals Run takes, for an upgrade to hand over
	upgradesMu sync.Mutex
	upgrades   UpgradeStatus
}

// openSockets binds the listeners (or takes systemd's) in the balance
// mode the master takes, and makes the Node.js servers' registry.
func (m *master) openSockets() error {
	mode, why, err := balanceMode(m.plan)
	if err != nil {
		return err
	}
	m.mode, m.modeWhy = mode, why
	if mode == BalanceKernel {
		m.listeners, m.groups, err = openBalanced(m.plan.specs, m.plan.workers())
	} else {
		m.listeners, m.activated, err = openListeners(m.plan.specs, m.opts.Logger)
	}
	if err != nil {
		return &ConfigError{Field: "Listen", Err: err}
	}
	m.registry = nodeServers(m.plan, mode, m.listeners, m.groups, m.opts.Logger)
	return nil
}

// sampleMemory samples the workers' memory for the cluster's recycling,
// every MemoryInterval, while a MaxMemory is set.
func (m *master) sampleMemory() {
	m.sampling.Store(m.plan.core.Recycle.MaxMemory > 0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.runtime.SampleMemory(ctx, memoryInterval(m.opts), m.sampling.Load, func(in core.UsageSampled) { m.cluster.Send(in) })
	}()
	m.stopSampling = func() { cancel(); <-done }
}

func runtimeConfig(opts Options, p plan, listeners []*sockets.Listener) osproc.Config {
	return osproc.Config{
		Command: opts.Command, Dir: opts.Dir, Env: opts.Env, Listeners: listeners,
		StopSignal: opts.StopSignal, BeforeFork: p.beforeFork,
		LogOutput: opts.LogWorkerOutput, Stdout: opts.Stdout, Stderr: opts.Stderr, Logger: opts.Logger,
		NodeCluster: p.nodeCluster, NodePreload: p.nodePreload, NodeGrace: p.nodeGrace, EnvClear: opts.EnvClear, EnvAllow: opts.EnvAllow, Credential: p.credential,
		Watchdog: p.core.Watchdog,
	}
}

// handledSignals are the signals Run takes: the restart signal, the stop
// and scale signals, and the other would-be restart signals, which would
// otherwise end the master by default (SIGHUP from a closed terminal, a
// unit's `kill -HUP`): they are logged and ignored.
func handledSignals(restart, upgrade syscall.Signal) []os.Signal {
	out := []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGHUP, syscall.SIGUSR1}
	for _, s := range []syscall.Signal{restart, upgrade} {
		if s != 0 && !slices.Contains(out, os.Signal(s)) {
			out = append(out, s)
		}
	}
	return out
}
