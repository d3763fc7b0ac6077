// Package control serves the master's control socket (the protocol and
// its client are package sockets/control): status, restart, stop and
// scale, each answered once the cluster has decided it; logs; and
// upgrade, answered once the master accepted it, before it executes the
// new binary.
//
// A request's answer comes from the cluster's own step for it: restart and
// scale reach the cluster through Supervisor, which returns the decisions
// of that step. A Refused among them is an error reply with its reason;
// an accepted restart then waits for the RolloutEnded of the rollout that
// carries its generation (RolloutStarted or RolloutCoalesced in its step),
// which Observe sees. Nothing depends on the wording of the cluster's
// log lines (Notes) or on matching requests by their source.
package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/fsm"
	"github.com/dutchmaster/dutchmaster/sockets"
	ctl "github.com/dutchmaster/dutchmaster/sockets/control"
)

// Supervisor is what the server asks of the cluster. Restart and Scale
// return the decisions of the cluster's step that took the request, after
// Observe has seen that step; Restart fails without a step when the master
// refuses it first (the configuration does not load) or exits.
type Supervisor interface {
	View(ctx context.Context) (core.View, error)
	Restart(ctx context.Context, source string) ([]core.Decision, error)
	Stop(source string)
	Scale(ctx context.Context, target int, source string) ([]core.Decision, error)
	// ReplaceWorker replaces one worker (core.ReplaceWorker).
	ReplaceWorker(ctx context.Context, worker int, source string) ([]core.Decision, error)
}

// Upgrader is a Supervisor that can upgrade the master in place; the
// upgrade command asks it, and is refused by a master whose Supervisor is
// not one.
type Upgrader interface {
	// Upgrade checks that the master can execute binary (the absolute
	// path of the new binary; "": the master's own executable) and take
	// over from itself: an error is the refusal, the reply's error as it
	// is. Once accepted, the exec comes after the reply (UpgradeStarted.Exec).
	Upgrade(ctx context.Context, binary string) (UpgradeStarted, error)
}

// UpgradeStarted is an upgrade the master accepted.
type UpgradeStarted struct {
	// Version is the running master's version; Binary the binary it
	// executes (the path resolved).
	Version string
	Binary  string
	// Exec, if set, is called on the connection's goroutine once the
	// reply is written (or could not be), so that the exec does not cut
	// the reply short; it returns only if the upgrade failed (the exec
	// ends the connection). Nil: the master executes when it will.
	Exec func()
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
	// Usage reads what a running worker's processes use, for status (the
	// worker and all it started); nil: not reported.
	Usage func(worker int) Usage
	// Started is when the master started; Command the workers' command
	// line; Listeners the sockets they serve on: reported in status.
	Started   time.Time
	Command   []string
	Listeners []ctl.ListenerStatus
	// MaxConns bounds the connections open at once; more are refused
	// with a reply that says so. Default DefaultMaxConns.
	MaxConns int
	// IdleTimeout closes a connection that sends no request for that
	// long (the wait for a command's answer does not count). Default
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// Logs, if set, is the workers' kept output, for the logs command;
	// nil: the master keeps none, and logs says so.
	Logs Logs
	// Room, if set, is asked before each connection is served: an error
	// refuses it (the master keeps its last descriptors for its forks).
	Room func() error
	// Version is the master's version, reported in status; Upgrades, if
	// set, its in-place upgrades (nil: status reports none).
	Version  string
	Upgrades func() ctl.UpgradeStatus
}

// Logs is the last lines of output each worker wrote (osproc.OutputLog).
type Logs interface {
	// Last returns the last n lines of worker (0: of each), in order,
	// and the number of the newest line; ok is false for a worker whose
	// lines are not kept.
	Last(worker, n int) (lines []ctl.LogLine, newest uint64, ok bool)
	// Since returns the lines of worker (0: all) numbered after after,
	// and a channel closed once more may have come.
	Since(worker int, after uint64) (lines []ctl.LogLine, changed <-chan struct{})
}

// Usage is what a worker's processes use.
type Usage struct {
	Processes int
	RSS       int64 // bytes
	CPU       time.Duration
}

// Defaults of Options.
const (
	DefaultMaxConns    = 16
	DefaultIdleTimeout = 10 * time.Second
)

