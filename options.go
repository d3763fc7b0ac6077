package dutchmaster

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/actors/osproc"
	"github.com/dutchmaster/dutchmaster/fsm"
	"github.com/dutchmaster/dutchmaster/sockets"
	"github.com/dutchmaster/dutchmaster/sockets/nodepreload"
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
	// MaxSurge is how many replacements may start at once (rolling and
	// canary). Default 1.
	MaxSurge int
	// Policy is a custom restart policy; it wins over PolicyName.
	Policy Policy
	// PolicyName picks a built-in policy (PolicyNames): rolling (the
	// default), blue-green or canary.
	PolicyName string
	// CanarySoak is how long the canary must stay up before the rest roll.
	// Default DefaultCanarySoak, 30 s.
	CanarySoak time.Duration
	// Backoff spaces the re-forks of a slot whose workers keep failing
	// (defaults 500 ms, doubling up to 30 s, reset after 60 s up).
	Backoff Backoff
	// Watchdog, when positive, is how often each worker must prove it is
	// alive once it listens: WATCHDOG=1 on NOTIFY_SOCKET or
	// {"event":"heartbeat"} on its IPC channel (it gets WATCHDOG_USEC and
	// WATCHDOG_PID). A worker that misses it is hung: it stops counting
	// as serving, a successor is forked into its slot, and once that one
	// listens it gets SIGABRT, then SIGKILL after 5 s. Default: none.
	Watchdog time.Duration
	// MaxMemory, when positive, recycles a worker whose processes' resident
	// memory (bytes) was above it in MemorySamples samples in a row, taken
	// every MemoryInterval (default 2 s), after a random wait up to
	// MaxMemoryJitter (default 5 s). Default: none.
	MaxMemory       int64
	MemoryInterval  time.Duration
	MaxMemoryJitter time.Duration
	// MaxLifetime, when positive, recycles a worker that long after its
	// fork, plus a random part up to MaxLifetimeJitter (default a tenth
	// of MaxLifetime). Default: none.
	MaxLifetime       time.Duration
	MaxLifetimeJitter time.Duration
	// MaxRequests, when positive, is given to each worker as
	// DUTCHMASTER_MAX_REQUESTS, plus a random part up to
	// MaxRequestsJitter (default a tenth of MaxRequests); the worker asks
	// for its recycle once it served that many. Default: none.
	MaxRequests       int
	MaxRequestsJitter int
	// RecycleConcurrency is how many recycles may run at once. Default 1.
	RecycleConcurrency int
	// WorkerProtocol is how workers get their sockets: fds (LISTEN_FDS),
	// node-cluster (Node's cluster primary protocol) or auto (the default:
	// node-cluster when the command is node, fds otherwise).
	WorkerProtocol string
	// DisableNodePreload keeps dutchmaster's preload module out of Node.js
	// cluster workers (docs/node.md, "Drain"): they then drain as under
	// Node's own cluster, their idle keep-alive connections closed at once.
	DisableNodePreload bool
	// NodeGrace is how long the preload module keeps a draining Node.js
	// worker's keep-alive connections open, every response saying
	// "Connection: close", before it closes the idle ones and runs the
	// app's own SIGTERM handler. It must be shorter than KillTimeout.
	// Default 5 s, or half of KillTimeout when that is shorter.
	NodeGrace time.Duration
	// Balance says how new connections on TCP listeners are spread over
	// the workers (docs/listeners.md): kernel (one socket per worker slot,
	// and a program in the kernel that picks round-robin among the slots
	// whose worker listens and does not drain), round-robin (Node.js
	// cluster workers only: the master accepts and hands each connection
	// to the next such worker, as Node's own primary), shared (one socket
	// for all: the kernel wakes whichever worker waited last) or auto (the
	// default: kernel where the program can be loaded, else round-robin
	// for Node.js cluster workers and shared for the others). Unix and UDP
	// listeners are always shared. Fixed for the master's life.
	Balance string
	// Reload, if set, is called before every rolling restart for the
	// options to use from then on (the dutchmaster binary re-reads its
	// --config file). An error refuses the restart; the running workers
	// are left as they are. Listeners cannot change without a new master.
	// It runs on a goroutine of its own, one call at a time, and gets 10 s:
	// a call still running then refuses its restart, and every restart
	// after it until it returns; nothing else waits for it, a stop
	// included.
	Reload func() (Options, error)
	// Env is added to the master's environment for workers (KEY=VALUE).
	Env []string
	// EnvClear withholds the master's environment from workers, but for
	// the keys in EnvAllow: secrets the master needs stay with it.
	EnvClear bool
	EnvAllow []string
	// User and Group run the workers as another user (a name or a number;
	// Group defaults to the user's primary group). The master keeps the
	// sockets, so a root master can bind :80 for unprivileged workers.
	User, Group string
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
	// LogTail is how many of each worker's last lines of output the
	// master keeps (at most 1 MiB a worker; those of the last 16 workers
	// that exited too), for `dutchmaster ctl logs`. Then worker output
	// always goes through a pipe the master reads, passed on to Stdout
	// and Stderr (or logged, with LogWorkerOutput). 0: none kept, and
	// without LogWorkerOutput workers write to Stdout and Stderr
	// themselves when those are files.
	LogTail int
	// Logger receives every log line; the zero value logs nothing. Its
	// writer must not block: the master logs from the goroutines that
	// make its decisions, so a writer that waits (a full pipe nobody
	// reads) stops the master. The dutchmaster binary writes through a
	// bounded queue that drops lines rather than wait.
	Logger zerolog.Logger
	// LogDropped, if set, counts the log lines Logger's writer dropped;
	// the metrics endpoint exports it as dutchmaster_log_lines_dropped_total.
	LogDropped func() uint64
	// Stdout and Stderr receive worker output. Default os.Stdout, os.Stderr.
	Stdout, Stderr io.Writer

	// The options below are how an operator reaches the master
	// (docs/operations.md). They are fixed for the master's life: Reload
	// cannot change them.

	// Name names the master: every log line carries it as "name", its
	// metrics as the label name, its journal in the header. Letters,
	// digits, '.', '_' and '-', at most 64. Default: none.
	Name string
	// ControlSocket is the path of the control socket (package
	// actors/observers/control; `dutchmaster ctl`), created mode 0600 in an
	// existing directory. A stale socket file is replaced, a live one
	// (another master) refuses the start. Default: none. The dutchmaster
	// binary defaults it to control.DefaultPath(Name).
	ControlSocket string
	// ControlSocketOptional makes a ControlSocket that cannot be created
	// (another master has it, the directory is not writable) a warning:
	// the master runs without one. The binary sets it for its default
	// path, so that a default never keeps a master from starting.
	ControlSocketOptional bool
	// MetricsAddress is a host:port to serve /metrics (Prometheus text),
	// /metrics/cluster, /healthz and /readyz on (package actors/observers/metrics). Default: none.
	MetricsAddress string
	// Record is a file to write the journal to (package
	// actors/observers/journal): every input of the cluster's core and
	// every decision, for `dutchmaster replay`. The file is created or
	// truncated. Default: none.
	Record string
	// PIDFile is written with the master's pid at start, locked for its
	// life and removed at exit. A PIDFile locked by a live master refuses
	// the start; one left by a dead master is taken over. Default: none.
	PIDFile string
	// Subreaper makes the master a child subreaper (PR_SET_CHILD_SUBREAPER):
	// orphans of its workers' children become its children, and it reaps
	// them once they exit, as it always does when it runs as PID 1.
	Subreaper bool
	// Observe, if set, sees every step of the cluster (an input and the
	// decisions it produced), on the cluster actor's goroutine.
	Observe Observer

	// The options below are for an upgrade in place (docs/upgrade.md):
	// `dutchmaster ctl upgrade` or UpgradeSignal make the master execute
	// a new binary of itself in the same process, workers untouched. It
	// needs a program whose main serves forks on the main thread
	// (ServeMainThread) and whose binary answers `upgrade-check`
	// (the dutchmaster binary does both); otherwise it is refused.

	// Version is this binary's version, reported by status and logged
	// at an upgrade. Default: none.
	Version string
	// UpgradeSignal, if set, asks for an upgrade to the binary the master
	// was started from, as `dutchmaster ctl upgrade` does. Default: none
	// (SIGUSR2 is the rolling restart).
	UpgradeSignal syscall.Signal
	// LogFlush, if set, writes out the log lines Logger's writer holds;
	// called before the exec of an upgrade, whose new image would not
	// have them.
	LogFlush func()
}

