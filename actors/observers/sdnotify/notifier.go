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
// Around an in-place upgrade of the master (ctl upgrade), the master calls
// Reloading before the exec and, after it, Ready (the exec failed: the old
// image goes on) or, in the new image, Resumed:
//
//	RELOADING=1             Reloading: the upgrade begins (sent before it returns)
//	MONOTONIC_USEC=…
//	READY=1                 Ready, Resumed: the upgrade is over, unless a rolling
//	                        restart is under way (its end sends READY=1)
//
// Rollouts a worker asked for (its own replacement) are no reload of the
// service: they change STATUS only.
//
// Only the core's typed facts (Ready, RolloutStarted, RolloutEnded,
// TargetChanged, Stopped) and inputs drive it, never a Note's wording.
type Notifier struct {
	send func(state string) error
	log  zerolog.Logger
	q    chan notification
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

// notification is one datagram; sent, if not nil, is closed once it went
// out (or failed).
type notification struct {
	state string
	sent  chan struct{}
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
	n := &Notifier{send: send, log: log, q: make(chan notification, queueLen), done: make(chan struct{})}
	go n.run()
	return n
}

func (n *Notifier) run() {
	defer close(n.done)
	for m := range n.q {
		if err := n.send(m.state); err != nil && !n.warnedOnce() {
			n.log.Warn().Err(err).Str("state", firstLine(m.state)).Msg("sd_notify failed; systemd may not see the master's state")
		}
		if m.sent != nil {
			close(m.sent)
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
	n.queue(notification{state: strings.Join(lines, "\n")})
}

// queue queues m, or drops it (logged) when the queue is full; false when
// it was not queued. n.mu is held.
func (n *Notifier) queue(m notification) bool {
	if n.closed {
		return false
	}
	select {
	case n.q <- m:
		return true
	default:
		n.log.Warn().Str("state", firstLine(m.state)).Msg("sd_notify queue full; notification dropped")
		return false
	}
}

// sendWait bounds how long Reloading waits for its notification to go
// out: systemd reads at once; a wedged one must not hold the upgrade.
const sendWait = 2 * time.Second

// Reloading tells systemd that the master reloads: an in-place upgrade
// begins. It returns once the notification went out (after those queued
// before it), or after a bound of sendWait, since the exec that follows
// ends the goroutine that sends. Before the first generation is ready,
// or once stopping, there is nothing to reload and it sends nothing.
func (n *Notifier) Reloading() {
	m := notification{state: strings.Join([]string{"RELOADING=1", fmt.Sprintf("MONOTONIC_USEC=%d", monotonicUsec()),
		"STATUS=upgrading the master"}, "\n"), sent: make(chan struct{})}
	n.mu.Lock()
	queued := n.ready && !n.stopping && n.queue(m)
	n.mu.Unlock()
	if !queued {
		return
	}
	select {
	case <-m.sent:
	case <-time.After(sendWait):
		n.log.Warn().Dur("waited", sendWait).Msg("sd_notify: RELOADING=1 not sent yet; upgrading anyway")
	}
}

// Ready tells systemd that the upgrade is over (the old image calls it
// when the exec failed): READY=1 with the status, unless a rolling
// restart is under way, whose end sends READY=1 (the unit stays
// reloading until then, as it was before the upgrade). Before the first
// generation is ready, the core's Ready sends it, as at any start.
func (n *Notifier) Ready() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.upgradeOver("")
}

// Resumed is Ready in the new image of an upgrade. Its Notifier is new,
// so it first takes the resumed cluster's view as the old one had
// followed it: ready, stopping, the target, the generation, and whether a
// rolling restart is under way (the unit then stays reloading).
func (n *Notifier) Resumed(v core.View) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.ready, n.stopping, n.target, n.generation = v.Ready, v.Stopping, v.Target, v.Generation
	n.reloading = v.Ready && !v.Stopping && v.Rollout != nil && v.Rollout.Generation != 0
	n.upgradeOver("master upgraded")
}

// upgradeOver sends READY=1 after an upgrade if the unit is to be ready
// now; n.mu is held.
func (n *Notifier) upgradeOver(note string) {
	if n.ready && !n.stopping && !n.reloading {
		n.notify("READY=1", "STATUS="+n.status(note))
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
