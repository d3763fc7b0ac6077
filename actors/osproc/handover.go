package osproc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/sockets"
	"github.com/dutchmaster/dutchmaster/sockets/nodecluster"
)

// A master that upgrades in place hands its running workers to its next
// image across an exec: Pause stops every reader of the runtime where
// nothing is half done, Handover lists what the next image needs (the
// descriptors by number: an exec keeps them), and that image's Adopt and
// Reattach take the workers over. If the exec fails, Unpause lets the
// readers go on.
//
// The readers (the IPC channels, the output pipes, the notify socket) are
// stopped by a read deadline in the past: a read under way returns, keeping
// what it had of an unfinished line, and what is not read stays in the
// kernel, for the next image to read. An exit watcher is not stopped: it
// only looks (the worker stays unreaped), and acts once the runtime is not
// paused; a worker that exits while paused is reaped, and its exit
// reported, by the image that adopts it.

// State is what the next image needs to take over a paused runtime:
// plain JSON, with descriptors by number.
type State struct {
	Notify  NotifyState    `json:"notify"`
	Workers []ProcessState `json:"workers"`
	// Preload is the Node.js preload module's path, kept as it is (the
	// workers' NODE_OPTIONS name it); "" without.
	Preload string `json:"preload,omitempty"`
	// Cgroups is the directory of the workers' cgroups; "" without.
	Cgroups string `json:"cgroups,omitempty"`
}

// NotifyState is the notify socket: its descriptor and its address (the
// workers' NOTIFY_SOCKET).
type NotifyState struct {
	FD   int    `json:"fd"`
	Path string `json:"path"`
}

// ProcessState is one running worker.
type ProcessState struct {
	ID          core.WorkerID `json:"id"`
	Slot        int           `json:"slot"`
	Generation  int           `json:"generation"`
	MaxRequests int           `json:"max_requests,omitempty"`
	PID         int           `json:"pid"`
	// Channel is the master's end of the IPC channel; ChannelPending the
	// bytes read from it and not yet delivered as lines.
	Channel        int    `json:"channel"`
	ChannelPending []byte `json:"channel_pending,omitempty"`
	// Stdout and Stderr are the read ends of the output pipes, -1 for a
	// stream the worker writes to the master's own descriptor; the
	// pendings are their unfinished lines.
	Stdout        int    `json:"stdout"`
	Stderr        int    `json:"stderr"`
	StdoutPending []byte `json:"stdout_pending,omitempty"`
	StderrPending []byte `json:"stderr_pending,omitempty"`
	// Retiring: the worker's slot left the balanced sockets for good;
	// its exit closes the slot's sockets. Draining: it was asked to stop.
	Retiring bool `json:"retiring,omitempty"`
	Draining bool `json:"draining,omitempty"`
	// Session is the Node.js cluster primary's side of the channel, for
	// a worker started with Config.NodeCluster.
	Session *sessionState `json:"session,omitempty"`
}

// pauseGate stops the runtime's readers at safe points and holds the
// handling of exits while paused.
type pauseGate struct {
	mu        sync.Mutex
	cond      sync.Cond // on mu
	paused    bool
	abandoned bool
	readers   int // reader goroutines running
	parked    int // readers stopped by a pause
	exiting   int // exits being handled and reported
}

func (g *pauseGate) startReader() {
	g.mu.Lock()
	g.readers++
	g.mu.Unlock()
}

func (g *pauseGate) endReader() {
	g.mu.Lock()
	g.readers--
	g.cond.Broadcast()
	g.mu.Unlock()
}

// park is called by a reader whose read was interrupted, having delivered
// all it read: it waits while the runtime is paused, and reports whether
// to read on (false: abandoned, end without closing anything).
func (g *pauseGate) park() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.paused && !g.abandoned {
		g.parked++
		g.cond.Broadcast()
		for g.paused && !g.abandoned {
			g.cond.Wait()
		}
		g.parked--
	}
	return !g.abandoned
}

// enterExit waits while paused before a worker's exit is handled (reaped,
// reported), then counts it, so that Pause waits for it; false once
// abandoned.
func (g *pauseGate) enterExit() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.paused && !g.abandoned {
		g.cond.Wait()
	}
	if g.abandoned {
		return false
	}
	g.exiting++
	return true
}

