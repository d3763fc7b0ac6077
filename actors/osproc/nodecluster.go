package osproc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/sockets"
	"github.com/dutchmaster/dutchmaster/sockets/nodecluster"
	"github.com/dutchmaster/dutchmaster/sockets/wire"
)

// listeningLine is what a Node.js cluster worker's first listening becomes
// for the worker actor: the readiness message of the worker protocol.
var listeningLine = wire.EventLine(wire.EventListening)

// clusterSession is the cluster primary's side of a new worker's channel:
// its queries are answered for its slot (kernel balance) or its id
// (round-robin), or with shared handles if its environment says
// NODE_CLUSTER_SCHED_POLICY=none.
func (r *Runtime) clusterSession(ch *sockets.Channel, spec actors.WorkerSpec, env []string) *nodecluster.Session {
	return nodecluster.NewWorkerSession(ch, r.handles, nodecluster.Worker{
		ID: int(spec.ID), Slot: spec.Slot, SchedNone: nodecluster.SchedNone(env),
	})
}

// receiveCluster handles one line from a Node.js cluster worker: the
// session answers Node's internal messages; what they mean for the
// supervisor, and the app's own messages, go on as events.
func (p *process) receiveCluster(line []byte) {
	ev := p.cluster.Receive(line)
	log := p.log
	switch ev.Kind {
	case nodecluster.KindMessage:
		p.events(actors.IPC{Line: ev.Line})
	case nodecluster.KindOnline:
		log.Debug().Msg("node worker online")
		p.events(actors.Online{})
		p.runtime.checkNodeVersion(p.pid)
	case nodecluster.KindListening:
		p.events(actors.IPC{Line: listeningLine})
	case nodecluster.KindServed:
		sh := ev.Share
		switch {
		case sh.Errno != 0:
			log.Warn().Str("key", ev.Key).Str("server", ev.Query.String()).Str("errno", nodecluster.ErrnoName(sh.Errno)).
				AnErr("cause", sh.Err).Msg("node server not shared: the worker's listen fails")
		case sh.Bound:
			log.Info().Str("key", ev.Key).Str("address", sh.Where).Str("balance", sh.Balance.String()).Msg("node server bound")
		default:
			log.Debug().Str("key", ev.Key).Str("address", sh.Where).Str("listener", sh.Listener).Str("balance", sh.Balance.String()).Msg("node server shared")
		}
	case nodecluster.KindExitedAfterDisconnect:
		log.Info().Msg("node worker disconnects itself")
	case nodecluster.KindHandleLost:
		log.Warn().Str("key", ev.Key).Int("retransmissions", nodecluster.MaxHandleRetransmissions).
			Msg("node worker never received its server handle; given up")
	default:
		log.Debug().Str("act", ev.Act).Str("key", ev.Key).Msg("node cluster message")
	}
	if ev.Err != nil {
		log.Warn().Err(ev.Err).Str("act", ev.Act).Msg("node cluster answer not sent")
	}
}

// versionTimeout bounds `node --version`.
const versionTimeout = 10 * time.Second

// checkNodeVersion logs the version of the Node.js binary that runs the
// worker with this pid, once per binary, and warns when its major is not
// one the cluster protocol is tested with. It reads the binary from
// /proc/PID/exe, so wrappers (env, a shell script that execs node) are
// seen through, and runs `BINARY --version` on a goroutine of the runtime,
// only for a binary called node* (nothing else is run to ask).
func (r *Runtime) checkNodeVersion(pid int) {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil || strings.HasSuffix(exe, " (deleted)") {
		return
	}
	if !strings.HasPrefix(filepath.Base(exe), "node") {
		log := r.config().Logger
		log.Debug().Str("exe", exe).Msg("node version not checked: the worker's binary is not called node")
		return
	}
	r.mu.Lock()
	seen := r.nodeBinaries[exe]
	r.nodeBinaries[exe] = true
	r.mu.Unlock()
	if seen {
		return
	}
	r.wg.Add(1) // the caller's worker is counted, so Close is not waiting on zero
	go func() {
		defer r.wg.Done()
		log := r.config().Logger
		ctx, cancel := context.WithTimeout(context.Background(), versionTimeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, exe, "--version").Output()
		if err != nil {
			log.Warn().Str("exe", exe).Err(err).Msg("node version unknown: `--version` failed")
			return
		}
		v, err := nodecluster.ParseVersion(string(out))
		if err != nil {
			log.Warn().Str("exe", exe).Err(err).Msg("node version unknown: the cluster protocol is emulated for Node.js only")
			return
		}
		e := log.Info()
		msg := "node version"
		if !v.Tested() {
			e, msg = log.Warn(), "node version not tested with the cluster protocol; run the node-cluster tests with it (docs/node.md)"
		}
		e.Str("exe", exe).Str("version", v.String()).Bool("tested", v.Tested()).
			Ints("tested_majors", slices.Clone(nodecluster.TestedMajors)).Msg(msg)
	}()
}
