package dutchmaster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dutchmaster/dutchmaster/actors"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/actors/observers/journal"
	"github.com/dutchmaster/dutchmaster/actors/osproc"
	"github.com/dutchmaster/dutchmaster/fsm"
	"github.com/dutchmaster/dutchmaster/sockets/nodecluster"
	"github.com/dutchmaster/dutchmaster/sockets/reuseport"
)

// An upgrade in place (docs/upgrade.md): the master executes a new binary
// of itself in the same process. The old image hands its state to the new
// one in a memfd named by UpgradeStateEnv, and its descriptors by number
// (execve keeps them, and their numbers, unless close-on-exec).

// UpgradeStateEnv names, in the new image's environment, the descriptor
// of the memfd that holds the handed-over state.
const UpgradeStateEnv = "DUTCHMASTER_UPGRADE_STATE"

// UpgradeFormat is the format of the handed-over state (handedState) this
// binary writes and the newest it reads. The core's part has its own
// (core.StateFormat).
const UpgradeFormat = 1

// handedState is everything the new image takes over, as JSON.
type handedState struct {
	Format  int    `json:"format"`
	Version string `json:"version"` // the old image's
	Binary  string `json:"binary"`  // what it executed
	// Started is when the first master of this line started (status's
	// uptime and the journal's offsets count from it); HandedAt when the
	// state was taken, from which the new image measures the pause.
	Started  time.Time `json:"started"`
	HandedAt time.Time `json:"handed_at"`
	Upgrades int       `json:"upgrades"` // done before this one
	// Signals are the signals taken and not yet handled at the handover
	// (Run's loop was busy with the upgrade), for the new image to handle.
	Signals []int `json:"signals,omitempty"`
	// PIDFile is the locked pidfile's descriptor, -1 when there is none.
	PIDFile int `json:"pidfile"`
	// Balance is the mode in force and why it was taken.
	Balance    string `json:"balance"`
	BalanceWhy string `json:"balance_why"`
	// Listeners, in the order workers inherit them.
	Listeners []handedListener `json:"listeners"`
	// Groups has an entry per listener, nil for a shared one.
	Groups   []*reuseport.GroupState    `json:"groups,omitempty"`
	Registry *nodecluster.RegistryState `json:"registry,omitempty"`
	Runtime  osproc.State               `json:"runtime"`
	Cluster  actors.Snapshot            `json:"cluster"`
	Ops      handedOps                  `json:"ops"`
}

// handedListener is one listener: its spec and descriptor.
type handedListener struct {
	Spec      string `json:"spec"`
	FD        int    `json:"fd"`
	Activated bool   `json:"activated,omitempty"`
}

// UpgradeCheck is what the master asks a new binary before it executes
// it (`dutchmaster upgrade-check`, on its stdin): whether it reads the
// handed-over state's formats and runs the configuration in force.
type UpgradeCheck struct {
	Format      int    `json:"format"`       // of the handed-over state
	StateFormat int    `json:"state_format"` // of the core's part
	Version     string `json:"version"`      // the running master's
	// Args are the master's arguments (without the program name): the
	// new image reads them, and the config file they name, again.
	Args []string `json:"args"`
	// Config is the core's configuration in force.
	Config core.StateConfig `json:"config"`
	// Fixed are the options fixed for the master's life (fixedOptions),
	// by config key, as in force.
	Fixed map[string]string `json:"fixed"`
}

// CheckUpgrade says whether this binary can take over from the master
// that asks (in), opts being what this binary makes of in.Args: the
// formats it reads, options it accepts, and the same core configuration
// as the one in force. The error is one line, for the operator.
func CheckUpgrade(in UpgradeCheck, opts Options) error {
	if in.Format > UpgradeFormat {
		return fmt.Errorf("the handed-over state's format %d is newer than this binary reads (up to %d)", in.Format, UpgradeFormat)
	}
	if in.StateFormat > core.StateFormat {
		return fmt.Errorf("the core's state format %d is newer than this binary reads (up to %d)", in.StateFormat, core.StateFormat)
	}
	p, err := prepare(opts)
	if err != nil {
		return fmt.Errorf("this binary refuses the options in force: %w", err)
	}
	fixed := fixedOptions(opts, p)
	for _, k := range slices.Sorted(maps.Keys(in.Fixed)) {
		if fixed[k] != in.Fixed[k] {
			return fmt.Errorf("%s is %q in force, and %q as this binary reads the arguments and config file now: it changes only with a new master", k, in.Fixed[k], fixed[k])
		}
	}
	mine := core.ConfigOf(p.core)
	mine.Seed = in.Config.Seed // drawn at start: the running master's stands
	if mine != in.Config {
		a, _ := json.Marshal(in.Config)
		b, _ := json.Marshal(mine)
		return fmt.Errorf("the configuration differs from the one in force (a changed config file takes effect at a rolling restart: run one first): in force %s, read now %s", a, b)
	}
	return nil
}

