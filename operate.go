package dutchmaster

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/actors/observers/control"
	"github.com/dutchmaster/dutchmaster/actors/observers/journal"
	"github.com/dutchmaster/dutchmaster/actors/observers/metrics"
	"github.com/dutchmaster/dutchmaster/actors/observers/sdnotify"
	"github.com/dutchmaster/dutchmaster/actors/osproc"
	"github.com/dutchmaster/dutchmaster/sockets"
	ctlsock "github.com/dutchmaster/dutchmaster/sockets/control"
	"github.com/dutchmaster/dutchmaster/sockets/systemd"
)

// Observer sees every step of the cluster: an input and the decisions it
// produced, on the cluster actor's goroutine, before they are carried
// out. It must return quickly and must not call back into the cluster.
type Observer = func(now time.Time, in core.Input, out []core.Decision)

// operations are the ways an operator reaches a running master besides
// its signals: the control socket, metrics and health endpoints, the
// journal, systemd's notify socket and the reaping of adopted orphans.
// Each feeds on the cluster's steps through one Observe fan-out.
type operations struct {
	log     zerolog.Logger
	control *control.Server
	metrics *metrics.Collector
	httpLn  net.Listener
	// metricsFD is the metrics listener's descriptor, for an upgrade.
	metricsFD int
	http      *http.Server
	journal   *journal.Recorder
	notifier  *sdnotify.Notifier
	reaper    *osproc.Reaper
	guard     *clientGuard
	cluster   *actors.Cluster // set by serve, before anything asks for the view

	observers []Observer
	stopBg    context.CancelFunc
	bg        sync.WaitGroup
}

