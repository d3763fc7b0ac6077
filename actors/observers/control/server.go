package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/actors/core"
	ctl "github.com/dutchmaster/dutchmaster/sockets/control"
	"github.com/dutchmaster/dutchmaster/sockets"
)

// Supervisor is what the server asks of the cluster. Restart may refuse
// (the configuration does not load); the others only send.
type Supervisor interface {
	View(ctx context.Context) (core.View, error)
	Restart(ctx context.Context, source string) error
	Stop(source string)
	Scale(target int, source string)
}

// Options configure a Server.
type Options struct {
	// Path is the socket file's path. Its directory must exist.
	Path string
	// Name is the master's name, reported in status.
	Name   string
	Logger zerolog.Logger
	// MaxLine bounds a request line. Default DefaultMaxLine.
	MaxLine int
	// Allow decides whether a peer's uid may send commands. Default: the
	// master's effective uid and root.
	Allow func(uid uint32) bool
}

// Server is a control socket.
type Server struct {
	opts Options
	ln   *net.UnixListener
	sock *sockets.Listener // owns the socket file
	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu       sync.Mutex
	conns    map[*net.UnixConn]bool
	closed   bool
	seq      int
	waiting  map[string]*waiter // by source: restart and scale requests not yet seen by the cluster
	ending   []*waiter          // restarts waiting for their rollout to end
	stops    []*waiter          // stops waiting for the cluster to stop
	running  bool               // a rollout runs
	stopped  bool               // the cluster has stopped
	gen      int                // newest generation seen
	target   int
	forks    map[int]int // forks into each slot
	sup      Supervisor
	serveErr chan error
}

type waiter struct {
	command string
	source  string
	done    chan ctl.Reply // buffered: resolving never blocks
}

// maxPath is the longest socket path the kernel takes (sun_path).
const maxPath = 107

// Listen creates the socket at opts.Path, mode 0600, replacing a stale
// socket file nobody accepts on; a live one (another master) is an error.
// Nothing is served until Serve.
func Listen(opts Options) (*Server, error) {
	if opts.MaxLine <= 0 {
		opts.MaxLine = ctl.DefaultMaxLine
	}
	if opts.Allow == nil {
		me := uint32(os.Geteuid())
		opts.Allow = func(uid uint32) bool { return uid == me || uid == 0 }
	}
	if len(opts.Path) > maxPath {
		return nil, fmt.Errorf("--control %s: the path is %d bytes, more than the %d a unix socket allows", opts.Path, len(opts.Path), maxPath)
	}
	sock, err := sockets.Bind(sockets.Spec{Name: "control", Network: "unix", Address: opts.Path, Mode: 0o600})
	if err != nil {
		var be *sockets.BindError
		if errors.As(err, &be) {
			reason := be.Reason
			if errors.Is(err, unix.EADDRINUSE) {
				reason = "another master runs on this control socket (give each master its own --name or --control)"
			}
			return nil, fmt.Errorf("--control %s: %s", opts.Path, reason)
		}
		return nil, fmt.Errorf("--control %s: %w", opts.Path, err)
	}
	fl, err := net.FileListener(sock.File())
	if err != nil {
		sock.Close()
		return nil, fmt.Errorf("--control %s: %w", opts.Path, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		opts: opts, ln: fl.(*net.UnixListener), sock: sock, ctx: ctx, stop: cancel,
		conns: map[*net.UnixConn]bool{}, waiting: map[string]*waiter{}, forks: map[int]int{},
	}, nil
}

// Path is the socket file's path.
func (s *Server) Path() string { return s.opts.Path }

// Serve accepts connections on a goroutine of its own until Close.
func (s *Server) Serve(sup Supervisor) {
	s.mu.Lock()
	s.sup = sup
	s.mu.Unlock()
	s.wg.Add(1)
	go s.accept()
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.AcceptUnix()
		if err != nil {
			if s.ctx.Err() == nil {
				s.opts.Logger.Error().Err(err).Msg("control socket: accept failed; no more control commands")
			}
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			return
		}
		s.conns[conn] = true
		s.wg.Add(1)
		s.mu.Unlock()
		go s.handle(conn)
	}
}

// Close stops accepting, answers requests still waiting with an error,
// lets replies being written finish, and removes the socket file.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.stop()
	for _, w := range s.waiting {
		w.done <- ctl.Reply{Error: "the master is exiting"}
	}
	for _, w := range s.ending {
		w.done <- ctl.Reply{Error: "the master exited before the rollout ended"}
	}
	for _, w := range s.stops {
		w.done <- ctl.Reply{OK: true}
	}
	s.waiting, s.ending, s.stops = nil, nil, nil
	for c := range s.conns {
		// Unblocks a read between requests; a reply being written still
		// completes (it has a write deadline of its own).
		c.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	err := s.ln.Close()
	s.wg.Wait()
	return errors.Join(err, s.sock.Close())
}