// Backoff of the accept loop after a failed accept (too many open files,
// a transient kernel shortage): the control socket keeps serving once the
// cause is gone.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// Server is a control socket.
type Server struct {
	opts Options
	ln   net.Listener      // the socket, with the cap and the Room check
	fl   *net.UnixListener // the socket under ln, for Pause's deadline
	sock *sockets.Listener // owns the socket's descriptor
	// file is the socket file to remove at Close, for a socket taken
	// over from the previous image (ListenFD); a bound one removes its own.
	file *socketFile
	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu      sync.Mutex
	conns   map[net.Conn]bool
	closed  bool
	serving bool   // Serve started the accept loop
	paused  *pause // set between Pause and Unpause
	seq     int
	ending  []*waiter // restarts waiting for their rollout to end
	stops   []*waiter // stops waiting for the cluster to stop
	// asking counts the restarts whose step may have been observed but
	// whose decisions their handler has not read yet; while there are
	// any, the rollouts that end are kept in ended, since one of them may
	// be the end such a restart waits for.
	asking int
	ended  []endedRollout
	// events are the progress events of the steps observed while a
	// restart is asking (kept as ended is), numbered by evSeq: the
	// restart's own step is among them.
	events        []seqProgress
	evSeq         int
	pids          map[core.WorkerID]int // each running worker's pid, for progress
	rolloutGen    int                   // the running rollout's generation, the newest restart it carries
	rolloutSource string                // what started the running rollout
	stopped       bool                  // the cluster has stopped
	sup           Supervisor
	slots         slotBook
	lastRollout   *ctl.LastRollout
	cpuSeen       map[int]cpuSample // the last CPU read of each worker, for CPUPercent
}

// slotBook follows the slots through the cluster's steps: what status
// reports per slot beyond the view.
type slotBook struct {
	slotOf   map[core.WorkerID]int
	restarts map[int]int // workers that took the slot over after its first
	used     map[int]bool
	retired  map[int]bool // drained by a scale down: its next fork is a scale up
	lastExit map[int]*ctl.ExitStatus
}

func newSlotBook() slotBook {
	return slotBook{slotOf: map[core.WorkerID]int{}, restarts: map[int]int{}, used: map[int]bool{},
		retired: map[int]bool{}, lastExit: map[int]*ctl.ExitStatus{}}
}

// fork counts a restart as dutchmaster_worker_restarts_total does: a
// rollout's replacement, or a re-fork into a slot whose worker died; not
// the first fork into a slot, nor a scale up that brings a slot back.
func (b *slotBook) fork(d core.Fork) {
	b.slotOf[d.Worker] = d.Slot
	if d.Replacement || (b.used[d.Slot] && !b.retired[d.Slot]) {
		b.restarts[d.Slot]++
	}
	b.used[d.Slot], b.retired[d.Slot] = true, false
}

// stopping notes a worker asked to stop; a scale down retires its slot.
func (b *slotBook) stopping(id core.WorkerID, reason string) {
	if slot, ok := b.slotOf[id]; ok && reason == "scale down" {
		b.retired[slot] = true
	}
}

func (b *slotBook) exited(now time.Time, in core.WorkerExited) {
	slot, ok := b.slotOf[in.Worker]
	if !ok {
		return
	}
	delete(b.slotOf, in.Worker)
	r := in.Reason
	r.Detail = ""
	b.lastExit[slot] = &ctl.ExitStatus{Worker: int(in.Worker), Reason: r.String(), Detail: in.Reason.Detail, At: now}
}

type cpuSample struct {
	cpu time.Duration
	at  time.Time
}

type waiter struct {
	source     string
	progress   bool           // the request asked for progress lines
	queue      []ctl.Progress // progress not yet written, under Server.mu
	notify     chan struct{}  // cap 1: queue has grown
	generation int            // a restart's: its rollout ends at a RolloutEnded of this generation or newer
	done       chan ctl.Reply // buffered: resolving never blocks
}

type seqProgress struct {
	seq int
	p   ctl.Progress
}

// endedRollout is a RolloutEnded with the generation of its rollout.
type endedRollout struct {
	generation int
	ended      core.RolloutEnded
}

// maxPath is the longest socket path the kernel takes (sun_path).
const maxPath = 107

// Listen creates the socket at opts.Path, mode 0600, replacing a stale
// socket file nobody accepts on; a live one (another master) is an error.
// Nothing is served until Serve.
func Listen(opts Options) (*Server, error) {
	opts, err := withDefaults(opts)
	if err != nil {
		return nil, err
	}
	sock, err := sockets.Bind(sockets.Spec{Name: "control", Network: "unix", Address: opts.Path, Mode: 0o600})
	if err != nil {
		var be *sockets.BindError
		if errors.As(err, &be) {
			reason := be.Reason
			if errors.Is(err, unix.EADDRINUSE) {
				reason = "another master runs on this control socket (give each master its own name or control socket)"
			}
			return nil, fmt.Errorf("%s: %s", opts.Path, reason)
		}
		return nil, fmt.Errorf("%s: %w", opts.Path, err)
	}
	s, err := newServer(opts, sock)
	if err != nil {
		sock.Close()
		return nil, err
	}
	return s, nil
}

