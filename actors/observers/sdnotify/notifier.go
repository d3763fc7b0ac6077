package sdnotify

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/sockets/wire"
)

// Notifier speaks sd_notify for the master. Observe (fed by
// actors.Options.Observe) turns the cluster's steps into notifications;
// they are sent in order by a goroutine of the Notifier's own, so that the
// cluster actor never waits on systemd.
//
//	READY=1                 once the first generation listens (the core's Ready)
//	RELOADING=1             when a rolling restart begins, once ready, with
//	MONOTONIC_USEC=…        CLOCK_MONOTONIC in µs (what Type=notify-reload wants)
//	READY=1                 when that rollout ends, however it ends (but a stop)
//	STOPPING=1              at the first stop request
//	STATUS=…                one line with each of the above, and when the target changes
//
// Rollouts a worker asked for (its own replacement) are no reload of the
// service: they change STATUS only.
//
// Only the core's typed facts (Ready, RolloutStarted, RolloutEnded,
// TargetChanged, Stopped) and inputs drive it, never a Note's wording.
type Notifier struct {
	send func(state string) error
	log  zerolog.Logger
	q    chan string
	done chan struct{}

	mu         sync.Mutex
	closed     bool
	ready      bool
	reloading  bool
	stopping   bool
	target     int
	generation int
	warned     bool
}

// queueLen bounds the notifications waiting to be sent; systemd reads
// its socket at once, so they never pile up unless it is wedged, and then
// the newest are dropped (and logged) rather than stall the cluster.
const queueLen = 64

// NewNotifier returns a Notifier when NOTIFY_SOCKET is set, nil otherwise.
func NewNotifier(log zerolog.Logger) *Notifier {
	if os.Getenv(wire.EnvNotifySocket) == "" {
		return nil
	}
	return newNotifier(log, func(state string) error {
		ok, err := daemon.SdNotify(false, state)
		if err == nil && !ok {
			err = fmt.Errorf("%s is not set", wire.EnvNotifySocket)
		}
		return err
	})
}

func newNotifier(log zerolog.Logger, send func(string) error) *Notifier {
	n := &Notifier{send: send, log: log, q: make(chan string, queueLen), done: make(chan struct{})}
	go n.run()
	return n
}

func (n *Notifier) run() {
	defer close(n.done)
	for state := range n.q {
		if err := n.send(state); err != nil && !n.warnedOnce() {
			n.log.Warn().Err(err).Str("state", firstLine(state)).Msg("sd_notify failed; systemd may not see the master's state")
		}
	}
}

func (n *Notifier) warnedOnce() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	w := n.warned
	n.warned = true
	return w
}

// notify queues one notification; n.mu is held.
func (n *Notifier) notify(lines ...string) {
	if n.closed {
		return
	}
	select {
	case n.q <- strings.Join(lines, "\n"):
	default:
		n.log.Warn().Str("state", lines[0]).Msg("sd_notify queue full; notification dropped")
	}
}

// Observe follows one step of the cluster; it has the signature of
// actors.Options.Observe.
func (n *Notifier) Observe(now time.Time, in core.Input, out []core.Decision) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if stop, ok := in.(core.StopRequested); ok && !n.stopping {
		n.stopping = true
		n.notify("STOPPING=1", "STATUS=stopping ("+stop.Source+"): draining the workers")
	}
	for _, d := range out {
		switch d := d.(type) {
		case core.TargetChanged:
			n.target = d.Target
			if n.ready && !n.stopping && !n.reloading {
				n.notify("STATUS=" + n.status("scaled"))
			}
		case core.Fork:
			n.generation = max(n.generation, d.Generation)
		case core.Ready:
			if !n.ready && !n.stopping {
				n.ready = true
				n.notify("READY=1", "STATUS="+n.status(""))
			}
		case core.RolloutStarted:
			n.generation = max(n.generation, d.Generation)
			switch {
			case n.stopping || !n.ready:
			case d.Generation == 0:
				n.notify("STATUS=" + n.status("replacing workers on their request"))
			default:
				n.reloading = true
				n.notify("RELOADING=1", fmt.Sprintf("MONOTONIC_USEC=%d", monotonicUsec()),
					fmt.Sprintf("STATUS=restarting: rolling to generation %d (%s), %d workers", d.Generation, d.Source, n.target))
			}
		case core.RolloutEnded:
			if n.stopping {
				break
			}
			note := "restart " + d.Outcome
			if d.Reason != "" {
				note += ": " + d.Reason
			}
			if n.reloading {
				n.reloading = false
				n.notify("READY=1", "STATUS="+n.status(note))
			} else if n.ready {
				n.notify("STATUS=" + n.status(note))
			}
		case core.Stopped:
			n.notify("STATUS=stopped")
		}
	}
}

// status is the one-line STATUS of a running cluster.
func (n *Notifier) status(note string) string {
	s := fmt.Sprintf("ready: %d workers, generation %d", n.target, n.generation)
	if note != "" {
		s += "; " + strings.ReplaceAll(note, "\n", " ")
	}
	return s
}

// Watchdog pets systemd's watchdog (WatchdogSec=) at half its interval
// for as long as alive says the master works (the cluster actor answers),
// until ctx is done. It returns at once when the watchdog is off or meant
// for another process (WATCHDOG_PID).
func (n *Notifier) Watchdog(ctx context.Context, alive func(context.Context) error) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			check, cancel := context.WithTimeout(ctx, interval/2)
			err := alive(check)
			cancel()
			if err != nil {
				n.log.Error().Err(err).Msg("watchdog not petted: the cluster does not answer")
				continue
			}
			n.mu.Lock()
			n.notify("WATCHDOG=1")
			n.mu.Unlock()
		}
	}
}

// Close sends what is queued and stops the Notifier; later steps are
// not notified.
func (n *Notifier) Close() {
	n.mu.Lock()
	if !n.closed {
		n.closed = true
		close(n.q)
	}
	n.mu.Unlock()
	<-n.done
}

func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1000
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