// fixedOptions are the options a master keeps for its life (a reload
// cannot change them), by config key, as text: the new image of an
// upgrade takes over what they made, so it must read the same.
func fixedOptions(o Options, p plan) map[string]string {
	var specs []string
	for _, s := range p.specs {
		specs = append(specs, s.URL())
	}
	return map[string]string{
		"listen": strings.Join(specs, " "), "balance": p.balance, "restart-signal": fsm.SignalName(p.restartSignal),
		"upgrade-signal": fsm.SignalName(o.UpgradeSignal), "name": o.Name, "control": o.ControlSocket,
		"metrics": o.MetricsAddress, "record": o.Record, "pidfile": o.PIDFile,
		"subreaper": strconv.FormatBool(o.Subreaper), "log-tail": strconv.Itoa(o.LogTail),
	}
}

// ServeMainThread runs run (a program's body: Run and what surrounds it)
// and lends the calling thread, which must be the main thread (call it
// from main), to every fork of a worker and to an upgrade's exec: a
// worker's parent-death signal follows the thread that forked it, and the
// exec ends every other thread. A program that does not call it runs as
// well, but its master refuses to upgrade in place.
func ServeMainThread(run func() int) int { return osproc.ServeMainThread(run) }

// UpgradeStatus is what status says of the master's upgrades.
type UpgradeStatus struct {
	Count     int       // upgrades of this master (its pid) so far
	Last      time.Time // the last one's end, zero if none
	Failed    int       // upgrades accepted whose exec failed
	LastError string    // why the last attempt failed or was refused
}

// upgradeRequest is an upgrade asked for on the control socket or by the
// upgrade signal (reply nil), carried out by Run's loop.
type upgradeRequest struct {
	binary string // "" for the binary the master was started from
	reply  chan upgradeReply
}

// upgradeReply answers an upgrade request: refused (err), or accepted,
// with the new binary's version. Accepted, the master executes the new
// binary once proceed is closed (the answer was written to the client,
// or its bound passed), and says on failed why the exec failed.
type upgradeReply struct {
	// binary and version are the new binary's; from the running one's.
	binary, version, from string
	err                   error
	proceed               chan struct{}
	failed                chan error
}

// upgradeBusyWait bounds the wait for a quiet instant (no fork under way,
// no Node.js handle unacknowledged) before an upgrade is refused as busy.
const upgradeBusyWait = 5 * time.Second

// preflightTimeout bounds the new binary's upgrade-check run, and
// replyTimeout the wait for the answer to reach the client.
const (
	preflightTimeout = 10 * time.Second
	replyTimeout     = 5 * time.Second
)

// upgrade carries out one upgrade request on Run's loop. It returns only
// when the upgrade was refused or its exec failed: a successful exec
// replaces the process.
func (m *master) upgrade(req upgradeRequest) {
	log := m.opts.Logger
	binary, version, err := m.prepareUpgrade(req.binary)
	if err != nil {
		m.upgradeRefused(err)
		if req.reply != nil {
			req.reply <- upgradeReply{binary: binary, err: err}
		}
		return
	}
	log.Info().Str("binary", binary).Str("from", m.version()).Str("to", version).Msg("upgrade: handing over")
	if m.ops.notifier != nil {
		m.ops.notifier.Reloading()
	}
	ready := func() {
		if m.ops.notifier != nil {
			m.ops.notifier.Ready()
		}
	}
	// A Node.js session waiting for a worker's answer (a handle's
	// acknowledgement, a metrics request) cannot be handed over: the
	// handover is tried again, for a while.
	var (
		keep  []int
		memfd int
		undo  func(reason error)
	)
	for deadline := time.Now().Add(upgradeBusyWait); ; {
		keep, memfd, undo, err = m.handOver(binary, version)
		if err == nil || !errors.Is(err, nodecluster.ErrBusy) || time.Now().After(deadline) {
			break
		}
		undo(err)
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		undo(err)
		ready()
		m.upgradeRefused(err)
		if req.reply != nil {
			req.reply <- upgradeReply{binary: binary, err: err}
		}
		return
	}
	rep := upgradeReply{binary: binary, version: version, from: m.version(), proceed: make(chan struct{}), failed: make(chan error, 1)}
	if req.reply != nil {
		req.reply <- rep
		select {
		case <-rep.proceed:
		case <-time.After(replyTimeout):
		}
	}
	if m.ops.control != nil {
		// A client that connects now waits in the queue for the new image.
		m.ops.control.Pause()
	}
	if m.opts.LogFlush != nil {
		m.opts.LogFlush()
	}
	err = fmt.Errorf("executing %s: %w", binary, execHanded(binary, keep, memfd))
	// Still here: the kernel refused the exec before its point of no
	// return, and this image goes on as it was.
	undo(err)
	if m.ops.control != nil {
		m.ops.control.Unpause()
	}
	ready()
	m.upgradesMu.Lock()
	m.upgrades.Failed++
	m.upgradesMu.Unlock()
	m.upgradeRefused(err)
	rep.failed <- err
}