// ListenFD serves the listening socket fd, inherited over an in-place
// upgrade from the previous image (its ListenerFD), at opts.Path: the
// socket stays bound there, and the connections waiting in its queue
// are served; the socket file is neither removed nor bound again. The
// socket must be a listening unix stream socket bound at opts.Path. The
// descriptor becomes the Server's (Close closes it and removes the file).
// An error closes it, unless it is not a listening socket at all (then it
// is left as it was).
func ListenFD(opts Options, fd int) (*Server, error) {
	opts, err := withDefaults(opts)
	if err != nil {
		return nil, err
	}
	sock, err := sockets.Adopt(fd, sockets.Spec{Name: "control", Network: "unix", Mode: 0o600})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", opts.Path, err)
	}
	fail := func(err error) (*Server, error) {
		sock.Close() // the descriptor only: Adopt's listener never removes the file
		return nil, err
	}
	if got := sock.Addr().String(); got != opts.Path {
		return fail(fmt.Errorf("%s: the inherited control socket (fd %d) is bound at %s", opts.Path, fd, got))
	}
	file, err := statSocketFile(opts.Path)
	if err != nil {
		return fail(err)
	}
	s, err := newServer(opts, sock)
	if err != nil {
		return fail(err)
	}
	s.file = file
	return s, nil
}

// ListenerFD is the number of the listening socket's descriptor, for an
// in-place upgrade: the new image serves it with ListenFD. It stays open
// and owned by the Server; the caller clears its close-on-exec flag just
// before the exec.
func (s *Server) ListenerFD() int { return int(s.sock.File().Fd()) }

func withDefaults(opts Options) (Options, error) {
	if opts.MaxLine <= 0 {
		opts.MaxLine = ctl.DefaultMaxLine
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultMaxConns
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.Allow == nil {
		me := uint32(os.Geteuid())
		opts.Allow = func(uid uint32) bool { return uid == me || uid == 0 }
	}
	if len(opts.Path) > maxPath {
		return opts, fmt.Errorf("%s: the path is %d bytes, more than the %d a unix socket allows", opts.Path, len(opts.Path), maxPath)
	}
	return opts, nil
}

// newServer serves sock, which the Server owns from then on (not if it
// fails).
func newServer(opts Options, sock *sockets.Listener) (*Server, error) {
	nl, err := net.FileListener(sock.File())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", opts.Path, err)
	}
	fl, ok := nl.(*net.UnixListener)
	if !ok {
		nl.Close()
		return nil, fmt.Errorf("%s: not a unix socket", opts.Path)
	}
	ctx, cancel := context.WithCancel(context.Background())
	log := opts.Logger
	ln := sockets.LimitListener(fl, sockets.Limit{
		Max: opts.MaxConns, Room: opts.Room,
		Refuse: func(c net.Conn, why error) {
			writeReply(c, ctl.Reply{Error: "control connection refused: " + why.Error() + "; try again"})
		},
		Refused: func(why error, n int) {
			log.Warn().Err(why).Int("refused", n).Int("max_connections", opts.MaxConns).
				Msg("control connection refused (the count is of refusals since the last such line)")
		},
	})
	return &Server{
		opts: opts, ln: ln, fl: fl, sock: sock, ctx: ctx, stop: cancel,
		conns: map[net.Conn]bool{}, slots: newSlotBook(), cpuSeen: map[int]cpuSample{}, pids: map[core.WorkerID]int{},
	}, nil
}

// Path is the socket file's path.
func (s *Server) Path() string { return s.opts.Path }

// Serve accepts connections on a goroutine of its own until Close.
func (s *Server) Serve(sup Supervisor) {
	s.mu.Lock()
	s.sup, s.serving = sup, true
	s.mu.Unlock()
	s.wg.Add(1)
	go s.accept()
}

// pause is a Pause in force: the accept loop closes stopped once it
// stopped accepting, and waits for resume.
type pause struct {
	resume, stopped chan struct{}
}

// Pause stops accepting connections, for an in-place upgrade: once it
// returns, the connections that come wait in the socket's queue, for
// the new image (or for Unpause, should the exec fail), instead of being
// accepted by an image about to end. Connections already accepted are
// served on.
func (s *Server) Pause() {
	s.mu.Lock()
	if s.paused != nil || s.closed {
		s.mu.Unlock()
		return
	}
	p := &pause{resume: make(chan struct{}), stopped: make(chan struct{})}
	s.paused = p
	serving := s.serving
	s.mu.Unlock()
	s.fl.SetDeadline(time.Unix(1, 0)) // the accept under way returns
	if serving {
		select {
		case <-p.stopped:
		case <-s.ctx.Done():
		}
	}
}

// Unpause accepts connections again after Pause.
func (s *Server) Unpause() {
	s.mu.Lock()
	p := s.paused
	s.paused = nil
	s.mu.Unlock()
	if p != nil {
		s.fl.SetDeadline(time.Time{})
		close(p.resume)
	}
}

