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
package dutchmaster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/actors/osproc"
	"github.com/dutchmaster/dutchmaster/fsm"
	"github.com/dutchmaster/dutchmaster/sockets"
)

// Options configure a cluster. Every field has a usable zero value except
// Command.
type Options struct {
	// Command is the worker program and its arguments.
	Command []string
	// Workers is the target worker count, evaluated at start and again at
	// every rolling restart. Default: 2.
	Workers func() int
	// Listen holds listener specs ([NAME=]tcp://HOST:PORT, tcp6://,
	// unix:///path, udp://), bound once by the master and passed to every
	// worker as fds 3.. in this order.
	Listen []string
	// RestartSignal starts a rolling restart. Default SIGUSR2.
	RestartSignal syscall.Signal
	// StopSignal drains a worker that does not speak IPC. Default SIGTERM.
	StopSignal syscall.Signal
	// KillTimeout: a draining worker still alive this long after its drain
	// began gets SIGKILL. Default 30 s.
	KillTimeout time.Duration
	// ReadyTimeout: a worker not ready this long after its fork is killed.
	// Default 60 s.
	ReadyTimeout time.Duration
	// Ready says which reports count as ready: auto (IPC or notify, the
	// default), ipc, notify or timer:DURATION.
	Ready string
	// Drain says how workers are asked to stop: auto (IPC disconnect for a
	// worker that has spoken IPC, StopSignal otherwise; the default), ipc,
	// signal or both.
	Drain string
	// MaxSurge is how many replacements may start at once. Default 1.
	MaxSurge int
	// Env is added to the master's environment for workers (KEY=VALUE).
	Env []string
	// Dir is the workers' working directory, resolved through symlinks at
	// every fork. Default: the master's.
	Dir string
	// BeforeFork runs before every fork; an error fails that fork.
	BeforeFork func() error
	// BeforeForkCommand is a shell command (sh -c) run before every fork,
	// in Dir, with the worker's environment; a non-zero exit fails that fork.
	BeforeForkCommand string
	// LogWorkerOutput turns each line of worker output into a log event;
	// otherwise it passes through to Stdout and Stderr.
	LogWorkerOutput bool
	// Logger receives every log line; the zero value logs nothing.
	Logger zerolog.Logger
	// Stdout and Stderr receive worker output. Default os.Stdout, os.Stderr.
	Stdout, Stderr io.Writer
	// NotifyDir holds the workers' sd_notify socket. Default os.TempDir().
	NotifyDir string
}

// ConfigError is an error in the Options, found before any worker starts.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

func configErr(format string, args ...any) error {
	return &ConfigError{Err: fmt.Errorf(format, args...)}
}

// AutoWorkers is the worker count for "auto": max(NumCPU, 2).
func AutoWorkers() int { return max(runtime.NumCPU(), 2) }

// Run starts the workers and supervises them until a graceful stop (the
// stop signals, or ctx done). Errors in the options, a missing command or
// a listener that cannot be bound are returned as *ConfigError before any
// worker starts.
func Run(ctx context.Context, opts Options) error {
	plan, err := prepare(opts)
	if err != nil {
		return err
	}
	// Launchers leak descriptors without close-on-exec; none of them may
	// reach a worker. Done before binding, which sets the flag itself.
	if err := sockets.CloseOnExecAll(); err != nil {
		return fmt.Errorf("marking inherited descriptors close-on-exec: %w", err)
	}
	listeners, err := sockets.BindAll(plan.specs)
	if err != nil {
		return &ConfigError{Err: err}
	}
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	log := opts.Logger
	for _, l := range listeners {
		log.Info().Str("name", l.Name()).Str("spec", l.String()).Str("address", l.Addr().String()).Msg("listening")
	}
	rt, err := osproc.New(osproc.Config{
		Command: opts.Command, Dir: opts.Dir, Env: opts.Env, Listeners: listeners,
		NotifyDir: opts.NotifyDir, StopSignal: opts.StopSignal, BeforeFork: plan.beforeFork,
		LogOutput: opts.LogWorkerOutput, Stdout: opts.Stdout, Stderr: opts.Stderr, Logger: log,
	})
	if err != nil {
		return err
	}
	defer rt.Close()

	signals := actors.Signals{Restart: plan.restartSignal}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, plan.restartSignal, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	system := actors.NewSystem(log)
	defer system.Shutdown()
	cluster := actors.Start(system, actors.Options{
		Runtime: rt, Logger: log, Workers: plan.workers,
		Core:  core.Config{MaxSurge: opts.MaxSurge, KillTimeout: opts.KillTimeout, ReadyTimeout: opts.ReadyTimeout},
		Ready: plan.ready, Drain: plan.drain,
	})
	defer cluster.Shutdown()

	done := ctx.Done()
	for {
		select {
		case sig := <-sigs:
			s := sig.(syscall.Signal)
			if in, ok := signals.Input(s); ok {
				log.Info().Str("signal", fsm.SignalName(s)).Msg("signal received")
				cluster.Send(in)
			}
		case <-done:
			done = nil
			cluster.Stop("context done")
		case <-cluster.Done():
			return nil
		}
	}
}