// handle serves one connection: its peer is checked, then each request
// line is answered in turn.
func (s *Server) handle(conn *net.UnixConn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
		conn.Close()
	}()
	cred, err := peerCred(conn)
	if err != nil {
		s.opts.Logger.Warn().Err(err).Msg("control connection refused: no peer credentials")
		return
	}
	log := s.opts.Logger.With().Uint32("uid", cred.Uid).Int32("peer_pid", cred.Pid).Logger()
	if !s.opts.Allow(cred.Uid) {
		log.Warn().Msg("control connection refused: peer's uid may not control this master")
		s.reply(conn, ctl.Reply{Error: fmt.Sprintf("permission denied: uid %d may not control this master (only uid %d and root)", cred.Uid, os.Geteuid())})
		return
	}
	r := bufio.NewReaderSize(conn, s.opts.MaxLine)
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			log.Warn().Int("limit", s.opts.MaxLine).Msg("control request too long; connection closed")
			s.reply(conn, ctl.Reply{Error: fmt.Sprintf("request longer than %d bytes", s.opts.MaxLine)})
			return
		}
		if err != nil {
			return // EOF, or Close
		}
		req, err := ctl.ParseRequest(line)
		if err != nil {
			s.reply(conn, ctl.Reply{Error: "malformed request: " + err.Error()})
			continue
		}
		if !s.reply(conn, s.do(req, cred, log)) {
			return
		}
	}
}

func (s *Server) reply(conn *net.UnixConn, rep ctl.Reply) bool {
	b, err := json.Marshal(rep)
	if err != nil {
		b, _ = json.Marshal(ctl.Reply{Error: err.Error()})
	}
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err = conn.Write(append(b, '\n'))
	return err == nil
}

func (s *Server) do(req ctl.Request, cred *unix.Ucred, log zerolog.Logger) ctl.Reply {
	s.mu.Lock()
	sup := s.sup
	s.seq++
	source := fmt.Sprintf("ctl#%d pid=%d", s.seq, cred.Pid)
	s.mu.Unlock()
	if req.Command != ctl.CommandStatus {
		log.Info().Str("command", req.Command).Str("source", source).Msg("control command")
	}
	switch req.Command {
	case ctl.CommandStatus:
		return s.status(sup)
	case ctl.CommandRestart:
		return s.restart(sup, source)
	case ctl.CommandStop:
		return s.stopCluster(sup, source)
	case ctl.CommandScale:
		if req.Workers < 1 || req.Workers > core.MaxWorkers {
			return ctl.Reply{Error: fmt.Sprintf("scale %d: want 1 to %d workers", req.Workers, core.MaxWorkers)}
		}
		w := s.wait(ctl.CommandScale, source)
		sup.Scale(req.Workers, source)
		return s.await(w)
	case "":
		return ctl.Reply{Error: `no "command" (want status, restart, stop or scale)`}
	}
	return ctl.Reply{Error: fmt.Sprintf("unknown command %q (want status, restart, stop or scale)", req.Command)}
}

// wait registers a request whose answer comes from the cluster's steps.
func (s *Server) wait(command, source string) *waiter {
	w := &waiter{command: command, source: source, done: make(chan ctl.Reply, 1)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		w.done <- ctl.Reply{Error: "the master is exiting"}
		return w
	}
	switch {
	case command == ctl.CommandStop && s.stopped:
		w.done <- ctl.Reply{OK: true}
	case command == ctl.CommandStop:
		s.stops = append(s.stops, w)
	default:
		s.waiting[source] = w
	}
	return w
}

func (s *Server) forget(w *waiter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.waiting[w.source] == w {
		delete(s.waiting, w.source)
	}
}

func (s *Server) await(w *waiter) ctl.Reply { return <-w.done }

func (s *Server) restart(sup Supervisor, source string) ctl.Reply {
	w := s.wait(ctl.CommandRestart, source)
	if err := sup.Restart(s.ctx, source); err != nil {
		s.forget(w)
		select {
		case rep := <-w.done: // Close answered first
			return rep
		default:
		}
		return ctl.Reply{Error: err.Error()}
	}
	return s.await(w)
}

func (s *Server) stopCluster(sup Supervisor, source string) ctl.Reply {
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	v, err := sup.View(ctx)
	cancel()
	w := s.wait(ctl.CommandStop, source)
	// A second stop request kills the workers (as a second SIGTERM does);
	// ctl stop only ever asks for the graceful one, and waits for it.
	if err != nil || !v.Stopping {
		sup.Stop(source)
	}
	return s.await(w)
}