// acceptPaused waits, when a Pause is in force, until it ends: paused
// says one was, open is false when the server closed meanwhile.
func (s *Server) acceptPaused() (paused, open bool) {
	s.mu.Lock()
	p := s.paused
	s.mu.Unlock()
	if p == nil {
		return false, true
	}
	select {
	case <-p.stopped:
	default:
		close(p.stopped)
	}
	select {
	case <-p.resume:
		return true, true
	case <-s.ctx.Done():
		return true, false
	}
}

// accept serves connections until Close. A failed accept (too many open
// files, most often) is retried with a growing pause, as net/http does:
// the control socket must outlive a burst of clients.
func (s *Server) accept() {
	defer s.wg.Done()
	var backoff time.Duration
	failures := 0
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if paused, open := s.acceptPaused(); !open {
				return
			} else if paused || errors.As(err, &ne) && ne.Timeout() {
				continue // paused, or a Pause's deadline that an Unpause lifted since
			}
			if failures++; failures == 1 {
				s.opts.Logger.Error().Err(err).Msg("control socket: accept failed; retrying")
			}
			backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax)
			select {
			case <-time.After(backoff):
			case <-s.ctx.Done():
				return
			}
			continue
		}
		if failures > 0 {
			s.opts.Logger.Info().Int("failures", failures).Msg("control socket: accepting again")
			failures, backoff = 0, 0
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
	s.stop() // ends a Pause's wait too
	for _, w := range s.ending {
		w.done <- ctl.Reply{Error: "the master exited before the rollout ended"}
	}
	for _, w := range s.stops {
		w.done <- ctl.Reply{OK: true}
	}
	s.ending, s.stops = nil, nil
	for c := range s.conns {
		// Unblocks a read between requests; a reply being written still
		// completes (it has a write deadline of its own).
		c.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	err := s.ln.Close()
	s.wg.Wait()
	err = errors.Join(err, s.sock.Close())
	if s.file != nil {
		err = errors.Join(err, s.file.remove())
	}
	return err
}

// handle serves one connection: its peer is checked, then each request
// line is answered in turn.
func (s *Server) handle(conn net.Conn) {
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
		if !s.awaitRequest(conn) {
			return
		}
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			log.Warn().Int("limit", s.opts.MaxLine).Msg("control request too long; connection closed")
			s.reply(conn, ctl.Reply{Error: fmt.Sprintf("request longer than %d bytes", s.opts.MaxLine)})
			return
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && s.ctx.Err() == nil {
				log.Debug().Dur("idle", s.opts.IdleTimeout).Msg("control connection idle; closed")
			}
			return // EOF, idle, or Close
		}
		req, err := ctl.ParseRequest(line)
		if err != nil {
			s.reply(conn, ctl.Reply{Error: "malformed request: " + err.Error()})
			continue
		}
		emit := func(p ctl.Progress) error {
			conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
			b, err := json.Marshal(ctl.ProgressLine{Progress: &p})
			if err != nil {
				return err
			}
			_, err = conn.Write(append(b, '\n'))
			return err
		}
		if req.Command == ctl.CommandLogs {
			// The lines stream to the end of the connection (a follow)
			// or of the request: either way the last request on it.
			s.reply(conn, s.logs(conn, r, req))
			return
		}
		rep, then := s.do(req, cred, log, emit)
		ok := s.reply(conn, rep)
		if then != nil {
			then()
		}
		if !ok {
			return
		}
	}
}

// awaitRequest gives the peer IdleTimeout to send its next request; it
// is false once the server is closing. Under the lock, so that Close's
// deadline (now) is not replaced by a later one.
func (s *Server) awaitRequest(conn net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	conn.SetReadDeadline(time.Now().Add(s.opts.IdleTimeout))
	return true
}

func (s *Server) reply(conn net.Conn, rep ctl.Reply) bool {
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return writeReply(conn, rep) == nil
}

func writeReply(conn net.Conn, rep ctl.Reply) error {
	b, err := json.Marshal(rep)
	if err != nil {
		b, _ = json.Marshal(ctl.Reply{Error: err.Error()})
	}
	_, err = conn.Write(append(b, '\n'))
	return err
}

// do answers one request; then, if not nil, is to run once the reply is
// written (an upgrade's exec).
func (s *Server) do(req ctl.Request, cred *unix.Ucred, log zerolog.Logger, emit func(ctl.Progress) error) (rep ctl.Reply, then func()) {
	s.mu.Lock()
	sup := s.sup
	s.seq++
	source := fmt.Sprintf("ctl#%d pid=%d", s.seq, cred.Pid)
	s.mu.Unlock()
	if req.Command != ctl.CommandStatus {
		ev := log.Info().Str("command", req.Command).Str("source", source)
		if req.Binary != "" {
			ev = ev.Str("binary", req.Binary)
		}
		ev.Msg("control command")
	}
	if req.Command == ctl.CommandUpgrade {
		return s.upgrade(sup, req.Binary, log)
	}
	return s.command(sup, req, source, emit), nil
}