func (g *pauseGate) leaveExit() {
	g.mu.Lock()
	g.exiting--
	g.cond.Broadcast()
	g.mu.Unlock()
}

// waitUnpaused waits while paused; false once abandoned.
func (g *pauseGate) waitUnpaused() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.paused && !g.abandoned {
		g.cond.Wait()
	}
	return !g.abandoned
}

func (g *pauseGate) isPaused() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.paused
}

func (g *pauseGate) isAbandoned() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.abandoned
}

// Forking is the number of forks under way: asked for (Fork) and not yet
// reported (Spawned or ForkFailed).
func (r *Runtime) Forking() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.forking
}

// Pause stops every reader of the runtime (each worker's IPC channel and
// output pipes, the notify socket) at a safe point, and holds the
// handling of exits, for a handover: once it returns, no event is
// delivered any more, none is half delivered, and what a worker writes
// meanwhile waits in the kernel. A worker whose exit was being reported
// when Pause came is reported first. Pause refuses while a fork is under
// way (try again once Forking is 0), or a drain waits for a retired
// slot's queues (at most Config.RetireWait); a fork asked for while
// paused waits, and Handover refuses then. Unpause undoes it.
func (r *Runtime) Pause() error {
	r.mu.Lock()
	switch {
	case r.closed:
		r.mu.Unlock()
		return errors.New("pause: the runtime is closed")
	case r.forking > 0 || r.retireWaits > 0:
		err := r.busy("pause")
		r.mu.Unlock()
		return err
	}
	g := &r.gate
	g.mu.Lock()
	if g.paused {
		g.mu.Unlock()
		r.mu.Unlock()
		return errors.New("pause: already paused")
	}
	g.paused = true
	g.mu.Unlock()
	r.mu.Unlock()
	// No exit is handled from now on; those under way are reported first,
	// with every reader still running (an exit waits for its worker's
	// readers, and for the notify reader: notifyBarrier).
	g.mu.Lock()
	for g.exiting > 0 {
		g.cond.Wait()
	}
	g.mu.Unlock()
	r.mu.Lock()
	stop := make([]*process, 0, len(r.procs))
	for _, p := range r.procs {
		stop = append(stop, p)
	}
	r.stopped = stop
	r.mu.Unlock()

	_ = r.notify.Interrupt()
	for _, p := range stop {
		_ = p.channel.Interrupt()
		p.output.interrupt()
	}
	g.mu.Lock()
	for g.parked < g.readers {
		g.cond.Wait()
	}
	g.mu.Unlock()
	return nil
}

// busy says why a pause or handover must wait (r.mu held).
func (r *Runtime) busy(what string) error {
	if r.forking > 0 {
		return fmt.Errorf("%s: %d forks under way; try again", what, r.forking)
	}
	return fmt.Errorf("%s: %d drains wait for a retired slot's queues; try again", what, r.retireWaits)
}

// Unpause lets the readers go on after a Pause (an exec that failed), as
// if nothing had happened; without a Pause it does nothing.
func (r *Runtime) Unpause() {
	r.mu.Lock()
	stop := r.stopped
	r.stopped = nil
	r.mu.Unlock()
	if !r.gate.isPaused() {
		return
	}
	// The deadlines go first: a reader woken before would only be stopped
	// again.
	_ = r.notify.Resume()
	for _, p := range stop {
		_ = p.channel.Resume()
		p.output.resume()
	}
	g := &r.gate
	g.mu.Lock()
	g.paused = false
	g.cond.Broadcast()
	g.mu.Unlock()
}