// upgradeRefused records and logs why an upgrade did not happen; the
// master goes on.
func (m *master) upgradeRefused(err error) {
	m.upgradesMu.Lock()
	m.upgrades.LastError = err.Error()
	m.upgradesMu.Unlock()
	m.opts.Logger.Error().Err(err).Msg("upgrade refused; the master goes on as it was")
}

// prepareUpgrade checks everything that can be checked before anything
// is handed over: the binary exists and runs, it takes over this state
// (its preflight), and the master is in a state it can hand over.
func (m *master) prepareUpgrade(binary string) (string, string, error) {
	if binary == "" {
		binary = m.executable
	}
	if !osproc.MainThreadServing() {
		return binary, "", errors.New("this program does not fork on its main thread (ServeMainThread), so its workers would die with the exec")
	}
	if m.plan.nodeCluster && m.mode == BalanceRoundRobin {
		return binary, "", errors.New("an upgrade under --balance round-robin is not built: connections handed to a worker and not yet accepted would be lost (kernel and shared are)")
	}
	if m.reloading.done != nil {
		return binary, "", errors.New("a re-read of the configuration is under way; try again once its restart began")
	}
	if err := unix.Access(binary, unix.X_OK); err != nil {
		return binary, "", fmt.Errorf("%s: %w", binary, err)
	}
	version, err := preflight(binary, m)
	if err != nil {
		return binary, "", err
	}
	return binary, version, nil
}

// preflight runs `BINARY upgrade-check` with the master's state formats,
// arguments and configuration on its stdin: its first line of output is
// its version (exit 0), or why it cannot take over (exit 1).
func preflight(binary string, m *master) (string, error) {
	in, err := json.Marshal(UpgradeCheck{
		Format: UpgradeFormat, StateFormat: core.StateFormat, Version: m.version(),
		Args: os.Args[1:], Config: core.ConfigOf(m.plan.core), Fixed: fixedOptions(m.opts, m.plan),
	})
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), preflightTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "upgrade-check")
	cmd.Stdin = bytes.NewReader(in)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if ctx.Err() != nil {
		return "", fmt.Errorf("%s upgrade-check did not answer within %s", binary, preflightTimeout)
	}
	if err != nil {
		why := firstLine(errOut.String())
		if why == "" {
			why = firstLine(out.String())
		}
		if why == "" {
			why = err.Error()
		}
		return "", fmt.Errorf("%s cannot take over: %s", binary, why)
	}
	return firstLine(out.String()), nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(line)
}