func (s *Server) command(sup Supervisor, req ctl.Request, source string, emit func(ctl.Progress) error) ctl.Reply {
	switch req.Command {
	case ctl.CommandStatus:
		return s.status(sup)
	case ctl.CommandRestart:
		if req.Worker < 0 {
			return ctl.Reply{Error: fmt.Sprintf("restart w%d: no such worker", req.Worker)}
		}
		return s.restart(sup, source, req, emit)
	case ctl.CommandStop:
		return s.stopCluster(sup, source)
	case ctl.CommandScale:
		if req.Workers < 1 || req.Workers > core.MaxWorkers {
			return ctl.Reply{Error: fmt.Sprintf("scale %d: want 1 to %d workers", req.Workers, core.MaxWorkers)}
		}
		return s.scale(sup, req.Workers, source)
	case "":
		return ctl.Reply{Error: `no "command" (want status, restart, stop, scale, logs or upgrade)`}
	}
	return ctl.Reply{Error: fmt.Sprintf("unknown command %q (want status, restart, stop, scale, logs or upgrade)", req.Command)}
}

// upgrade asks the Supervisor for an in-place upgrade; once accepted, the
// reply says so and the exec follows it (then).
func (s *Server) upgrade(sup Supervisor, binary string, log zerolog.Logger) (ctl.Reply, func()) {
	up, ok := sup.(Upgrader)
	switch {
	case !ok:
		return ctl.Reply{Error: "upgrade: this master cannot upgrade in place"}, nil
	case binary != "" && !filepath.IsAbs(binary):
		return ctl.Reply{Error: fmt.Sprintf("upgrade: binary %q: want an absolute path", binary)}, nil
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ctl.Reply{Error: "the master is exiting"}, nil
	}
	started, err := up.Upgrade(s.ctx, binary)
	if err != nil {
		log.Warn().Err(err).Msg("upgrade refused")
		return ctl.Reply{Error: err.Error()}, nil
	}
	return ctl.Reply{OK: true, Upgrade: &ctl.UpgradeAccepted{PID: os.Getpid(), Version: started.Version, Binary: started.Binary}}, started.Exec
}

func (s *Server) restart(sup Supervisor, source string, req ctl.Request, emit func(ctl.Progress) error) ctl.Reply {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ctl.Reply{Error: "the master is exiting"}
	}
	s.asking++
	from := s.evSeq
	s.mu.Unlock()
	var out []core.Decision
	var err error
	what := "restart"
	if req.Worker > 0 {
		what = fmt.Sprintf("restart w%d", req.Worker)
		out, err = sup.ReplaceWorker(s.ctx, req.Worker, source)
	} else {
		out, err = sup.Restart(s.ctx, source)
	}
	w, rep := s.restarted(source, what, out, err, req.Progress, from)
	switch {
	case w == nil: // refused, or its rollout already ended
	case req.Progress:
		rep = s.follow(sup, w, emit)
	default:
		rep = <-w.done
	}
	// Also when the rollout ended before this handler read the
	// restart's decisions (a loaded machine): its reply is the same.
	if rep.Rollout != nil {
		rep.Rollout.Serving = servingPIDs(s.ctx, sup)
	}
	return rep
}

// logs writes the kept lines a logs request asks for, then, to follow,
// each new line until the peer closes the connection (it sends nothing
// more: a read that ends says it is gone) or the server closes. The
// lines are read from the log, never queued per connection: a follower
// that cannot keep up misses the lines the log dropped meanwhile, and
// the workers never wait for it.
func (s *Server) logs(conn net.Conn, r *bufio.Reader, req ctl.Request) ctl.Reply {
	if s.opts.Logs == nil {
		return ctl.Reply{Error: "this master keeps no worker output (it runs with --log-tail 0)"}
	}
	if req.Worker < 0 || req.Lines < 0 || req.Lines > ctl.MaxLogLines {
		return ctl.Reply{Error: fmt.Sprintf("logs: want a worker of ctl status and 0 to %d lines", ctl.MaxLogLines)}
	}
	lines, newest, ok := s.opts.Logs.Last(req.Worker, req.Lines)
	if !ok {
		return ctl.Reply{Error: fmt.Sprintf("logs w%d: no such worker, or it exited too long ago for its lines to be kept", req.Worker)}
	}
	send := func(lines []ctl.LogLine) error {
		if len(lines) == 0 {
			return nil
		}
		var b []byte
		for i := range lines {
			j, err := json.Marshal(ctl.LogLineMessage{Log: &lines[i]})
			if err != nil {
				return err
			}
			b = append(append(b, j...), '\n')
		}
		conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_, err := conn.Write(b)
		return err
	}
	if err := send(lines); err != nil || !req.Follow {
		return ctl.Reply{OK: err == nil}
	}
	gone := make(chan struct{})
	conn.SetReadDeadline(time.Time{})
	go func() {
		defer close(gone)
		r.ReadByte() // nothing is to come: data, EOF or Close's deadline all end the follow
	}()
	defer func() {
		conn.SetReadDeadline(time.Now())
		<-gone
	}()
	for {
		lines, changed := s.opts.Logs.Since(req.Worker, newest)
		if len(lines) > 0 {
			newest = lines[len(lines)-1].Seq
		}
		if err := send(lines); err != nil {
			return ctl.Reply{}
		}
		select {
		case <-changed:
		case <-gone:
			if s.ctx.Err() != nil {
				return ctl.Reply{OK: true} // the server closes: Close's deadline
			}
			return ctl.Reply{}
		case <-s.ctx.Done():
			return ctl.Reply{OK: true}
		}
	}
}

