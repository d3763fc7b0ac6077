package osproc

import (
	"slices"

	"github.com/dutchmaster/dutchmaster/sockets/nodecluster"
)

// NodeWorkers are the running Node.js cluster workers, by worker id, for
// the master to ask for their prom-client metrics
// (nodecluster.GatherMetrics asks those that listen and do not drain).
// It reads the runtime's table only: no message goes through the
// cluster actor.
func (r *Runtime) NodeWorkers() []nodecluster.Peer {
	r.mu.Lock()
	var peers []nodecluster.Peer
	for id, p := range r.procs {
		if p.cluster != nil {
			peers = append(peers, nodecluster.Peer{Worker: int(id), PID: p.pid, Session: p.cluster})
		}
	}
	r.mu.Unlock()
	slices.SortFunc(peers, func(a, b nodecluster.Peer) int { return a.Worker - b.Worker })
	return peers
}
