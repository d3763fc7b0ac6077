package dutchmaster

import (
	"log"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/actors/osproc"
	"github.com/dutchmaster/dutchmaster/sockets"
)

// The clients of the master's own sockets (the control socket, the
// metrics endpoint) are bounded in number and in idle time, and none of
// them may take a descriptor a fork needs: a client idle on a socket must
// never make a rollout fail.
const (
	// maxMetricsConns: Prometheus and a few probes need a handful.
	maxMetricsConns = 32
	// maxControlConns: each ctl command is one connection, held for as
	// long as its rollout takes.
	maxControlConns = 16
	// idleTimeout closes a client connection that sends nothing: a
	// metrics keep-alive connection between requests, a control
	// connection between commands.
	idleTimeout = 10 * time.Second
	// The metrics server's bounds on one request.
	metricsReadTimeout  = 10 * time.Second
	metricsWriteTimeout = 30 * time.Second
)

// clientGuard keeps the descriptors of a rollout's forks out of clients'
// reach: a client connection is refused while the master's open
// descriptors, plus the reserve for forking a rollout's workers, reach
// the descriptor limit (RLIMIT_NOFILE, read at start; Go raises the soft
// limit to the hard one). The reserve follows the target worker count
// (scaling) and the max surge (reloads) through the cluster's steps.
type clientGuard struct {
	limit       int // 0: unknown, no check
	slotSockets int // what a fork into a new slot binds (kernel balance)
	workers     atomic.Int64
	surge       atomic.Int64
}

func newClientGuard(workers, maxSurge, slotSockets int) *clientGuard {
	g := &clientGuard{slotSockets: slotSockets}
	g.limit, _ = osproc.DescriptorLimit()
	g.workers.Store(int64(workers))
	g.surge.Store(int64(maxSurge))
	return g
}

// room is nil while a client may take a descriptor.
func (g *clientGuard) room() error {
	if g.limit <= 0 {
		return nil
	}
	return osproc.RoomForClient(g.limit, g.reserve())
}

func (g *clientGuard) reserve() int {
	return osproc.ForkReserve(int(g.workers.Load()), int(g.surge.Load()), g.slotSockets)
}

// observe is an Observer: it follows the target and the max surge.
func (g *clientGuard) observe(_ time.Time, in core.Input, out []core.Decision) {
	if r, ok := in.(core.Reconfigure); ok {
		g.surge.Store(int64(r.Config.MaxSurge))
	}
	for _, d := range out {
		if t, ok := d.(core.TargetChanged); ok {
			g.workers.Store(int64(t.Target))
		}
	}
}

// limit wraps a listener of the master's own with the cap and the guard.
// Refusals are logged, at most one line per 10 s with their count.
func (g *clientGuard) listener(l net.Listener, what string, max int, log zerolog.Logger, refuse func(net.Conn, error)) net.Listener {
	return sockets.LimitListener(l, sockets.Limit{
		Max: max, Room: g.room, Refuse: refuse,
		Refused: func(why error, n int) {
			log.Warn().Err(why).Int("refused", n).Int("max_connections", max).
				Msg(what + " connection refused (the count is of refusals since the last such line)")
		},
	})
}

// errorLog routes what net/http logs (accept errors, bad handshakes)
// into the master's log, as JSON like every other line.
func errorLog(to zerolog.Logger, what string) *log.Logger {
	return log.New(logLines{log: to, what: what}, "", 0)
}

type logLines struct {
	log  zerolog.Logger
	what string
}

func (l logLines) Write(p []byte) (int, error) {
	l.log.Warn().Str("error", strings.TrimSpace(string(p))).Msg(l.what + ": server error")
	return len(p), nil
}