// follow writes the progress of a restart's rollout until it ends, and
// returns its reply. Replaced counts the rollout's replacements that
// listen; Total is the count of workers due as of the restart's step.
func (s *Server) follow(sup Supervisor, w *waiter, emit func(ctl.Progress) error) ctl.Reply {
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	v, err := sup.View(ctx)
	cancel()
	start := ctl.Progress{Event: ctl.ProgressStarted, Generation: w.generation}
	if err == nil {
		for _, wk := range v.Workers {
			if wk.Due {
				start.Total++
				if wk.PID != 0 {
					start.PIDs = append(start.PIDs, wk.PID)
				}
			}
		}
	}
	total, replaced := start.Total, 0
	ours := map[int]bool{} // replacements forked since the restart
	failed := emit(start) != nil
	for {
		var rep ctl.Reply
		var done bool
		select {
		case rep = <-w.done:
			done = true
		case <-w.notify:
		}
		s.mu.Lock()
		queue := w.queue
		w.queue = nil
		s.mu.Unlock()
		for _, p := range queue {
			switch {
			case p.Event == ctl.ProgressFork && p.Replacement:
				ours[p.Worker] = true
			case p.Event == ctl.ProgressListening && ours[p.Worker]:
				replaced++
				total = max(total, replaced)
			}
			p.Replaced, p.Total = replaced, total
			if !failed {
				failed = emit(p) != nil
			}
		}
		if done {
			return rep
		}
	}
}

// servingPIDs are the pids of the listening workers.
func servingPIDs(ctx context.Context, sup Supervisor) []int {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := sup.View(ctx)
	if err != nil {
		return nil
	}
	var pids []int
	for _, w := range v.Workers {
		if w.State == fsm.Listening && w.PID != 0 {
			pids = append(pids, w.PID)
		}
	}
	return pids
}

// restarted reads the decisions of a restart's step: the reply, or the
// waiter that Observe answers when the restart's rollout ends.
func (s *Server) restarted(source, what string, out []core.Decision, err error, progress bool, from int) (*waiter, ctl.Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ended, events := s.ended, s.events
	if s.asking--; s.asking == 0 {
		s.ended, s.events = nil, nil
	}
	if err != nil {
		return nil, ctl.Reply{Error: err.Error()}
	}
	if r, ok := refusal(out); ok {
		if what != "restart" {
			return nil, ctl.Reply{Error: what + " refused: " + r.Reason}
		}
		return nil, ctl.Reply{Error: "restart ignored: " + r.Reason}
	}
	gen, ok := restartGeneration(out)
	if !ok {
		return nil, ctl.Reply{Error: "restart: the cluster began no rollout"}
	}
	// The rollout may have ended already, in the restart's own step or
	// in one the cluster took before this handler read the decisions.
	for _, e := range ended {
		if e.generation >= gen {
			return nil, rolloutReply(e, source)
		}
	}
	if s.closed {
		return nil, ctl.Reply{Error: "the master exited before the rollout ended"}
	}
	w := &waiter{source: source, generation: gen, done: make(chan ctl.Reply, 1), progress: progress, notify: make(chan struct{}, 1)}
	if progress {
		for _, e := range events {
			if e.seq > from {
				w.queue = append(w.queue, e.p)
			}
		}
	}
	s.ending = append(s.ending, w)
	return w, ctl.Reply{}
}

func (s *Server) scale(sup Supervisor, workers int, source string) ctl.Reply {
	out, err := sup.Scale(s.ctx, workers, source)
	if err != nil {
		return ctl.Reply{Error: err.Error()}
	}
	if r, ok := refusal(out); ok {
		return ctl.Reply{Error: "scale ignored: " + r.Reason}
	}
	return ctl.Reply{OK: true, Target: workers}
}

