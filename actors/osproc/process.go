package osproc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
	"github.com/dutchmaster/dutchmaster/sockets/wire"
)

// process is one running worker.
type process struct {
	spec   actors.WorkerSpec
	events func(any)
	// proc is the worker's process: a pidfd on Linux, through which it is
	// signalled and reaped, so a reused pid is never hit. The runtime
	// keeps no *exec.Cmd once the worker started, so that a process it
	// did not fork itself (one handed over by the master's previous image)
	// is handled the same way.
	proc    *os.Process
	pid     int
	channel *sockets.Channel
	output  *output
	runtime *Runtime
	log     zerolog.Logger
	// cluster is the Node.js cluster primary's side of the channel, for
	// a worker started with Config.NodeCluster; nil otherwise.
	cluster *nodecluster.Session
	// exitWatch is a pidfd of the worker to await its exit on, without a
	// thread; nil where the kernel makes none. awaitExit closes it.
	exitWatch *os.File
	// cgroup holds the worker and everything it starts; nil where the
	// runtime has no cgroups (then the orphans a subreaper master adopted
	// from it stand in).
	cgroup *workerCgroup

	mu     sync.Mutex
	reaped bool // Wait returned: the pid and its group may belong to others now
	// retiring: the worker's slot left the balanced sockets' choice for
	// good (a scale down); its slot sockets close once it is gone.
	retiring bool

	// deliverMu orders the notify reader's deliveries before Exited: once
	// exited is set, no Notify for this worker is delivered any more.
	// early are the notify payloads of an adopted worker that came before
	// Reattach gave it its events.
	deliverMu sync.Mutex
	exited    bool
	early     []string

	// attached: the worker's goroutines run (forked here, or reattached);
	// guarded by the runtime's mu.
	attached bool
}

// start forks the worker: before-fork hook, IPC channel, trampoline.
func (r *Runtime) start(spec actors.WorkerSpec, events func(any)) (*process, error) {
	cfg := r.config()
	dir, err := cfg.resolveDir()
	if err != nil {
		return nil, err
	}
	env := cfg.environ(spec)
	if dir != "" {
		// The master's PWD names the master's directory; os/exec sets PWD
		// for Dir only when it builds the environment itself.
		env = append(env, "PWD="+dir)
	}
	if cfg.BeforeFork != nil {
		if err := cfg.BeforeFork(dir, sockets.WithoutProtocolVars(env)); err != nil {
			return nil, fmt.Errorf("before-fork: %w", err)
		}
	}
	slotFiles, err := slotSockets(cfg.Balanced, spec.Slot)
	if err != nil {
		return nil, err
	}
	channel, childEnd, err := sockets.NewChannel()
	if err != nil {
		return nil, err
	}
	// The child end belongs to the worker; the master's copy goes once the
	// worker has it (or failed to start), so EOF means the worker is gone.
	defer childEnd.Close()
	files := sockets.PlanWorkerFiles(cfg.Listeners, childEnd, r.notify.Path())
	for i, f := range slotFiles {
		if f != nil {
			files.ExtraFiles[i] = f
		}
	}

	preloadEnv := r.nodePreloadEnv(cfg, env)
	limit := processLimit()
	out, err := newOutput(cfg, spec)
	if err != nil {
		channel.Close()
		return nil, err
	}
	newCmd := func() *exec.Cmd {
		cmd := exec.Command(cfg.Executable, cfg.Command...)
		cmd.Args[0] = cfg.Command[0]
		cmd.Dir = dir
		cmd.Env = append(append(files.Environ(env), cfg.healthEnv(spec)...), trampolineEnv+"=1")
		if cfg.NodeCluster {
			cmd.Env = append(cmd.Env, nodecluster.EnvUniqueID+"="+strconv.Itoa(int(spec.ID)))
			cmd.Env = append(cmd.Env, preloadEnv...)
		}
		if n := workerProcessLimit(limit); n > 0 {
			cmd.Env = append(cmd.Env, trampolineNprocEnv+"="+strconv.FormatUint(n, 10))
		}
		cmd.ExtraFiles = files.ExtraFiles
		ownProcessGroup(cmd, cfg.Credential)
		cmd.Stdout, cmd.Stderr = out.child[0], out.child[1]
		return cmd
	}
	cmd := newCmd()
	cg := r.cgroups.worker(spec.ID)
	err = r.fork(cmd, cg, limit, spec.ID)
	if err != nil && cg != nil && cgroupRefused(err) {
		// The kernel (or a seccomp filter) may refuse to fork into a
		// cgroup: the worker starts without one, as do the next.
		cg.remove()
		r.cgroups.disable(err)
		cg = nil
		cmd = newCmd()
		err = r.fork(cmd, nil, limit, spec.ID)
	}
	if err != nil {
		if cg != nil {
			cg.remove()
		}
		channel.Close()
		out.closePipes()
		out.close()
		return nil, fmt.Errorf("starting %s: %w", cfg.Command[0], err)
	}
	out.run(cmd.Process.Pid, &r.gate)
	p := &process{spec: spec, events: events, proc: cmd.Process, pid: cmd.Process.Pid, channel: channel, output: out, runtime: r, cgroup: cg, attached: true}
	p.exitWatch = openExitWatch(p.pid)
	p.log = cfg.Logger.With().Int(actors.FieldWorker, int(spec.ID)).Int(actors.FieldSlot, spec.Slot).
		Int(actors.FieldGeneration, spec.Generation).Int(actors.FieldPID, p.pid).Logger()
	if cfg.NodeCluster {
		p.cluster = r.clusterSession(channel, spec, cmd.Env)
	}
	if !r.register(p) {
		// Close ran while this fork was under way: the worker goes at
		// once, or Close would wait for it forever.
		p.kill()
	}
	return p, nil
}