func (s *Server) status(sup Supervisor) ctl.Reply {
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	v, err := sup.View(ctx)
	if err != nil {
		return ctl.Reply{Error: err.Error()}
	}
	s.mu.Lock()
	forks := make(map[int]int, len(s.forks))
	for k, n := range s.forks {
		forks[k] = n
	}
	s.mu.Unlock()
	return ctl.Reply{OK: true, Status: buildStatus(v, s.opts.Name, forks, time.Now())}
}

func buildStatus(v core.View, name string, forks map[int]int, now time.Time) *ctl.Status {
	restarts := func(slot int) int { return max(forks[slot]-1, 0) }
	st := &ctl.Status{
		Name: name, PID: os.Getpid(), Now: now, Target: v.Target, Listening: v.Listening(), Generation: v.Generation,
		Policy: v.Policy, Ready: v.Ready, Stopping: v.Stopping, Workers: []ctl.WorkerStatus{}, Slots: []ctl.SlotStatus{},
	}
	if r := v.Rollout; r != nil {
		st.Rollout = &ctl.RolloutStatus{Generation: r.Generation, Source: r.Source, Started: r.Started, Baseline: r.Baseline}
	}
	for _, w := range v.Workers {
		st.Workers = append(st.Workers, ctl.WorkerStatus{
			ID: int(w.ID), PID: w.PID, Slot: w.Slot, Generation: w.Generation, State: string(w.State),
			Forked: w.ForkedAt, ReadyAt: w.ReadyAt, Uptime: now.Sub(w.ForkedAt).Seconds(),
			Restarts: restarts(w.Slot), Due: w.Due, RestartRequested: w.RestartRequested,
		})
	}
	for _, sl := range v.Slots {
		ss := ctl.SlotStatus{Index: sl.Index, Restarts: restarts(sl.Index), Failures: sl.Failures, Flapping: sl.Flapping}
		if sl.NotBefore.After(now) {
			ss.BackoffUntil = sl.NotBefore
		}
		st.Slots = append(st.Slots, ss)
	}
	return st
}

// Observe follows one step of the cluster (actors.Options.Observe): it
// answers the requests whose outcome the step decided, and counts forks
// per slot for status.
func (s *Server) Observe(now time.Time, in core.Input, out []core.Decision) {
	s.mu.Lock()
	defer s.mu.Unlock()
	wasRunning := s.running
	switch in := in.(type) {
	case core.RestartRequested:
		if w := s.take(in.Source); w != nil {
			if wasRunning || contains[core.RolloutStarted](out) {
				s.ending = append(s.ending, w)
			} else {
				w.done <- ctl.Reply{Error: "restart ignored: " + ignored(out)}
			}
		}
	case core.ScaleTo:
		if w := s.take(in.Source); w != nil {
			target := in.Target
			if why := ignored(out); why != "" {
				w.done <- ctl.Reply{Error: "scale ignored: " + why}
			} else {
				w.done <- ctl.Reply{OK: true, Target: target}
			}
		}
	}
	for _, d := range out {
		switch d := d.(type) {
		case core.Fork:
			s.forks[d.Slot]++
			s.gen = max(s.gen, d.Generation)
		case core.TargetChanged:
			s.target = d.Target
		case core.RolloutStarted:
			s.running = true
			s.gen = max(s.gen, d.Generation)
		case core.RolloutEnded:
			s.running = false
			for _, w := range s.ending {
				w.done <- ctl.Reply{OK: d.Outcome == core.OutcomeComplete,
					Error:   rolloutError(d),
					Rollout: &ctl.RolloutResult{Outcome: d.Outcome, Reason: d.Reason, Generation: s.gen, Source: w.source}}
			}
			s.ending = nil
		case core.Stopped:
			s.stopped = true
			for _, w := range s.stops {
				w.done <- ctl.Reply{OK: true}
			}
			s.stops = nil
		}
	}
}

func (s *Server) take(source string) *waiter {
	w := s.waiting[source]
	delete(s.waiting, source)
	return w
}

func rolloutError(d core.RolloutEnded) string {
	switch d.Outcome {
	case core.OutcomeComplete:
		return ""
	case core.OutcomeCancelled:
		return "rollout cancelled by a stop"
	}
	return "rollout " + d.Outcome + ": " + d.Reason
}

func contains[T core.Decision](out []core.Decision) bool {
	for _, d := range out {
		if _, ok := d.(T); ok {
			return true
		}
	}
	return false
}

// ignored finds why the core ignored a request: its "… ignored" note's
// reason, "" when it did not.
func ignored(out []core.Decision) string {
	for _, d := range out {
		n, ok := d.(core.Note)
		if !ok || !strings.HasSuffix(n.Message, " ignored") {
			continue
		}
		for _, f := range n.Fields {
			if f.Key == "reason" {
				return fmt.Sprint(f.Value)
			}
		}
		return n.Message
	}
	return ""
}

func peerCred(conn *net.UnixConn) (*unix.Ucred, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, credErr
}