func (s *Server) stopCluster(sup Supervisor, source string) ctl.Reply {
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	v, err := sup.View(ctx)
	cancel()
	w := &waiter{source: source, done: make(chan ctl.Reply, 1)}
	s.mu.Lock()
	switch {
	case s.closed:
		w.done <- ctl.Reply{Error: "the master is exiting"}
	case s.stopped:
		w.done <- ctl.Reply{OK: true}
	default:
		s.stops = append(s.stops, w)
	}
	s.mu.Unlock()
	// A second stop request kills the workers (as a second SIGTERM does);
	// ctl stop only ever asks for the graceful one, and waits for it.
	if err != nil || !v.Stopping {
		sup.Stop(source)
	}
	return <-w.done
}

func (s *Server) status(sup Supervisor) ctl.Reply {
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	v, err := sup.View(ctx)
	if err != nil {
		return ctl.Reply{Error: err.Error()}
	}
	now := time.Now()
	s.mu.Lock()
	st := buildStatus(v, s.opts.Name, &s.slots, now)
	if s.lastRollout != nil {
		last := *s.lastRollout
		st.LastRollout = &last
	}
	s.mu.Unlock()
	if !s.opts.Started.IsZero() {
		st.Started, st.Uptime = s.opts.Started, now.Sub(s.opts.Started).Seconds()
	}
	st.Command, st.Listeners, st.Version = s.opts.Command, s.opts.Listeners, s.opts.Version
	if s.opts.Upgrades != nil {
		u := s.opts.Upgrades()
		st.Upgrades = &u
	}
	if st.Listeners == nil {
		st.Listeners = []ctl.ListenerStatus{}
	}
	if s.opts.Usage != nil {
		s.usage(st, now)
	}
	return ctl.Reply{OK: true, Status: st}
}

// usage fills in what each running worker's processes use. The CPU share
// is over the time since this worker's previous read (since its fork for
// the first): a rate needs two reads, and status is the only reader.
func (s *Server) usage(st *ctl.Status, now time.Time) {
	seen := make(map[int]bool, len(st.Workers))
	for i, w := range st.Workers {
		if w.PID == 0 {
			continue
		}
		u := s.opts.Usage(w.ID)
		ws := &st.Workers[i]
		ws.Processes, ws.RSS, ws.CPU = u.Processes, u.RSS, u.CPU.Seconds()
		prev := cpuSample{at: w.Forked}
		s.mu.Lock()
		if p, ok := s.cpuSeen[w.ID]; ok {
			prev = p
		}
		s.cpuSeen[w.ID] = cpuSample{cpu: u.CPU, at: now}
		s.mu.Unlock()
		if wall := now.Sub(prev.at); wall > 0 && u.CPU >= prev.cpu {
			ws.CPUPercent = 100 * float64(u.CPU-prev.cpu) / float64(wall)
		}
		seen[w.ID] = true
	}
	s.mu.Lock()
	for id := range s.cpuSeen {
		if !seen[id] {
			delete(s.cpuSeen, id)
		}
	}
	s.mu.Unlock()
}

func buildStatus(v core.View, name string, slots *slotBook, now time.Time) *ctl.Status {
	st := &ctl.Status{
		Name: name, PID: os.Getpid(), Now: now, Target: v.Target, Listening: v.Listening(), Generation: v.Generation,
		Policy: v.Policy, Ready: v.Ready, Stopping: v.Stopping, Workers: []ctl.WorkerStatus{}, Slots: []ctl.SlotStatus{},
		Serving: []int{},
	}
	if r := v.Rollout; r != nil {
		st.Rollout = &ctl.RolloutStatus{Generation: r.Generation, Source: r.Source, Started: r.Started, Baseline: r.Baseline}
	}
	for _, w := range v.Workers {
		ws := ctl.WorkerStatus{
			ID: int(w.ID), PID: w.PID, Slot: w.Slot, Generation: w.Generation, State: string(w.State),
			Forked: w.ForkedAt, ReadyAt: w.ReadyAt, Uptime: now.Sub(w.ForkedAt).Seconds(),
			Restarts: slots.restarts[w.Slot], Due: w.Due, RestartRequested: w.RestartRequested,
			Hung: w.Hung, MaxRequests: w.MaxRequests,
		}
		if w.Recycling {
			ws.Recycling = w.RecycleCause
		}
		if !w.LastHeartbeat.IsZero() {
			age := max(now.Sub(w.LastHeartbeat), 0).Seconds()
			ws.HeartbeatAge = &age
		}
		st.Workers = append(st.Workers, ws)
		if w.Serves() && !slices.Contains(st.Serving, w.Generation) {
			st.Serving = append(st.Serving, w.Generation)
		}
	}
	slices.Sort(st.Serving)
	for _, sl := range v.Slots {
		ss := ctl.SlotStatus{Index: sl.Index, Restarts: slots.restarts[sl.Index], Failures: sl.Failures, Flapping: sl.Flapping}
		if sl.NotBefore.After(now) {
			ss.BackoffUntil = sl.NotBefore
		}
		if e := slots.lastExit[sl.Index]; e != nil {
			last := *e
			ss.LastExit = &last
		}
		st.Slots = append(st.Slots, ss)
	}
	return st
}