// Policy decides the steps of rolling restarts; see docs/policies.md.
type Policy = core.Policy

// PolicyStep is what a Policy proposes.
type PolicyStep = core.Step

// ClusterView is the read-only view a Policy decides from.
type ClusterView = core.View

// Backoff is the crash-loop policy of a slot.
type Backoff = core.Backoff

// The built-in policies, to use or to build on.
type (
	Rolling   = core.Rolling
	BlueGreen = core.BlueGreen
	Canary    = core.Canary
)

// ConfigError is an error in the Options, found before any worker starts.
// Its message names the fields it is about as Options.Field, e.g.
// `Options.KillTimeout -1s: must not be negative`, a form a front end can
// rewrite into its own terms (the dutchmaster binary writes the flag that
// sets the field).
type ConfigError struct {
	// Field is the Options field at fault, e.g. "KillTimeout"; empty for
	// a fault of no one field (a listener that cannot be bound).
	Field string
	Err   error
}

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// fieldErr is a *ConfigError about field; format writes the whole
// message, naming the field as Options.Field.
func fieldErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Err: fmt.Errorf(format, args...)}
}

// PolicyNames are the built-in policies PolicyName may name; the first is
// the default.
func PolicyNames() []string { return core.PolicyNames() }

// DefaultCanarySoak is the soak of the canary policy when CanarySoak is
// not set.
const DefaultCanarySoak = core.DefaultCanarySoak

