package osproc

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/fsm"
	"github.com/dutchmaster/dutchmaster/sockets"
	"github.com/dutchmaster/dutchmaster/sockets/nodecluster"
	"github.com/dutchmaster/dutchmaster/sockets/reuseport"
)

// Config says how to start workers.
type Config struct {
	// Command is the worker program and its arguments; Command[0] is
	// looked up in PATH (relative to Dir when it contains a slash).
	Command []string
	// Dir is the working directory, resolved through symlinks at every
	// fork, so a deploy that moves a `current` link is picked up by the
	// next worker. Default: the master's working directory.
	Dir string
	// Env is added to the master's environment (KEY=VALUE).
	Env []string
	// Listeners are passed to every worker as fds 3.. in this order.
	Listeners []*sockets.Listener
	// Balanced, when set, has one entry per listener: a group of sockets
	// (one per slot) for a listener balanced in the kernel, nil for a
	// shared one. A worker gets its slot's socket in place of the
	// listener's; a slot the group does not have yet (a scale up) is bound
	// into it before the fork.
	Balanced []*reuseport.Group
	// Retired, for balanced listeners, says whether a slot has left the
	// kernel's choice for good as its worker is drained (a scale down:
	// out of the eligible slots while others remain). Such a worker's
	// drain waits until the slot's sockets' accept queues are empty (or
	// RetireWait passed), so that what was queued there is accepted
	// before the worker stops accepting; once the worker is gone the
	// slot's sockets are closed, and bound again if the slot comes back.
	// Called on the cluster's goroutine, in the Drain.
	Retired func(slot int) bool
	// RetireWait bounds that wait. Default 5s.
	RetireWait time.Duration
	// StopSignal drains a worker that does not speak IPC. Default SIGTERM.
	StopSignal syscall.Signal
	// BeforeFork runs before every fork, in the resolved Dir; an error
	// fails that fork.
	BeforeFork func(dir string, env []string) error
	// LogOutput turns each line of a worker's stdout and stderr into a log
	// event with the worker's fields; otherwise output passes through to
	// Stdout and Stderr.
	LogOutput bool
	// Tail, if set, keeps the last lines of every worker's output (for
	// ctl logs): the output then always goes through a pipe the master
	// reads (see output).
	Tail   *OutputLog
	Stdout io.Writer // default os.Stdout
	Stderr io.Writer // default os.Stderr
	Logger zerolog.Logger
	// Executable is the trampoline binary; default os.Executable().
	Executable string
	// EnvClear starts the workers' environment empty but for EnvAllow's
	// keys of the master's, so its secrets stay with it; Env, the
	// identity and the protocol variables are added as always.
	EnvClear bool
	EnvAllow []string
	// Credential runs workers (and the trampoline) as another user and
	// group; the master keeps its sockets. Nil: the master's own.
	Credential *syscall.Credential
	// Watchdog, when positive, is given to every worker as WATCHDOG_USEC
	// (and WATCHDOG_PID, its own pid, set by the trampoline): how often it
	// must prove it is alive (docs/protocol.md).
	Watchdog time.Duration
	// NodeCluster makes the master act as the Node.js cluster primary on
	// each worker's IPC channel (docs/node.md): the worker gets
	// NODE_UNIQUE_ID (its id), its listen() gets a socket the runtime
	// shares between all workers for the master's life, its first
	// listening counts as ready, and the IPC drain is the cluster's
	// disconnect (the channel stays open). Lines that are not Node's
	// internal messages (process.send) pass through as IPC events.
	NodeCluster bool
	// NodeServers answers the Node.js cluster workers' queries, balanced
	// as it was made (nodecluster.NewBalancedRegistry); the runtime closes
	// it. Nil: a registry of shared sockets over Listeners.
	NodeServers *nodecluster.Registry
	// NodePreload loads dutchmaster's preload module into each Node.js
	// cluster worker (package sockets/nodepreload: NODE_OPTIONS=--require),
	// so that unmodified apps drain their keep-alive connections; NodeGrace
	// is its grace. Only with NodeCluster.
	NodePreload bool
	NodeGrace   time.Duration
}