// Observe follows one step of the cluster (actors.Options.Observe): it
// answers the restarts whose rollout ended and the stops once the cluster
// stopped, and counts forks per slot for status.
func (s *Server) Observe(now time.Time, in core.Input, out []core.Decision) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if in, ok := in.(core.WorkerExited); ok {
		s.slots.exited(now, in)
	}
	s.progress(in, out)
	for _, d := range out {
		switch d := d.(type) {
		case core.Fork:
			s.slots.fork(d)
		case core.Drain:
			s.slots.stopping(d.Worker, d.Reason)
		case core.Kill:
			s.slots.stopping(d.Worker, d.Reason)
		case core.RolloutStarted:
			s.rolloutGen, s.rolloutSource = d.Generation, d.Source
		case core.RolloutCoalesced:
			s.rolloutGen = d.Generation
		case core.RolloutEnded:
			e := endedRollout{generation: s.rolloutGen, ended: d}
			s.lastRollout = &ctl.LastRollout{Outcome: d.Outcome, Reason: d.Reason, Generation: s.rolloutGen, Source: s.rolloutSource, Ended: now}
			if s.asking > 0 {
				s.ended = append(s.ended, e)
			}
			waiting := s.ending[:0]
			for _, w := range s.ending {
				if w.generation <= e.generation {
					w.done <- rolloutReply(e, w.source)
				} else {
					waiting = append(waiting, w)
				}
			}
			s.ending = waiting
		case core.Stopped:
			s.stopped = true
			for _, w := range s.stops {
				w.done <- ctl.Reply{OK: true}
			}
			s.stops = nil
		}
	}
}

// progress passes the steps a rollout is made of to the restarts that
// follow it, from the step's typed input and decisions. Under s.mu.
func (s *Server) progress(in core.Input, out []core.Decision) {
	var ps []ctl.Progress
	switch in := in.(type) {
	case core.WorkerSpawned:
		s.pids[in.Worker] = in.PID
		ps = append(ps, ctl.Progress{Event: ctl.ProgressSpawned, Worker: int(in.Worker), PID: in.PID})
	case core.WorkerListening:
		ps = append(ps, ctl.Progress{Event: ctl.ProgressListening, Worker: int(in.Worker), PID: s.pids[in.Worker]})
	case core.WorkerExited:
		r := in.Reason
		r.Detail = ""
		ps = append(ps, ctl.Progress{Event: ctl.ProgressExit, Worker: int(in.Worker), PID: s.pids[in.Worker], Reason: r.String()})
		delete(s.pids, in.Worker)
	}
	for _, d := range out {
		switch d := d.(type) {
		case core.Fork:
			ps = append(ps, ctl.Progress{Event: ctl.ProgressFork, Worker: int(d.Worker), Generation: d.Generation, Replacement: d.Replacement})
		case core.Drain:
			ps = append(ps, ctl.Progress{Event: ctl.ProgressDrain, Worker: int(d.Worker), PID: s.pids[d.Worker], Reason: d.Reason})
		case core.Kill:
			ps = append(ps, ctl.Progress{Event: ctl.ProgressDrain, Worker: int(d.Worker), PID: s.pids[d.Worker], Reason: "killed: " + d.Reason})
		}
	}
	if len(ps) == 0 {
		return
	}
	for _, p := range ps {
		s.evSeq++
		if s.asking > 0 {
			s.events = append(s.events, seqProgress{s.evSeq, p})
		}
	}
	for _, w := range s.ending {
		if !w.progress {
			continue
		}
		w.queue = append(w.queue, ps...)
		select {
		case w.notify <- struct{}{}:
		default:
		}
	}
}

// rolloutReply answers a restart whose rollout ended.
func rolloutReply(e endedRollout, source string) ctl.Reply {
	d := e.ended
	return ctl.Reply{OK: d.Outcome == core.OutcomeComplete, Error: rolloutError(d),
		Rollout: &ctl.RolloutResult{Outcome: d.Outcome, Reason: d.Reason, Generation: e.generation, Source: source}}
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

// refusal finds the cluster's refusal of the input of a step.
func refusal(out []core.Decision) (core.Refused, bool) {
	for _, d := range out {
		if r, ok := d.(core.Refused); ok {
			return r, true
		}
	}
	return core.Refused{}, false
}

// restartGeneration is the generation an accepted restart's step rolls
// to: that of the rollout it began or joined. The restart is handled
// before anything else in its step, so the first such fact is its own.
func restartGeneration(out []core.Decision) (int, bool) {
	for _, d := range out {
		switch d := d.(type) {
		case core.RolloutStarted:
			return d.Generation, true
		case core.RolloutCoalesced:
			return d.Generation, true
		}
	}
	return 0, false
}

func peerCred(conn net.Conn) (*unix.Ucred, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("not a socket")
	}
	raw, err := sc.SyscallConn()
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