// plan is Options checked and resolved.
type plan struct {
	specs         []sockets.Spec
	workers       func() int
	ready         actors.ReadyMode
	drain         actors.DrainMethod
	restartSignal syscall.Signal
	beforeFork    func(dir string, env []string) error
}

func prepare(opts Options) (plan, error) {
	var p plan
	if len(opts.Command) == 0 || opts.Command[0] == "" {
		return p, configErr("no worker command: give it after --, e.g. dutchmaster -- node app.js")
	}
	if err := findCommand(opts.Command[0], opts.Dir); err != nil {
		return p, &ConfigError{Err: err}
	}
	if opts.Dir != "" {
		if fi, err := os.Stat(opts.Dir); err != nil || !fi.IsDir() {
			return p, configErr("--dir %s: not a directory", opts.Dir)
		}
	}
	var err error
	if p.specs, err = sockets.ParseSpecs(opts.Listen); err != nil {
		return p, &ConfigError{Err: err}
	}
	if p.ready, err = actors.ParseReadyMode(opts.Ready); err != nil {
		return p, &ConfigError{Err: fmt.Errorf("--ready: %w", err)}
	}
	if p.drain, err = actors.ParseDrainMethod(opts.Drain); err != nil {
		return p, &ConfigError{Err: fmt.Errorf("--drain: %w", err)}
	}
	switch {
	case opts.KillTimeout < 0:
		return p, configErr("--kill-timeout %s: must not be negative", opts.KillTimeout)
	case opts.ReadyTimeout < 0:
		return p, configErr("--ready-timeout %s: must not be negative", opts.ReadyTimeout)
	case opts.MaxSurge < 0:
		return p, configErr("--max-surge %d: must not be negative", opts.MaxSurge)
	}
	p.restartSignal = opts.RestartSignal
	if p.restartSignal == 0 {
		p.restartSignal = syscall.SIGUSR2
	}
	if p.restartSignal == syscall.SIGTERM || p.restartSignal == syscall.SIGINT || p.restartSignal == syscall.SIGKILL {
		return p, configErr("--restart-signal %s: that signal stops the master", fsm.SignalName(p.restartSignal))
	}
	for _, kv := range opts.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return p, configErr("--env %q: want KEY=VALUE", kv)
		}
	}
	p.workers = opts.Workers
	if p.workers == nil {
		p.workers = func() int { return 2 }
	}
	if n := p.workers(); n < 1 {
		return p, configErr("--workers %d: want at least 1", n)
	}
	p.beforeFork = beforeFork(opts)
	return p, nil
}

// findCommand fails early for a command that does not exist or cannot be
// run, so the operator hears about it before any worker starts.
func findCommand(name, dir string) error {
	if strings.Contains(name, "/") {
		path := name
		if !filepath.IsAbs(path) && dir != "" {
			path = filepath.Join(dir, path)
		}
		fi, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("worker command %s: %w", name, errors.Unwrap(err))
		}
		if fi.IsDir() || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("worker command %s: not an executable file", name)
		}
		return nil
	}
	if _, err := exec.LookPath(name); err != nil {
		return fmt.Errorf("worker command %s: not found in PATH", name)
	}
	return nil
}

func beforeFork(opts Options) func(dir string, env []string) error {
	if opts.BeforeFork == nil && opts.BeforeForkCommand == "" {
		return nil
	}
	return func(dir string, env []string) error {
		if opts.BeforeFork != nil {
			if err := opts.BeforeFork(); err != nil {
				return err
			}
		}
		if opts.BeforeForkCommand == "" {
			return nil
		}
		cmd := exec.Command("/bin/sh", "-c", opts.BeforeForkCommand)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%q: %w: %s", opts.BeforeForkCommand, err, lastLine(out))
		}
		return nil
	}
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}
