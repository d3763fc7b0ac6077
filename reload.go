package dutchmaster

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
)

// reloadTimeout bounds a re-read of the configuration (Options.Reload and
// the checks of what it returns). A read not done by then refuses its
// restarts; so does every restart asked for until it returns, so that a
// read that never returns (a file on a dead network mount) holds one
// goroutine, not one per restart.
var reloadTimeout = 10 * time.Second

// reloading is the re-read of the configuration under way, if any. It
// runs off Run's loop: a read that blocks must not keep a stop, a scale
// or a status waiting.
type reloading struct {
	done    chan reloadResult // of the read under way; nil when none
	timeout <-chan time.Time  // nil when none is under way, or once it is given up
	timer   *time.Timer
	waiting []pendingRestart // the restarts that take the read under way
	queued  []pendingRestart // asked for since it began: they take the next read
}

// pendingRestart is a restart waiting for the configuration: asked for by
// the restart signal (in) or on the control socket (req).
type pendingRestart struct {
	in  core.Input
	req *restartRequest
}

type reloadResult struct {
	opts Options
	plan plan
	err  error
}

// requestRestart re-reads the configuration before the restart p, or has
// p take the next read when one is already under way: a read begun before
// p was asked for may have read the file before it changed.
func (m *master) requestRestart(p pendingRestart) {
	r := &m.reloading
	switch {
	case r.done == nil:
		m.startReload([]pendingRestart{p})
	case r.timeout == nil:
		err := fmt.Errorf("an earlier read of the configuration has not returned after %s", reloadTimeout)
		m.opts.Logger.Error().Err(err).Msg("restart refused: the configuration does not load; the workers are left as they are")
		m.finish(p, err)
	case p.req == nil && slices.ContainsFunc(r.queued, func(q pendingRestart) bool { return q.req == nil && q.in == p.in }):
		// The same signal again: one restart after the next read is what
		// it asks for.
	default:
		r.queued = append(r.queued, p)
	}
}

func (m *master) startReload(waiting []pendingRestart) {
	r := &m.reloading
	done := make(chan reloadResult, 1) // the read never waits for the loop
	reload := m.opts.Reload
	go func() {
		next, err := reload()
		var p plan
		if err == nil {
			p, err = prepare(next)
		}
		done <- reloadResult{opts: next, plan: p, err: err}
	}()
	r.done, r.waiting = done, waiting
	r.timer = time.NewTimer(reloadTimeout)
	r.timeout = r.timer.C
}

// reloaded applies a read that returned and carries out or refuses the
// restarts that waited for it; then the restarts asked for meanwhile get
// a read of their own.
func (m *master) reloaded(res reloadResult) {
	r := &m.reloading
	if r.timeout == nil {
		// Given up on: its restarts were refused already.
		m.opts.Logger.Warn().Msg("a read of the configuration that was given up on has returned; its result is dropped")
		r.done = nil
		return
	}
	r.timer.Stop()
	err := m.apply(res)
	for _, p := range r.waiting {
		m.finish(p, err)
	}
	queued := r.queued
	*r = reloading{}
	if len(queued) > 0 {
		m.startReload(queued)
	}
}

// reloadTimedOut refuses every restart waiting for the read under way,
// which goes on, given up on: the next restart waits for it to return.
func (m *master) reloadTimedOut() {
	r := &m.reloading
	err := fmt.Errorf("the configuration was not read within %s", reloadTimeout)
	m.opts.Logger.Error().Err(err).Msg("restart refused: the configuration does not load; the workers are left as they are")
	for _, p := range append(r.waiting, r.queued...) {
		m.finish(p, err)
	}
	r.waiting, r.queued, r.timeout = nil, nil, nil
}

// finish carries out the restart p, or refuses it for err.
func (m *master) finish(p pendingRestart, err error) {
	if err != nil {
		if p.req != nil {
			p.req.reply <- restartReply{err: fmt.Errorf("restart refused: the configuration does not load: %w", err)}
		}
		return
	}
	m.restart(p)
}

func (m *master) restart(p pendingRestart) {
	if p.req == nil {
		m.cluster.Send(p.in)
		return
	}
	// The answer waits only for the cluster's step, not for the rollout;
	// the control socket follows that through Observe.
	out, err := m.cluster.Ask(context.Background(), core.RestartRequested{Source: p.req.source})
	p.req.reply <- restartReply{decisions: out, err: err}
}

// apply makes a read of the configuration the one in force, before a
// rolling restart. It returns the error, leaving everything as it was,
// when the read failed or the new options are invalid.
func (m *master) apply(res reloadResult) error {
	log := m.opts.Logger
	next, plan, err := res.opts, res.plan, res.err
	if err != nil {
		log.Error().Err(err).Msg("restart refused: the configuration does not load; the workers are left as they are")
		return err
	}
	if !slices.Equal(next.Listen, m.opts.Listen) || plan.restartSignal != m.plan.restartSignal || plan.balance != m.plan.balance ||
		next.UpgradeSignal != m.opts.UpgradeSignal {
		log.Warn().Msg("listeners, their balance and the restart and upgrade signals change only with a new master; keeping the current ones")
	}
	if next.Name != m.opts.Name || next.ControlSocket != m.opts.ControlSocket || next.MetricsAddress != m.opts.MetricsAddress ||
		next.Record != m.opts.Record || next.PIDFile != m.opts.PIDFile || next.Subreaper != m.opts.Subreaper || next.LogTail != m.opts.LogTail {
		log.Warn().Msg("name, control socket, metrics, journal, pidfile, subreaper and log-tail change only with a new master; keeping the current ones")
	}
	next.Name, next.ControlSocket, next.ControlSocketOptional = m.opts.Name, m.opts.ControlSocket, m.opts.ControlSocketOptional
	next.MetricsAddress = m.opts.MetricsAddress
	next.Record, next.PIDFile, next.Subreaper, next.Observe, next.LogTail = m.opts.Record, m.opts.PIDFile, m.opts.Subreaper, m.opts.Observe, m.opts.LogTail
	next.Reload, next.Logger, next.LogDropped = m.opts.Reload, m.opts.Logger, m.opts.LogDropped
	next.Version, next.UpgradeSignal, next.LogFlush = m.opts.Version, m.opts.UpgradeSignal, m.opts.LogFlush
	plan.restartSignal, plan.balance, next.Balance = m.plan.restartSignal, m.plan.balance, m.opts.Balance
	m.opts, m.plan = next, plan
	m.runtime.Reconfigure(runtimeConfig(next, plan, m.listeners))
	m.cluster.Reconfigure(actors.Reconfigure{Workers: plan.workers, Core: plan.core, Ready: plan.ready, Drain: plan.drain})
	m.sampling.Store(plan.core.Recycle.MaxMemory > 0)
	log.Info().Str("policy", plan.core.Policy.Name()).Msg("configuration reloaded")
	return nil
}
