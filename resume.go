package dutchmaster

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/dutchmaster/dutchmaster/actors/core"

	"github.com/dutchmaster/dutchmaster/actors/observers/balance"
	"github.com/dutchmaster/dutchmaster/sockets"
	"github.com/dutchmaster/dutchmaster/sockets/nodecluster"
	"github.com/dutchmaster/dutchmaster/sockets/reuseport"
)

// The new image of an upgrade: what the old one handed over is taken over
// here, part by part, instead of being bound, opened or forked.

// adoptSockets takes over the listeners, the reuseport groups and the
// Node.js servers' registry, in the balance mode the old image had.
func (m *master) adoptSockets() (err error) {
	st := m.handed
	m.mode, m.modeWhy = st.Balance, st.BalanceWhy
	defer func() {
		if err != nil {
			closeBalanced(m.listeners, m.groups)
			m.listeners, m.groups = nil, nil
		}
	}()
	if len(st.Listeners) != len(m.plan.specs) {
		return fmt.Errorf("taking over: %d listeners handed over, the options give %d", len(st.Listeners), len(m.plan.specs))
	}
	for i, hl := range st.Listeners {
		spec := m.plan.specs[i]
		if got := spec.URL(); got != hl.Spec {
			return fmt.Errorf("taking over: listener %d was %s, the options give %s", i, hl.Spec, got)
		}
		l, err := sockets.TakeOver(hl.FD, spec, !hl.Activated) // systemd's outlives the master
		if err != nil {
			return fmt.Errorf("taking over %s: %w", hl.Spec, err)
		}
		m.listeners = append(m.listeners, l)
		if hl.Activated {
			if m.activated == nil {
				m.activated = map[*sockets.Listener]bool{}
			}
			m.activated[l] = true
		}
	}
	if len(st.Groups) > 0 {
		m.groups = make([]*reuseport.Group, len(m.listeners))
		for i, gs := range st.Groups {
			if gs == nil {
				continue
			}
			if m.groups[i], err = reuseport.AdoptGroup(m.plan.specs[i], *gs); err != nil {
				return fmt.Errorf("taking over %s's slot sockets: %w", m.plan.specs[i], err)
			}
		}
	}
	if m.plan.nodeCluster {
		b := nodeBalancing(m.mode, m.groups, m.opts.Logger)
		if st.Registry == nil {
			m.registry = nodecluster.NewBalancedRegistry(m.listeners, b)
		} else if m.registry, err = nodecluster.AdoptRegistry(m.listeners, m.groups, b, *st.Registry); err != nil {
			return fmt.Errorf("taking over the Node.js servers: %w", err)
		}
	}
	return nil
}

// resumeObservers tells the observers that learn the workers from the
// cluster's steps (the balance, the reaper) which workers there are.
func (m *master) resumeObservers(b *balance.Observer) {
	workers := m.handed.Cluster.Core.Workers
	view := make([]core.Worker, 0, len(workers))
	for _, w := range workers {
		view = append(view, core.Worker{ID: w.ID, Slot: w.Slot, State: w.State, PID: w.PID, Hung: w.Hung})
	}
	if b != nil {
		b.Resume(view)
	}
	if m.ops.reaper != nil {
		for _, w := range view {
			if w.PID > 0 {
				m.ops.reaper.Observe(time.Time{}, core.WorkerSpawned{Worker: w.ID, PID: w.PID}, nil)
			}
		}
	}
}

// upgraded is the new image's word that it took over: the log, the
// status's count, systemd's READY=1.
func (m *master) upgraded() {
	st := m.handed
	pause := time.Since(st.HandedAt)
	m.upgradesMu.Lock()
	m.upgrades = UpgradeStatus{Count: st.Upgrades + 1, Last: time.Now()}
	m.upgradesMu.Unlock()
	m.opts.Logger.Info().Int("pid", os.Getpid()).Str("from", st.Version).Str("to", m.version()).Str("binary", st.Binary).
		Int("workers", len(st.Cluster.Workers)).Dur("paused", pause).Msg("upgrade: took over")
	if m.ops.notifier != nil {
		if v, err := m.cluster.View(context.Background()); err == nil {
			m.ops.notifier.Resumed(v)
		}
	}
}

// version is this binary's version, as Options.Version gives it.
func (m *master) version() string {
	if m.opts.Version == "" {
		return "(unknown)"
	}
	return m.opts.Version
}

// upgradeStatus is the status's word on upgrades.
func (m *master) upgradeStatus() UpgradeStatus {
	m.upgradesMu.Lock()
	defer m.upgradesMu.Unlock()
	return m.upgrades
}