// Handover returns, after Pause, the state the next image adopts and the
// descriptors it needs (the notify socket, each worker's IPC channel and
// output pipes' read ends). They stay open and the runtime's: the caller
// clears close-on-exec on them just before the exec, and sets it again if
// the exec fails. The runtime is not changed.
func (r *Runtime) Handover() (State, []int, error) {
	if !r.gate.isPaused() {
		return State{}, nil, errors.New("handover: the runtime is not paused")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.forking > 0 || r.retireWaits > 0 {
		return State{}, nil, r.busy("handover")
	}
	st := State{Notify: NotifyState{FD: r.notify.FD(), Path: r.notify.Path()}, Preload: r.preload}
	if r.cgroups != nil {
		st.Cgroups = r.cgroups.dir
	}
	fds := []int{st.Notify.FD}
	ids := make([]core.WorkerID, 0, len(r.procs))
	for id := range r.procs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		p := r.procs[id]
		ps := ProcessState{
			ID: id, Slot: p.spec.Slot, Generation: p.spec.Generation, MaxRequests: p.spec.MaxRequests, PID: p.pid,
			Channel: p.channel.FD(), ChannelPending: p.channel.Pending(), Stdout: -1, Stderr: -1,
			Draining: p.output.draining.Load(),
		}
		p.mu.Lock()
		ps.Retiring = p.retiring
		p.mu.Unlock()
		fds = append(fds, ps.Channel)
		for i, fd := range []*int{&ps.Stdout, &ps.Stderr} {
			if pipe := p.output.pipes[i]; pipe != nil {
				*fd = sockets.FD(pipe)
				fds = append(fds, *fd)
			}
		}
		ps.StdoutPending, ps.StderrPending = p.output.pending(0), p.output.pending(1)
		if p.cluster != nil {
			s, err := handoverSession(p.cluster)
			if err != nil {
				return State{}, nil, fmt.Errorf("handover: worker %d's Node.js cluster session: %w", id, err)
			}
			ps.Session = s
		}
		st.Workers = append(st.Workers, ps)
	}
	return st, fds, nil
}

// Abandon ends the runtime's goroutines after Pause and closes its
// descriptors, leaving the workers be: none is signalled or reaped, no
// cgroup removed, the Node.js servers and the preload module kept. It is
// the end of a runtime whose workers another one adopted in the same
// process (from duplicates of the handed descriptors); across an exec,
// the old image simply ends.
func (r *Runtime) Abandon() error {
	g := &r.gate
	g.mu.Lock()
	if !g.paused {
		g.mu.Unlock()
		return errors.New("abandon: the runtime is not paused")
	}
	g.abandoned = true
	g.cond.Broadcast()
	g.mu.Unlock()
	r.mu.Lock()
	r.closed = true
	procs := make([]*process, 0, len(r.procs))
	for _, p := range r.procs {
		procs = append(procs, p)
	}
	r.mu.Unlock()
	for _, p := range procs {
		p.mu.Lock()
		if p.exitWatch != nil {
			_ = p.exitWatch.SetReadDeadline(pastDeadline)
		}
		p.mu.Unlock()
	}
	r.wg.Wait()
	g.mu.Lock()
	for g.readers > 0 {
		g.cond.Wait()
	}
	g.mu.Unlock()
	err := r.notify.Close()
	for _, p := range procs {
		p.closeDescriptors()
	}
	return err
}

// closeDescriptors closes the master's descriptors of a worker it does not
// run any more, and lets its process handle go.
func (p *process) closeDescriptors() {
	p.channel.Close()
	for _, pipe := range p.output.pipes {
		if pipe != nil {
			pipe.Close()
		}
	}
	p.mu.Lock()
	if p.exitWatch != nil {
		p.exitWatch.Close()
		p.exitWatch = nil
	}
	p.mu.Unlock()
	_ = p.proc.Release()
}

// release ends an adopted worker that was never reattached, at Close: it
// was killed; it is reaped, and its descriptors and cgroup go.
func (p *process) release() {
	_, _ = p.proc.Wait()
	p.closeDescriptors()
	if p.cgroup != nil {
		p.cgroup.remove()
	}
	p.output.close()
	p.runtime.forget(p)
}

// Adopt makes the runtime of a new image from the state its previous
// image handed over (Handover), with the descriptors the exec kept. cfg is
// as New takes it, with what the caller adopted itself (Listeners,
// Balanced, NodeServers). The workers are registered, their descriptors
// the runtime's, and nothing of theirs runs until Reattach. The cgroup
// tree is the one the previous image made (not made again, nor cleaned).
func Adopt(cfg Config, st State) (*Runtime, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ns, err := sockets.NotifySocketFromFD(st.Notify.FD, st.Notify.Path)
	if err != nil {
		return nil, fmt.Errorf("adopt: %w", err)
	}
	r := newRuntime(cfg, ns)
	r.preload = st.Preload
	if st.Cgroups != "" {
		r.cgroups = &cgroupTree{dir: st.Cgroups, log: cfg.Logger}
	}
	for _, ps := range st.Workers {
		p, err := r.adoptProcess(cfg, ps)
		if err != nil {
			for _, q := range r.procs {
				q.closeDescriptors()
			}
			ns.Close()
			return nil, fmt.Errorf("adopt: worker %d (pid %d): %w", ps.ID, ps.PID, err)
		}
		r.procs[p.spec.ID], r.byPID[p.pid] = p, p
	}
	r.startNotifyReader()
	return r, nil
}