// Check returns the *ConfigError Run would return for the values of opts,
// without opening or starting anything (so not the errors of listeners,
// sockets and files that cannot be opened). A front end that reloads its
// configuration can check it first, to speak of a bad value in its own
// terms.
func Check(opts Options) error {
	_, err := prepare(opts)
	return err
}

// AutoWorkers is the worker count for "auto": max(NumCPU, 2).
func AutoWorkers() int { return max(runtime.NumCPU(), 2) }

// plan is Options checked and resolved.
type plan struct {
	specs         []sockets.Spec
	workers       func() int
	core          core.Config
	ready         actors.ReadyMode
	drain         actors.DrainMethod
	restartSignal syscall.Signal
	beforeFork    func(dir string, env []string) error
	nodeCluster   bool
	nodePreload   bool
	nodeGrace     time.Duration
	credential    *syscall.Credential
	balance       string // auto, kernel, round-robin or shared
}

// restartSignals are the signals a restart may be asked with: the master
// handles the others itself (stop, scale), the Go runtime uses some
// (SIGURG), and some fire on their own (SIGCHLD, SIGPIPE).
var restartSignals = []syscall.Signal{syscall.SIGUSR2, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGQUIT, syscall.SIGWINCH}

func prepare(opts Options) (plan, error) {
	var p plan
	if len(opts.Command) == 0 || opts.Command[0] == "" {
		return p, fieldErr("Command", "Options.Command: no worker command, want the program and its arguments")
	}
	if err := checkName(opts.Name); err != nil {
		return p, err
	}
	if err := osproc.FindCommand(opts.Command[0], opts.Dir); err != nil {
		return p, &ConfigError{Field: "Command", Err: err}
	}
	if opts.Dir != "" {
		if fi, err := os.Stat(opts.Dir); err != nil || !fi.IsDir() {
			return p, fieldErr("Dir", "Options.Dir %s: not a directory", opts.Dir)
		}
	}
	var err error
	if p.specs, err = sockets.ParseSpecs(opts.Listen); err != nil {
		return p, listenErr(err)
	}
	if p.ready, err = actors.ParseReadyMode(opts.Ready); err != nil {
		return p, fieldErr("Ready", "Options.Ready: %w", err)
	}
	if p.drain, err = actors.ParseDrainMethod(opts.Drain); err != nil {
		return p, fieldErr("Drain", "Options.Drain: %w", err)
	}
	switch {
	case opts.KillTimeout < 0:
		return p, fieldErr("KillTimeout", "Options.KillTimeout %s: must not be negative", opts.KillTimeout)
	case opts.ReadyTimeout < 0:
		return p, fieldErr("ReadyTimeout", "Options.ReadyTimeout %s: must not be negative", opts.ReadyTimeout)
	case opts.MaxSurge < 0:
		return p, fieldErr("MaxSurge", "Options.MaxSurge %d: must not be negative", opts.MaxSurge)
	}
	if err := checkHealth(opts); err != nil {
		return p, err
	}
	p.core = core.Config{MaxSurge: opts.MaxSurge, KillTimeout: opts.KillTimeout, ReadyTimeout: opts.ReadyTimeout, Backoff: opts.Backoff,
		Watchdog: opts.Watchdog, Recycle: recycle(opts)}.WithDefaults()
	if p.ready.Source == actors.ReadyTimer && p.ready.After >= p.core.ReadyTimeout {
		return p, fieldErr("Ready", "Options.Ready %s: the timer must be shorter than Options.ReadyTimeout (%s), or every worker is killed as not ready", p.ready, p.core.ReadyTimeout)
	}
	if p.core.Policy, err = policy(opts, p.core.MaxSurge); err != nil {
		return p, err
	}
	p.restartSignal = opts.RestartSignal
	if p.restartSignal == 0 {
		p.restartSignal = syscall.SIGUSR2
	}
	if !slices.Contains(restartSignals, p.restartSignal) {
		return p, fieldErr("RestartSignal", "Options.RestartSignal %s: want SIGUSR2, SIGHUP, SIGUSR1, SIGQUIT or SIGWINCH", fsm.SignalName(p.restartSignal))
	}
	if u := opts.UpgradeSignal; u != 0 {
		switch {
		case u == p.restartSignal:
			return p, fieldErr("UpgradeSignal", "Options.UpgradeSignal %s: it is the restart signal", fsm.SignalName(u))
		case !slices.Contains(restartSignals, u):
			return p, fieldErr("UpgradeSignal", "Options.UpgradeSignal %s: want SIGUSR2, SIGHUP, SIGUSR1, SIGQUIT or SIGWINCH, other than the restart signal", fsm.SignalName(u))
		}
	}
	switch opts.StopSignal {
	case syscall.SIGKILL, syscall.SIGSTOP:
		return p, fieldErr("StopSignal", "Options.StopSignal %s: a worker cannot drain on it", fsm.SignalName(opts.StopSignal))
	}
	for _, kv := range opts.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return p, fieldErr("Env", "Options.Env %q: want KEY=VALUE", kv)
		}
	}
	p.workers = opts.Workers
	if p.workers == nil {
		p.workers = func() int { return 2 }
	}
	if n := p.workers(); n < 1 || n > core.MaxWorkers {
		return p, fieldErr("Workers", "Options.Workers %d: want 1 to %d", n, core.MaxWorkers)
	}
	p.beforeFork = osproc.BeforeForkHook(opts.BeforeFork, opts.BeforeForkCommand, p.core.ReadyTimeout)
	if p.credential, err = osproc.Credential(opts.User, opts.Group); err != nil {
		return p, credentialErr(err)
	}
	switch opts.WorkerProtocol {
	case "", "auto":
		base := filepath.Base(opts.Command[0])
		p.nodeCluster = base == "node" || base == "nodejs"
	case "fds":
	case "node-cluster":
		p.nodeCluster = true
	default:
		return p, fieldErr("WorkerProtocol", "Options.WorkerProtocol %q: want auto, fds or node-cluster", opts.WorkerProtocol)
	}
	p.nodePreload = p.nodeCluster && !opts.DisableNodePreload
	switch p.nodeGrace = opts.NodeGrace; {
	case p.nodeGrace < 0:
		return p, fieldErr("NodeGrace", "Options.NodeGrace %s: must not be negative", p.nodeGrace)
	case p.nodeGrace == 0:
		p.nodeGrace = min(nodepreload.DefaultGrace, p.core.KillTimeout/2)
	case p.nodeGrace >= p.core.KillTimeout:
		return p, fieldErr("NodeGrace", "Options.NodeGrace %s: must be shorter than Options.KillTimeout (%s), or a draining Node.js worker is killed before its grace is over", p.nodeGrace, p.core.KillTimeout)
	}
	switch p.balance = opts.Balance; p.balance {
	case "":
		p.balance = BalanceAuto
	case BalanceAuto, BalanceShared, BalanceKernel:
	case BalanceRoundRobin:
		if !p.nodeCluster {
			return p, fieldErr("Balance", "Options.Balance round-robin: only for Node.js cluster workers (the master hands their connections over); use auto, kernel or shared")
		}
	default:
		return p, fieldErr("Balance", "Options.Balance %q: want auto, kernel, round-robin or shared", opts.Balance)
	}
	return p, nil
}