// handOver stops the master at one instant and takes its state: the
// runtime's readers pause, the cluster freezes (no further step), and
// every part gives its state and descriptors. keep are the descriptors
// the new image takes (memfd among them); undo lets the master go on as
// it was, should the exec fail (or the handover itself).
func (m *master) handOver(binary, version string) (keep []int, memfd int, undo func(reason error), err error) {
	var undos []func(reason error)
	undo = func(reason error) {
		for i := len(undos) - 1; i >= 0; i-- {
			undos[i](reason)
		}
		undos = nil
	}
	deadline := time.Now().Add(upgradeBusyWait)
	for m.runtime.Forking() > 0 {
		if time.Now().After(deadline) {
			return nil, -1, undo, fmt.Errorf("a worker is being forked for longer than %s; try again", upgradeBusyWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := m.runtime.Pause(); err != nil {
		return nil, -1, undo, err
	}
	undos = append(undos, func(error) { m.runtime.Unpause() })
	ctx, cancel := context.WithTimeout(context.Background(), upgradeBusyWait)
	defer cancel()
	snap, err := m.cluster.Freeze(ctx)
	if err != nil {
		return nil, -1, undo, fmt.Errorf("the cluster could not be stopped at one instant: %w", err)
	}
	undos = append(undos, func(error) { m.cluster.Thaw() })
	st := handedState{
		Format: UpgradeFormat, Version: m.version(), Binary: binary, Started: m.started, HandedAt: snap.At,
		Upgrades: m.upgradeStatus().Count, Balance: m.mode, BalanceWhy: m.modeWhy, Cluster: snap, PIDFile: -1,
	}
	if m.pidfile != nil {
		st.PIDFile = m.pidfile.FD()
		keep = append(keep, st.PIDFile)
	}
	for i, l := range m.listeners {
		// By the spec as given (a port 0 stays 0): the new image matches
		// it with the options it reads.
		fd := int(l.File().Fd())
		st.Listeners = append(st.Listeners, handedListener{Spec: m.plan.specs[i].URL(), FD: fd, Activated: m.activated[l]})
		keep = append(keep, fd)
	}
	for _, g := range m.groups {
		if g == nil {
			st.Groups = append(st.Groups, nil)
			continue
		}
		gs, fds := g.Handover()
		st.Groups = append(st.Groups, &gs)
		keep = append(keep, fds...)
	}
	if m.registry != nil {
		rs, fds, err := m.registry.Handover()
		if err != nil {
			return nil, -1, undo, err
		}
		st.Registry = &rs
		keep = append(keep, fds...)
	}
	rst, fds, err := m.runtime.Handover()
	if err != nil {
		return nil, -1, undo, err
	}
	st.Runtime = rst
	keep = append(keep, fds...)
	ops, fds, err := m.ops.handOver(snap.At, journal.UpgradeRecord{
		From: journal.Image{Binary: m.executable, Version: m.version()}, To: journal.Image{Binary: binary, Version: version},
		StateFormat: core.StateFormat,
	})
	if err != nil {
		return nil, -1, undo, err
	}
	st.Ops = ops
	keep = append(keep, fds...)
	if m.ops.journal != nil {
		undos = append(undos, func(reason error) { m.ops.journal.UpgradeFailed(time.Now(), reason) })
	}
	st.Signals = m.takePendingSignals()
	undos = append(undos, func(error) {
		for _, s := range st.Signals {
			m.sigs <- syscall.Signal(s)
		}
	})

	data, err := json.Marshal(st)
	if err != nil {
		return nil, -1, undo, fmt.Errorf("the state: %w", err)
	}
	memfd, err = stateMemfd(data)
	if err != nil {
		return nil, -1, undo, err
	}
	undos = append(undos, func(error) { unix.Close(memfd) })
	return append(keep, memfd), memfd, undo, nil
}

// takePendingSignals empties the queue of signals Run has taken and not
// handled (it was busy with the upgrade), for the new image: one that
// arrives after this, in the instant before the exec, is lost.
func (m *master) takePendingSignals() []int {
	var out []int
	for {
		select {
		case s := <-m.sigs:
			out = append(out, int(s.(syscall.Signal)))
		default:
			return out
		}
	}
}

// stateMemfd writes data to a new memfd, read from its start by the new
// image; it is not close-on-exec.
func stateMemfd(data []byte) (int, error) {
	fd, err := unix.MemfdCreate("dutchmaster-upgrade", 0)
	if err != nil {
		return -1, os.NewSyscallError("memfd_create", err)
	}
	f := os.NewFile(uintptr(fd), "upgrade-state")
	if _, err := f.Write(data); err != nil {
		f.Close()
		return -1, fmt.Errorf("writing the state: %w", err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		f.Close()
		return -1, err
	}
	// The descriptor goes on in the new image; the *os.File must not
	// close it when collected.
	nfd, err := unix.Dup(fd)
	f.Close()
	if err != nil {
		return -1, os.NewSyscallError("dup", err)
	}
	return nfd, nil
}

// execHanded executes binary with the master's own arguments, keep open
// across the exec and the state's memfd named in the environment. It
// returns only if the kernel refused the exec; keep are close-on-exec
// again then.
func execHanded(binary string, keep []int, memfd int) error {
	for i, fd := range keep {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			closeOnExec(keep[:i])
			return os.NewSyscallError("fcntl F_SETFD", err)
		}
	}
	env := append(os.Environ(), UpgradeStateEnv+"="+strconv.Itoa(memfd))
	err := osproc.Exec(binary, os.Args, env)
	closeOnExec(keep)
	return err
}

func closeOnExec(fds []int) {
	for _, fd := range fds {
		unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
	}
}

// takeHandedState reads the state an old image handed over, if this
// process is the new image of an upgrade (UpgradeStateEnv set), and
// removes the variable so that no worker sees it. nil: a fresh start.
func takeHandedState() (*handedState, error) {
	v, ok := os.LookupEnv(UpgradeStateEnv)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(UpgradeStateEnv)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("%s=%q: not a descriptor", UpgradeStateEnv, v)
	}
	f := os.NewFile(uintptr(fd), "upgrade-state")
	defer f.Close()
	var head struct {
		Format *int `json:"format"`
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("reading the handed-over state: %w", err)
	}
	if err := json.Unmarshal(data, &head); err != nil || head.Format == nil {
		return nil, fmt.Errorf("the handed-over state is not one (%d bytes)", len(data))
	}
	if *head.Format > UpgradeFormat {
		return nil, fmt.Errorf("the handed-over state's format %d is newer than this binary reads (up to %d)", *head.Format, UpgradeFormat)
	}
	var st handedState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("the handed-over state: %w", err)
	}
	return &st, nil
}