// Runtime starts and stops worker processes. It is safe for concurrent use.
type Runtime struct {
	notify *sockets.NotifySocket
	// handles are the Node.js cluster workers' servers, shared by every
	// worker of every generation; closed by Close.
	handles *nodecluster.Registry

	mu     sync.Mutex
	cfg    Config // guarded by mu: Reconfigure replaces it
	closed bool
	procs  map[core.WorkerID]*process
	byPID  map[int]*process
	// starting holds the orders given to workers whose fork is under way
	// (a slow before-fork hook): they are carried out once it exists.
	starting map[core.WorkerID]*orders
	// nodeBinaries are the Node.js binaries whose version was checked.
	nodeBinaries map[string]bool
	// preload is the path of the Node.js preload module, once written;
	// preloadFailed says that writing it failed (and was logged).
	preload       string
	preloadFailed bool
	wg            sync.WaitGroup
	// cgroups holds a cgroup per worker; nil where the kernel or the
	// master's rights offer none.
	cgroups *cgroupTree
	// forkMu makes forks under a process limit one at a time.
	forkMu sync.Mutex
	// forking counts the forks under way: from Fork to its Spawned or
	// ForkFailed; retireWaits the drains waiting for a retired slot's
	// queues (both guarded by mu).
	forking     int
	retireWaits int
	// gate stops the readers for a handover (handover.go); stopped are
	// the processes whose readers Pause interrupted (guarded by mu).
	gate    pauseGate
	stopped []*process
	// barriers are the notify barriers waiting for their datagram;
	// notifyDone is closed once the notify reader ended.
	barriers   map[uint64]chan struct{}
	barrierSeq uint64
	notifyDone chan struct{}
}

// orders are a drain or kill that arrived before the process existed.
type orders struct {
	slot  int
	drain *actors.DrainMethod
	kill  bool
}

// config is the configuration in force.
func (r *Runtime) config() Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cfg
}

// Reconfigure changes how the next workers start (command, environment,
// directory, hooks, stop signal, output); running workers are not
// touched. Listeners (and their balanced groups), the notify socket and
// the trampoline stay.
func (r *Runtime) Reconfigure(next Config) {
	r.mu.Lock()
	defer r.mu.Unlock()
	next.Listeners, next.Balanced, next.Executable = r.cfg.Listeners, r.cfg.Balanced, r.cfg.Executable
	next.NodeServers = r.cfg.NodeServers
	next.Retired, next.RetireWait = r.cfg.Retired, r.cfg.RetireWait
	next.Tail = r.cfg.Tail // fixed for the master's life, as ctl logs reads it
	if next.StopSignal == 0 {
		next.StopSignal = syscall.SIGTERM
	}
	if next.Stdout == nil {
		next.Stdout = r.cfg.Stdout
	}
	if next.Stderr == nil {
		next.Stderr = r.cfg.Stderr
	}
	if len(next.Command) == 0 {
		next.Command = r.cfg.Command
	}
	r.cfg = next
}

var _ actors.Runtime = (*Runtime)(nil)

// New prepares a runtime; Close releases it once every worker is gone.
func New(cfg Config) (*Runtime, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ns, err := sockets.NewNotifySocket()
	if err != nil {
		return nil, err
	}
	r := newRuntime(cfg, ns)
	r.cgroups = openCgroupTree(cfg.Logger)
	r.startNotifyReader()
	return r, nil
}

// newRuntime makes a runtime around its notify socket, with no worker yet
// and nothing started.
func newRuntime(cfg Config, ns *sockets.NotifySocket) *Runtime {
	if cfg.NodeServers == nil {
		cfg.NodeServers = nodecluster.NewRegistry(cfg.Listeners)
	}
	r := &Runtime{
		cfg: cfg, notify: ns, handles: cfg.NodeServers,
		procs: map[core.WorkerID]*process{}, byPID: map[int]*process{}, starting: map[core.WorkerID]*orders{},
		nodeBinaries: map[string]bool{},
	}
	r.gate.cond.L = &r.gate.mu
	r.notifyDone = make(chan struct{})
	return r
}

// startNotifyReader starts the goroutine that reads the notify socket.
func (r *Runtime) startNotifyReader() {
	r.wg.Add(1)
	r.gate.startReader()
	go r.readNotify()
}