// openOperations opens what can fail on bad options (sockets, files)
// before any worker starts; errors are *ConfigError.
// workers and listeners are what the control socket's status reports
// beyond the cluster's view.
//
// The new image of an upgrade (m.handed set) takes over the control and
// metrics sockets and continues the journal instead.
func openOperations(opts Options, p plan, log zerolog.Logger, start time.Time, workers *osproc.Runtime, listeners []*sockets.Listener, tail *osproc.OutputLog, m *master) (ops *operations, err error) {
	ops = &operations{log: log, guard: newClientGuard(p.workers(), p.core.MaxSurge, workers.SlotSockets()), metricsFD: -1}
	var handed *handedOps
	if m.handed != nil {
		handed = &m.handed.Ops
	}
	defer func() {
		if err != nil {
			ops.close()
		}
	}()
	if opts.ControlSocket != "" {
		// The default directory is created, and refused if another user
		// could have planted it (an explicit path's directory is the
		// operator's).
		copts := control.Options{
			Path: opts.ControlSocket, Name: opts.Name, Logger: log, Usage: workerUsage(workers),
			Started: start, Command: opts.Command, Listeners: listenerStatus(listeners),
			MaxConns: maxControlConns, IdleTimeout: idleTimeout, Room: ops.guard.room,
			Version: m.version(), Upgrades: m.controlUpgrades,
		}
		if tail != nil {
			copts.Logs = tail
		}
		var listenErr error
		switch {
		case handed != nil && handed.Control >= 0:
			ops.control, listenErr = control.ListenFD(copts, handed.Control)
		case handed != nil:
			listenErr = errors.New("the previous master had none")
		default:
			if listenErr = ctlsock.PrepareDir(opts.ControlSocket); listenErr == nil {
				ops.control, listenErr = control.Listen(copts)
			}
		}
		switch {
		case listenErr == nil:
			ops.observers = append(ops.observers, ops.control.Observe)
			if handed == nil {
				log.Info().Str("path", opts.ControlSocket).Msg("control socket listening")
			}
		case opts.ControlSocketOptional:
			// Only the binary's default path is optional: the hint is in its
			// terms.
			log.Warn().Err(listenErr).Msg("running without a control socket (give this master a --name or a --control path of its own)")
		default:
			return ops, fieldErr("ControlSocket", "Options.ControlSocket %w", listenErr)
		}
	}
	if opts.MetricsAddress != "" {
		if handed != nil && handed.Metrics >= 0 {
			ops.httpLn, err = inheritedListener(handed.Metrics, "metrics")
		} else {
			ops.httpLn, err = net.Listen("tcp", opts.MetricsAddress)
		}
		if err != nil {
			return ops, fieldErr("MetricsAddress", "Options.MetricsAddress %s: %v", opts.MetricsAddress, errors.Unwrap(err))
		}
		ops.metricsFD = -1
		if sc, ok := ops.httpLn.(syscall.Conn); ok {
			ops.metricsFD = sockets.FD(sc)
		}
		ops.httpLn = ops.guard.listener(ops.httpLn, "metrics", maxMetricsConns, log, nil)
		mo := metrics.Options{Name: opts.Name, View: ops.clusterView, LogDropped: opts.LogDropped, Logger: log}
		if workers != nil { // only Node.js cluster workers are asked
			mo.NodeWorkers = workers.NodeWorkers
		}
		ops.metrics = metrics.New(mo)
		ops.observers = append(ops.observers, ops.metrics.Observe)
		if handed == nil {
			log.Info().Str("address", ops.httpLn.Addr().String()).Msg("metrics listening")
		}
	}
	if opts.Record != "" {
		h := journal.Header{Name: opts.Name, PID: os.Getpid(), Command: opts.Command, Ready: p.ready.String(), Drain: string(p.drain)}
		if handed != nil && handed.Journal != nil {
			ops.journal, err = journal.Continue(*handed.Journal, time.Now())
		} else {
			ops.journal, err = journal.Create(opts.Record, h, p.core, start)
		}
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return ops, fieldErr("Record", "Options.Record %s: %v", opts.Record, err)
		}
		ops.journal.OnError = func(err error) {
			log.Error().Err(err).Str("path", opts.Record).Msg("journal recording stopped")
		}
		ops.observers = append(ops.observers, ops.journal.Observe)
		log.Info().Str("path", opts.Record).Msg("recording the journal")
	}
	if ops.notifier = sdnotify.NewNotifier(log); ops.notifier != nil {
		ops.observers = append(ops.observers, ops.notifier.Observe)
	}
	if opts.Subreaper {
		if err := osproc.SetSubreaper(); err != nil {
			return ops, err
		}
	}
	if opts.Subreaper || os.Getpid() == 1 {
		ops.reaper = osproc.StartReaper(log)
		ops.observers = append(ops.observers, ops.reaper.Observe)
	}
	ops.observers = append(ops.observers, ops.guard.observe)
	if opts.Observe != nil {
		ops.observers = append(ops.observers, opts.Observe)
	}
	return ops, nil
}

// workerUsage reads what a worker's processes use, for status.
func workerUsage(rt *osproc.Runtime) func(worker int) control.Usage {
	if rt == nil {
		return nil
	}
	return func(id int) control.Usage {
		u := rt.Usage(core.WorkerID(id))
		return control.Usage{Processes: u.Processes, RSS: u.RSS, CPU: u.CPU}
	}
}

// listenerStatus describes the listeners for status.
func listenerStatus(ls []*sockets.Listener) []ctlsock.ListenerStatus {
	out := make([]ctlsock.ListenerStatus, 0, len(ls))
	for _, l := range ls {
		out = append(out, ctlsock.ListenerStatus{Name: l.Name(), Address: l.Addr().String(), Spec: l.String()})
	}
	return out
}

// observe is actors.Options.Observe: every observer, in a fixed order
// (the journal first, so it has the step even if a later one panics).
func (ops *operations) observe(now time.Time, in core.Input, out []core.Decision) {
	for _, o := range ops.observers {
		o(now, in, out)
	}
}