// adoptProcess takes over one worker: its process (a pidfd), its channel
// and output pipes, its cgroup, its Node.js cluster session.
func (r *Runtime) adoptProcess(cfg Config, ps ProcessState) (*process, error) {
	spec := actors.WorkerSpec{ID: ps.ID, Slot: ps.Slot, Generation: ps.Generation, MaxRequests: ps.MaxRequests}
	proc, err := os.FindProcess(ps.PID)
	if err != nil {
		return nil, err
	}
	ch, err := sockets.ChannelFromFD(ps.Channel, ps.ChannelPending)
	if err != nil {
		proc.Release()
		return nil, err
	}
	out := adoptOutput(cfg, spec, [2]int{ps.Stdout, ps.Stderr}, [2][]byte{ps.StdoutPending, ps.StderrPending})
	out.draining.Store(ps.Draining)
	p := &process{spec: spec, proc: proc, pid: ps.PID, channel: ch, output: out, runtime: r, retiring: ps.Retiring}
	if r.cgroups != nil {
		dir := filepath.Join(r.cgroups.dir, "worker-"+strconv.Itoa(int(ps.ID)))
		if _, err := os.Stat(dir); err == nil {
			p.cgroup = &workerCgroup{dir: dir}
		}
	}
	p.log = cfg.Logger.With().Int(actors.FieldWorker, int(spec.ID)).Int(actors.FieldSlot, spec.Slot).
		Int(actors.FieldGeneration, spec.Generation).Int(actors.FieldPID, p.pid).Logger()
	if ps.Session != nil {
		p.cluster, err = adoptSession(ch, r.handles, nodecluster.Worker{ID: int(ps.ID), Slot: ps.Slot}, ps.Session)
		if err != nil {
			p.closeDescriptors()
			return nil, err
		}
	}
	p.exitWatch = openExitWatch(p.pid)
	return p, nil
}

// Reattach starts an adopted worker's goroutines, reporting to events as
// Fork's events do (without Spawned: the worker runs): IPC lines, notify
// datagrams (those that came since the adoption first), output, and its
// exit, at once if it exited meanwhile. An unknown or already attached
// worker is logged and ignored.
func (r *Runtime) Reattach(id core.WorkerID, events func(any)) {
	r.mu.Lock()
	p := r.procs[id]
	ok := p != nil && !p.attached && !r.closed
	if ok {
		p.attached = true
		r.wg.Add(1)
	}
	r.mu.Unlock()
	if !ok {
		log := r.config().Logger
		log.Warn().Int(actors.FieldWorker, int(id)).Msg("reattach: no such adopted worker")
		return
	}
	p.deliverMu.Lock()
	p.events = events
	for _, payload := range p.early {
		events(actors.Notify{Payload: payload})
	}
	p.early = nil
	p.deliverMu.Unlock()
	p.output.run(p.pid, &r.gate)
	r.gate.startReader()
	go func() {
		defer r.wg.Done()
		p.run()
	}()
}

// adoptOutput is a worker's output over pipes handed over (fds[i] the read
// end, -1 for a stream not piped), with their unfinished lines.
func adoptOutput(cfg Config, spec actors.WorkerSpec, fds [2]int, pending [2][]byte) *output {
	o := newOutputWriters(cfg, spec, func(i int) bool { return fds[i] >= 0 })
	for i, fd := range fds {
		if fd < 0 {
			continue
		}
		o.pipes[i] = os.NewFile(uintptr(fd), "worker-output")
		o.writers[i].partial = append([]byte(nil), pending[i]...)
	}
	return o
}

// pending is the unfinished line of stream i, nil when it is not piped.
func (o *output) pending(i int) []byte {
	w := o.writers[i]
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.partial)
}