// DefaultMemoryInterval and DefaultMaxMemoryJitter apply when
// Options.MaxMemory is set and they are not.
const (
	DefaultMemoryInterval  = 2 * time.Second
	DefaultMaxMemoryJitter = 5 * time.Second
)

// checkHealth checks the watchdog and recycling options.
func checkHealth(opts Options) error {
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"Watchdog", opts.Watchdog}, {"MemoryInterval", opts.MemoryInterval}, {"MaxMemoryJitter", opts.MaxMemoryJitter},
		{"MaxLifetime", opts.MaxLifetime}, {"MaxLifetimeJitter", opts.MaxLifetimeJitter}} {
		if f.v < 0 {
			return fieldErr(f.name, "Options.%s %s: must not be negative", f.name, f.v)
		}
	}
	for _, f := range []struct {
		name string
		v    int64
	}{{"MaxMemory", opts.MaxMemory}, {"MaxRequests", int64(opts.MaxRequests)}, {"MaxRequestsJitter", int64(opts.MaxRequestsJitter)},
		{"RecycleConcurrency", int64(opts.RecycleConcurrency)}} {
		if f.v < 0 {
			return fieldErr(f.name, "Options.%s %d: must not be negative", f.name, f.v)
		}
	}
	if opts.Watchdog > 0 && opts.Watchdog < 100*time.Millisecond {
		return fieldErr("Watchdog", "Options.Watchdog %s: at least 100ms (a worker sends a heartbeat several times per period)", opts.Watchdog)
	}
	return nil
}