// serve starts serving once the cluster runs.
func (ops *operations) serve(c *actors.Cluster, restarts chan<- restartRequest, upgrades chan<- upgradeRequest) {
	ops.cluster = c
	ctx, cancel := context.WithCancel(context.Background())
	ops.stopBg = cancel
	if ops.control != nil {
		ops.control.Serve(controlPort{cluster: c, restarts: restarts, upgrades: upgrades})
	}
	if ops.httpLn != nil {
		ops.http = &http.Server{
			Handler:           ops.metrics.Handler(),
			ReadHeaderTimeout: metricsReadTimeout, ReadTimeout: metricsReadTimeout,
			WriteTimeout: metricsWriteTimeout, IdleTimeout: idleTimeout,
			ErrorLog: errorLog(ops.log, "metrics"),
		}
		ops.bg.Add(1)
		go func() {
			defer ops.bg.Done()
			if err := ops.http.Serve(ops.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				ops.log.Error().Err(err).Msg("metrics server failed")
			}
		}()
	}
	if ops.notifier != nil {
		ops.bg.Add(1)
		go func() {
			defer ops.bg.Done()
			ops.notifier.Watchdog(ctx, func(ctx context.Context) error { _, err := c.View(ctx); return err })
		}()
	}
}

// clusterView is the metrics' view of the cluster: nothing serves
// metrics before serve sets the cluster.
func (ops *operations) clusterView(ctx context.Context) (core.View, error) {
	if ops.cluster == nil {
		return core.View{}, errors.New("the cluster is not running yet")
	}
	return ops.cluster.View(ctx)
}

// close ends everything, in an order that lets each finish its work: no
// new requests, answers to waiting ones, the last notifications and
// journal lines flushed.
func (ops *operations) close() {
	if ops.stopBg != nil {
		ops.stopBg()
	}
	if ops.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if ops.http.Shutdown(ctx) != nil {
			ops.http.Close()
		}
		cancel()
	} else if ops.httpLn != nil {
		ops.httpLn.Close()
	}
	ops.bg.Wait()
	if ops.control != nil {
		ops.control.Close()
	}
	if ops.notifier != nil {
		ops.notifier.Close()
	}
	if ops.journal != nil {
		if err := ops.journal.Close(); err != nil {
			ops.log.Error().Err(err).Msg("journal incomplete")
		}
	}
	if ops.reaper != nil {
		ops.reaper.Close()
	}
}

// restartRequest is a restart asked for on the control socket, carried
// out by Run's loop, which owns the configuration reload. The reply is the
// decisions of the cluster's step that took the restart, or why it was
// never asked for (the configuration does not load).
type restartRequest struct {
	source string
	reply  chan restartReply
}

type restartReply struct {
	decisions []core.Decision
	err       error
}

// controlPort is the cluster as the control socket sees it.
type controlPort struct {
	cluster  *actors.Cluster
	restarts chan<- restartRequest
	upgrades chan<- upgradeRequest
}

func (p controlPort) View(ctx context.Context) (core.View, error) { return p.cluster.View(ctx) }
func (p controlPort) Stop(source string)                          { p.cluster.Stop(source) }
func (p controlPort) Scale(ctx context.Context, n int, source string) ([]core.Decision, error) {
	return p.cluster.Ask(ctx, core.ScaleTo{Target: n, Source: source})
}

func (p controlPort) ReplaceWorker(ctx context.Context, worker int, source string) ([]core.Decision, error) {
	return p.cluster.Ask(ctx, core.ReplaceWorker{Worker: core.WorkerID(worker), Source: source})
}

func (p controlPort) Restart(ctx context.Context, source string) ([]core.Decision, error) {
	req := restartRequest{source: source, reply: make(chan restartReply, 1)}
	select {
	case p.restarts <- req:
	case <-ctx.Done():
		return nil, errors.New("the master is exiting")
	}
	select {
	case rep := <-req.reply:
		return rep.decisions, rep.err
	case <-ctx.Done():
		return nil, errors.New("the master is exiting")
	}
}