// withDefaults checks cfg and fills in its defaults.
func (cfg Config) withDefaults() (Config, error) {
	if len(cfg.Command) == 0 {
		return cfg, errors.New("no worker command")
	}
	if cfg.StopSignal == 0 {
		cfg.StopSignal = syscall.SIGTERM
	}
	if cfg.RetireWait <= 0 {
		cfg.RetireWait = 5 * time.Second
	}
	if cfg.Stdout == nil {
		cfg.Stdout = os.Stdout
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	if cfg.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return cfg, fmt.Errorf("finding the dutchmaster binary for the worker trampoline: %w", err)
		}
		cfg.Executable = exe
	}
	return cfg, nil
}

// Close stops the notify reader and waits for every goroutine of the
// runtime. Workers still running are killed first, and so is a worker
// whose fork was under way (or that is forked after Close). Once they are
// gone, the sockets bound for Node.js cluster workers are closed.
func (r *Runtime) Close() error {
	r.mu.Lock()
	r.closed = true
	var idle []*process
	for _, p := range r.procs {
		p.kill()
		if !p.attached {
			idle = append(idle, p) // adopted, never reattached: nothing reaps it
		}
	}
	r.mu.Unlock()
	r.Unpause() // a paused reader ends once its descriptor closes
	err := r.notify.Close()
	for _, p := range idle {
		p.release()
	}
	r.wg.Wait()
	// Every worker is gone, and with it its cgroup or adopted orphans;
	// what is left is what escaped in between.
	if r.cgroups != nil {
		r.cgroups.close()
	} else {
		r.killOrphans(-1)
	}
	return errors.Join(err, r.handles.Close(), r.removePreload())
}

// NotifySocket is the address workers get in NOTIFY_SOCKET:
// @dutchmaster-notify-<32 hex>, in the abstract namespace.
func (r *Runtime) NotifySocket() string { return r.notify.Path() }

// Fork starts a worker on a goroutine of its own (the before-fork hook
// may take time) and reports through events.
func (r *Runtime) Fork(spec actors.WorkerSpec, events func(any)) {
	r.mu.Lock()
	r.starting[spec.ID] = &orders{slot: spec.Slot}
	r.forking++
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		// A fork asked for while the runtime is paused waits (and makes a
		// handover refuse): a worker forked then would not be handed over.
		if !r.gate.waitUnpaused() {
			return
		}
		p, err := r.start(spec, events)
		if err != nil {
			r.mu.Lock()
			delete(r.starting, spec.ID)
			r.mu.Unlock()
			defer r.forkDone()
			log := r.config().Logger
			level := zerolog.WarnLevel
			if errors.Is(err, errGoneBeforeFork) {
				level = zerolog.InfoLevel // asked for: a stop came first
			}
			// No pid: there is no process.
			log.WithLevel(level).Int(actors.FieldWorker, int(spec.ID)).Int(actors.FieldSlot, spec.Slot).Int(actors.FieldGeneration, spec.Generation).
				Str(actors.FieldState, string(fsm.Forking)).Err(err).Msg("fork failed")
			events(actors.ForkFailed{Err: err.Error()})
			return
		}
		events(actors.Spawned{PID: p.pid})
		// The IPC reader counts from here, before the fork stops counting,
		// so that a Pause cannot miss it.
		r.gate.startReader()
		r.forkDone()
		p.run()
	}()
}

// forkDone ends a fork's count (Forking).
func (r *Runtime) forkDone() {
	r.mu.Lock()
	r.forking--
	r.mu.Unlock()
}

// Drain asks a worker to stop gracefully. The worker of a retired slot
// (Config.Retired) is asked once its slot's queues are empty.
func (r *Runtime) Drain(id core.WorkerID, how actors.DrainMethod) {
	r.mu.Lock()
	p, cfg := r.procs[id], r.cfg
	if o := r.starting[id]; o != nil {
		o.drain = &how
	}
	r.mu.Unlock()
	if p != nil {
		r.drainProcess(p, how, cfg)
	}
}