// recycle is the core's recycling configuration of opts.
func recycle(opts Options) core.Recycle {
	r := core.Recycle{
		MaxMemory: opts.MaxMemory, MemoryJitter: opts.MaxMemoryJitter,
		MaxLifetime: opts.MaxLifetime, LifetimeJitter: opts.MaxLifetimeJitter,
		MaxRequests: opts.MaxRequests, RequestsJitter: opts.MaxRequestsJitter,
		Concurrency: opts.RecycleConcurrency,
	}
	if r.MaxMemory > 0 && r.MemoryJitter == 0 {
		r.MemoryJitter = DefaultMaxMemoryJitter
	}
	return r
}

// memoryInterval is how often the workers' memory is sampled.
func memoryInterval(opts Options) time.Duration {
	if opts.MemoryInterval > 0 {
		return opts.MemoryInterval
	}
	return DefaultMemoryInterval
}

// policy resolves the restart policy: a custom one, or a built-in by name.
func policy(opts Options, maxSurge int) (Policy, error) {
	if opts.Policy != nil {
		return opts.Policy, nil
	}
	p, err := core.PolicyByName(opts.PolicyName, core.PolicyParams{MaxSurge: maxSurge, CanarySoak: opts.CanarySoak}.WithDefaults())
	if err != nil {
		return nil, fieldErr("PolicyName", "Options.PolicyName %q: want %s", opts.PolicyName, core.PolicyChoices())
	}
	return p, nil
}

// listenErr names Options.Listen in an error of sockets.ParseSpecs, whose
// messages are written for the command line.
func listenErr(err error) error {
	var se *sockets.SpecError
	if !errors.As(err, &se) {
		return &ConfigError{Field: "Listen", Err: err}
	}
	reason := strings.ReplaceAll(se.Reason, "--listen ", "Options.Listen ")
	return &ConfigError{Field: "Listen", Err: fmt.Errorf("Options.Listen %q: %s", se.Spec, reason)}
}

// credentialErr names the field an error of osproc.Credential is about.
func credentialErr(err error) error {
	switch {
	case errors.Is(err, osproc.ErrNoSuchUser):
		return fieldErr("User", "Options.User %w", err)
	case errors.Is(err, osproc.ErrNoSuchGroup):
		return fieldErr("Group", "Options.Group %w", err)
	}
	return fieldErr("User", "Options.User/Options.Group: %w", err)
}

// checkName: a name goes into file names, log fields and metric labels.
func checkName(name string) error {
	if len(name) > 64 {
		return fieldErr("Name", "Options.Name %q: at most 64 characters", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fieldErr("Name", "Options.Name %q: use letters, digits, '.', '_' or '-'", name)
		}
	}
	return nil
}