// Upgrade asks Run's loop for an upgrade to binary ("" for the binary
// the master was started from). Accepted, the loop executes the new
// binary once the answer is written (Exec); Exec returns only if that
// failed.
func (p controlPort) Upgrade(ctx context.Context, binary string) (control.UpgradeStarted, error) {
	req := upgradeRequest{binary: binary, reply: make(chan upgradeReply, 1)}
	select {
	case p.upgrades <- req:
	case <-ctx.Done():
		return control.UpgradeStarted{}, errors.New("the master is exiting")
	}
	select {
	case rep := <-req.reply:
		if rep.err != nil {
			return control.UpgradeStarted{}, rep.err
		}
		return control.UpgradeStarted{Binary: rep.binary, Version: rep.from, Exec: func() {
			close(rep.proceed)
			<-rep.failed
		}}, nil
	case <-ctx.Done():
		return control.UpgradeStarted{}, errors.New("the master is exiting")
	}
}

// inheritedListener is the listening socket fd an old image handed over.
func inheritedListener(fd int, name string) (net.Listener, error) {
	f := os.NewFile(uintptr(fd), name)
	defer f.Close() // net.FileListener keeps its own duplicate
	return net.FileListener(f)
}

// handedOps are the operations' descriptors an upgrade hands over.
type handedOps struct {
	Control int `json:"control"` // -1: none
	Metrics int `json:"metrics"` // -1: none
	// Journal is the recording's state, nil when there is none.
	Journal *journal.State `json:"journal,omitempty"`
}

// handOver gives the operations' state and descriptors to the new image;
// the journal records the upgrade (rec) at the core's handover instant.
func (ops *operations) handOver(at time.Time, rec journal.UpgradeRecord) (handedOps, []int, error) {
	h := handedOps{Control: -1, Metrics: -1}
	var keep []int
	if ops.control != nil {
		h.Control = ops.control.ListenerFD()
		keep = append(keep, h.Control)
	}
	if ops.metricsFD >= 0 {
		h.Metrics = ops.metricsFD
		keep = append(keep, h.Metrics)
	}
	if ops.journal != nil {
		j, err := ops.journal.Upgrade(at, rec)
		if err != nil {
			return h, nil, fmt.Errorf("the journal: %w", err)
		}
		h.Journal = &j
		if j.FD >= 0 {
			keep = append(keep, j.FD)
		}
	}
	return h, keep, nil
}

// controlUpgrades is the status's word on upgrades.
func (m *master) controlUpgrades() ctlsock.UpgradeStatus {
	u := m.upgradeStatus()
	return ctlsock.UpgradeStatus{Count: u.Count, Last: u.Last, Failed: u.Failed, LastError: u.LastError}
}

// openListeners takes the listeners systemd passed (socket activation)
// and binds the others. With no Listen spec at all, every socket systemd
// passed is used.
func openListeners(specs []sockets.Spec, log zerolog.Logger) ([]*sockets.Listener, map[*sockets.Listener]bool, error) {
	activated, err := systemd.ListenFDs()
	if err != nil {
		return nil, nil, err
	}
	if len(activated) == 0 {
		ls, err := sockets.BindAll(specs)
		return ls, nil, err
	}
	ls, unused, err := systemd.Match(specs, activated)
	if err != nil {
		for _, s := range activated {
			unix.Close(s.FD)
		}
		return nil, nil, err
	}
	for _, s := range unused {
		log.Warn().Int("fd", s.FD).Str("fdname", s.Name).Msg("socket passed by systemd matches no --listen name (set FileDescriptorName=); closed")
		unix.Close(s.FD)
	}
	adopted := map[*sockets.Listener]bool{}
	for i, l := range ls {
		if l != nil {
			adopted[l] = true
			continue
		}
		if ls[i], err = sockets.Bind(specs[i]); err != nil {
			for _, done := range ls {
				if done != nil {
					done.Close()
				}
			}
			return nil, nil, err
		}
	}
	return ls, adopted, nil
}