// drainProcess drains a started worker: at once, or, for the worker of a
// retired slot, once the slot's queues are empty, marked retiring so that
// its exit closes the slot's sockets. Both a drain ordered after the
// start and one ordered during it (carried out by register) come here.
func (r *Runtime) drainProcess(p *process, how actors.DrainMethod, cfg Config) {
	if !(balanced(cfg.Balanced) || r.handles.Kernel()) || cfg.Retired == nil || !cfg.Retired(p.spec.Slot) {
		p.drain(how, cfg.StopSignal)
		return
	}
	p.mu.Lock()
	p.retiring = true
	p.mu.Unlock()
	r.mu.Lock()
	r.retireWaits++ // a handover refuses meanwhile: this drain is not handed over
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.awaitEmptyQueues(p, cfg)
		p.drain(how, cfg.StopSignal)
		r.mu.Lock()
		r.retireWaits--
		r.mu.Unlock()
	}()
}

func balanced(groups []*reuseport.Group) bool {
	return balancedListeners(groups) > 0
}

// SlotSockets is how many sockets one slot holds in the master: one per
// listener balanced in the kernel, bound before the fork of a slot's
// first worker (for ForkReserve).
func (r *Runtime) SlotSockets() int { return balancedListeners(r.config().Balanced) }

func balancedListeners(groups []*reuseport.Group) int {
	n := 0
	for _, g := range groups {
		if g != nil {
			n++
		}
	}
	return n
}

// queuePoll is how often a retired slot's queues are looked at.
const queuePoll = 10 * time.Millisecond

// awaitEmptyQueues returns once p's slot's sockets have held no queued
// connection on two looks in a row (a connection whose handshake was under
// way at the first look is counted by the second), once cfg.RetireWait has
// passed, or once p is gone.
func (r *Runtime) awaitEmptyQueues(p *process, cfg Config) {
	deadline := time.Now().Add(cfg.RetireWait)
	empty := 0
	for empty < 2 {
		if time.Now().After(deadline) {
			p.log.Info().Str(actors.FieldState, string(fsm.Draining)).Dur("waited", cfg.RetireWait).
				Msg("retired slot: connections still queued after the wait; draining anyway")
			return
		}
		p.mu.Lock()
		gone := p.reaped
		p.mu.Unlock()
		if gone {
			return
		}
		queued, err := r.handles.QueueLen(p.spec.Slot)
		if err != nil {
			p.log.Debug().Err(err).Msg("retired slot: queue length unknown")
		}
		for _, g := range cfg.Balanced {
			if g == nil {
				continue
			}
			n, err := g.QueueLen(p.spec.Slot)
			if err != nil {
				p.log.Debug().Err(err).Msg("retired slot: queue length unknown")
			}
			queued += n
		}
		if queued == 0 {
			empty++
		} else {
			empty = 0
		}
		time.Sleep(queuePoll)
	}
}

// Kill ends a worker and its process group at once.
func (r *Runtime) Kill(id core.WorkerID) {
	r.mu.Lock()
	p := r.procs[id]
	if o := r.starting[id]; o != nil {
		o.kill = true
	}
	r.mu.Unlock()
	if p != nil {
		p.kill()
	}
}

// Abort sends SIGABRT to a worker's process (a hung one): it writes its
// stacks and dies; the cluster kills its group if it does not.
func (r *Runtime) Abort(id core.WorkerID) {
	if p := r.process(id); p != nil {
		// os.Process signals through a pidfd, so a reused pid is never hit.
		if err := p.proc.Signal(syscall.SIGABRT); err != nil && !errors.Is(err, os.ErrProcessDone) {
			p.log.Debug().Err(err).Msg("SIGABRT failed")
		}
	}
}

func (r *Runtime) process(id core.WorkerID) *process {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.procs[id]
}

// register records a started worker; false means the runtime is closed
// and the worker must be killed.
// register makes a started worker reachable and carries out the orders
// it was given while it started. It reports false once the runtime is
// closed (the caller then kills the worker).
func (r *Runtime) register(p *process) bool {
	r.mu.Lock()
	r.procs[p.spec.ID] = p
	r.byPID[p.pid] = p
	o, cfg, open := r.starting[p.spec.ID], r.cfg, !r.closed
	delete(r.starting, p.spec.ID)
	r.mu.Unlock()
	switch {
	case o == nil:
	case o.kill:
		p.kill()
	case o.drain != nil && open: // closed: the caller kills the worker
		r.drainProcess(p, *o.drain, cfg)
	}
	return open
}