// resolveDir follows Dir's symlinks now, so each fork sees the release
// the link points at at that moment.
func (cfg Config) resolveDir() (string, error) {
	if cfg.Dir == "" {
		return "", nil
	}
	dir, err := filepath.EvalSymlinks(cfg.Dir)
	if err != nil {
		return "", fmt.Errorf("--dir %s: %w", cfg.Dir, err)
	}
	return dir, nil
}

// environ is the worker's environment before the protocol variables: the
// master's, then Config.Env, then the worker's identity.
func (cfg Config) environ(spec actors.WorkerSpec) []string {
	env := os.Environ()
	if cfg.EnvClear {
		env = slices.DeleteFunc(env, func(kv string) bool {
			k, _, _ := strings.Cut(kv, "=")
			return !slices.Contains(cfg.EnvAllow, k)
		})
	}
	env = append(env, cfg.Env...)
	return append(env,
		"DUTCHMASTER_WORKER_ID="+strconv.Itoa(int(spec.ID)),
		"DUTCHMASTER_SLOT="+strconv.Itoa(spec.Slot),
		"DUTCHMASTER_GENERATION="+strconv.Itoa(spec.Generation),
	)
}

// healthEnv are the watchdog and recycling variables of one worker, added
// after the protocol's variables are cleared from the inherited ones:
// WATCHDOG_USEC (the trampoline adds WATCHDOG_PID, the worker's own pid,
// which only exists after the fork) and DUTCHMASTER_MAX_REQUESTS.
func (cfg Config) healthEnv(spec actors.WorkerSpec) []string {
	var env []string
	if cfg.Watchdog > 0 {
		env = append(env, wire.EnvWatchdogUSec+"="+strconv.FormatInt(cfg.Watchdog.Microseconds(), 10))
	}
	if spec.MaxRequests > 0 {
		env = append(env, wire.EnvMaxRequests+"="+strconv.Itoa(spec.MaxRequests))
	}
	return env
}

// run reads the worker's IPC channel until the process exits, then
// reports the exit. Every IPC line and Notify is delivered before Exited.
// The caller counted the IPC reader (gate.startReader).
//
// For a handover (Pause), the IPC reader stops at a line's boundary or
// keeps the part of a line it read, and the exit is not handled while
// paused: it stays unreaped, for the next image to find.
func (p *process) run() {
	gate := &p.runtime.gate
	read := make(chan struct{})
	go func() {
		defer close(read)
		defer gate.endReader()
		for {
			line, err := p.channel.ReadLine()
			var tooLong *sockets.LineTooLongError
			switch {
			case sockets.Interrupted(err):
				if !gate.park() {
					return
				}
			case errors.As(err, &tooLong):
				p.events(actors.IPC{Err: err.Error()})
			case err != nil:
				return
			case p.cluster != nil:
				p.receiveCluster(line)
			default:
				p.events(actors.IPC{Line: line})
			}
		}
	}()
	// Whatever the worker left in its group goes with it, as soon as it
	// exits: before Wait reaps it, so that the group's id (which the
	// unreaped worker keeps) cannot have been reused, and so that a child
	// holding the worker's output does not hold up Wait.
	if !p.awaitExit() || !gate.enterExit() {
		return // abandoned: the worker is another runtime's now
	}
	defer gate.leaveExit()
	_ = p.killGroup()
	p.killRest()
	state, err := p.proc.Wait()
	p.mu.Lock()
	p.reaped = true
	p.mu.Unlock()
	if p.cgroup != nil {
		p.cgroup.remove()
	}
	// Output the worker wrote before it exited may still be in the pipes,
	// and lines in the socket: read on to EOF, which comes once nothing
	// holds the worker's ends (its group was just killed). A process that
	// left the group may keep them open; closing ours after a delay ends
	// the readers either way.
	p.output.finish()
	linger := time.AfterFunc(outputLinger, func() { p.channel.Close() })
	<-read
	linger.Stop()
	p.channel.Close()
	if p.cluster != nil {
		p.cluster.Close() // what it was handed and did not answer goes to others
	}
	p.output.close()
	// The datagrams the worker sent before it exited are delivered before
	// its exit: after this, one from its pid is no longer its.
	p.runtime.notifyBarrier()
	p.runtime.forget(p)
	p.deliverMu.Lock()
	p.exited = true
	p.deliverMu.Unlock()
	p.events(exitOf(state, err, p.output.lastStderr()))
}