func (r *Runtime) forget(p *process) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.procs, p.spec.ID)
	delete(r.byPID, p.pid)
	p.mu.Lock()
	retiring := p.retiring
	p.mu.Unlock()
	if retiring {
		r.closeRetiredSlot(p.spec.Slot)
	}
}

// closeRetiredSlot closes slot's balanced sockets unless a worker of it
// runs or starts (the slot came back while its old worker drained). It
// runs under r.mu, so a fork into the slot after it binds the slot again.
func (r *Runtime) closeRetiredSlot(slot int) {
	for _, p := range r.procs {
		if p.spec.Slot == slot {
			return
		}
	}
	for _, o := range r.starting {
		if o.slot == slot {
			return
		}
	}
	if err := r.handles.CloseSlot(slot); err != nil {
		r.cfg.Logger.Warn().Int(actors.FieldSlot, slot).Err(err).Msg("retired slot: its socket could not be closed")
	}
	for _, g := range r.cfg.Balanced {
		if g == nil {
			continue
		}
		if err := g.CloseSlot(slot); err != nil {
			r.cfg.Logger.Warn().Int(actors.FieldSlot, slot).Err(err).Msg("retired slot: its socket could not be closed")
		}
	}
}

// readNotify hands each sd_notify datagram to the worker that sent it,
// told apart by the sender's pid from the kernel's credentials. A datagram
// from an unknown pid (a worker's child, say) is logged and dropped.
func (r *Runtime) readNotify() {
	defer r.wg.Done()
	defer r.gate.endReader()
	defer close(r.notifyDone)
	for {
		n, err := r.notify.Read()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if sockets.Interrupted(err) {
			if !r.gate.park() {
				return
			}
			continue
		}
		if err != nil {
			log := r.config().Logger
			log.Warn().Err(err).Int("pid", n.PID).Msg("notify datagram dropped")
			continue
		}
		if r.passedBarrier(n) {
			continue
		}
		r.mu.Lock()
		p := r.byPID[n.PID]
		r.mu.Unlock()
		if p == nil {
			log := r.config().Logger
			log.Debug().Int("pid", n.PID).Str("payload", n.Payload).Msg("notify datagram from a process that is not a worker")
			continue
		}
		p.deliverMu.Lock()
		switch {
		case p.exited:
		case p.events == nil: // adopted, not yet reattached: kept until then
			p.early = append(p.early, n.Payload)
		default:
			p.events(actors.Notify{Payload: n.Payload})
		}
		p.deliverMu.Unlock()
	}
}

// barrierPrefix starts the datagrams the master sends itself on the notify
// socket (notifyBarrier).
const barrierPrefix = "DUTCHMASTER_BARRIER="

// barrierWait bounds notifyBarrier, in case the datagram cannot be sent
// or read (then a datagram may come after its worker's exit, and is
// dropped, as one from an unknown process).
const barrierWait = time.Second

// notifyBarrier returns once the notify reader has read every datagram
// queued on the socket before the call: it sends one to the socket
// itself and waits for the reader to see it (a socket's datagrams are
// read in the order they came).
func (r *Runtime) notifyBarrier() {
	r.mu.Lock()
	if r.barriers == nil {
		r.barriers = map[uint64]chan struct{}{}
	}
	r.barrierSeq++
	id, seen := r.barrierSeq, make(chan struct{})
	r.barriers[id] = seen
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.barriers, id)
		r.mu.Unlock()
	}()
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: r.notify.Path(), Net: "unixgram"})
	if err != nil {
		return
	}
	_, err = conn.Write([]byte(barrierPrefix + strconv.FormatUint(id, 10)))
	conn.Close()
	if err != nil {
		return
	}
	select {
	case <-seen:
	case <-r.notifyDone:
	case <-time.After(barrierWait):
	}
}

// passedBarrier reports whether n is one of notifyBarrier's datagrams
// (sent by this process), and lets its caller go on.
func (r *Runtime) passedBarrier(n sockets.Notification) bool {
	v, ok := strings.CutPrefix(n.Payload, barrierPrefix)
	if !ok || n.PID != os.Getpid() {
		return false
	}
	id, _ := strconv.ParseUint(v, 10, 64)
	r.mu.Lock()
	if seen := r.barriers[id]; seen != nil {
		close(seen)
		delete(r.barriers, id)
	}
	r.mu.Unlock()
	return true
}