func exitOf(ps *os.ProcessState, err error, tail string) actors.Exited {
	e := actors.Exited{Detail: tail}
	if ps == nil {
		e.Code = -1
		e.Detail = err.Error()
		return e
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		e.Signal = ws.Signal()
		return e
	}
	e.Code = ps.ExitCode()
	return e
}

// drain asks the worker to stop. Over IPC, a Node.js cluster worker (one
// that said online) gets the cluster's disconnect and its channel stays
// open: closing it would make Node exit at once. Any other worker gets
// {"event":"disconnect"} and end-of-file.
func (p *process) drain(how actors.DrainMethod, stop syscall.Signal) {
	p.output.draining.Store(true)
	if how == actors.DrainIPC || how == actors.DrainBoth {
		var err error
		if p.cluster != nil && p.cluster.Online() {
			err = p.cluster.Disconnect()
		} else {
			err = p.channel.Disconnect()
		}
		if err != nil {
			p.log.Info().Str(actors.FieldState, string(fsm.Draining)).Err(err).Msg("IPC channel gone: draining with the stop signal instead")
			how = actors.DrainSignal
		}
	}
	if how == actors.DrainSignal || how == actors.DrainBoth {
		// os.Process signals through a pidfd, so a reused pid is never hit.
		if err := p.proc.Signal(stop); err != nil && !errors.Is(err, os.ErrProcessDone) {
			p.log.Debug().Str(actors.FieldState, string(fsm.Draining)).Err(err).Msg("stop signal failed")
		}
	}
}

// kill sends SIGKILL to the worker's process group and cgroup, then to
// the worker itself (in case it left its group).
func (p *process) kill() {
	p.mu.Lock()
	if !p.reaped {
		_ = p.killGroup()
	}
	p.mu.Unlock()
	if p.cgroup != nil {
		p.cgroup.kill()
	}
	_ = p.proc.Signal(syscall.SIGKILL)
}

// killGroup sends SIGKILL to the worker's process group, which has the
// worker's pid as its id (group.go); only while the worker is not reaped.
func (p *process) killGroup() error { return syscall.Kill(-p.pid, syscall.SIGKILL) }

// killRest ends what the worker started that left its process group: its
// cgroup, or else the orphans a subreaper master adopted from it.
func (p *process) killRest() {
	if p.cgroup != nil {
		p.cgroup.kill()
		return
	}
	p.runtime.killOrphans(int(p.spec.ID))
}

// cgroupRefused tells the errors of a fork into a cgroup that the kernel
// or a seccomp filter refused (clone3 unknown or forbidden, a cgroup that
// cannot take processes) from those of the worker command.
func cgroupRefused(err error) bool {
	for _, e := range []syscall.Errno{syscall.ENOSYS, syscall.EOPNOTSUPP, syscall.EBUSY, syscall.EINVAL, syscall.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// fork starts cmd in cgroup cg (if not nil), once the process limit
// leaves room for it. Forks that count against a limit go one at a time,
// so that two cannot both take the last room.
func (r *Runtime) fork(cmd *exec.Cmd, cg *workerCgroup, limit uint64, id core.WorkerID) error {
	if cg != nil {
		fd, err := cg.open()
		if err != nil {
			return err
		}
		defer fd.Close()
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, int(fd.Fd())
	}
	if limit > 0 {
		r.forkMu.Lock()
		defer r.forkMu.Unlock()
		// Under the process limit forks take turns, each waiting for room;
		// a worker told to go meanwhile (a stop) is not forked only to be
		// drained, or a stopping master would start its pending workers
		// one by one.
		if r.goneBeforeFork(id) {
			return errGoneBeforeFork
		}
		if err := checkProcessLimit(limit); err != nil {
			return err
		}
	}
	return startOnMainThread(cmd)
}

// errGoneBeforeFork: the worker was drained or killed before its fork.
var errGoneBeforeFork = errors.New("drained before its fork")

// goneBeforeFork reports whether worker id, not yet forked, was told to
// drain or be killed.
func (r *Runtime) goneBeforeFork(id core.WorkerID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	o := r.starting[id]
	return o != nil && (o.drain != nil || o.kill)
}

// slotSockets are, for each balanced listener, the socket of the worker's
// slot, to take the listener's place (same position, same name: the worker
// cannot tell), bound first if the slot is new; nil for a shared listener.
func slotSockets(balanced []*reuseport.Group, slot int) ([]*os.File, error) {
	files := make([]*os.File, len(balanced))
	for i, g := range balanced {
		if g == nil {
			continue
		}
		if err := g.OpenSlot(slot); err != nil {
			return nil, fmt.Errorf("binding slot %d's socket: %w", slot, err)
		}
		files[i] = g.Socket(slot)
	}
	return files, nil
}
