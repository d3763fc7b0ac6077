package actors

import (
	"fmt"
	"strings"
	"time"
)

// ReadyMode says which worker reports count as ready.
type ReadyMode struct {
	// Source is auto (IPC or notify), ipc, notify or timer.
	Source string
	// After is the delay for timer mode: a worker alive that long is ready.
	After time.Duration
}

// The ready sources.
const (
	ReadyAuto   = "auto"
	ReadyIPC    = "ipc"
	ReadyNotify = "notify"
	ReadyTimer  = "timer"
)

// ParseReadyMode reads auto, ipc, notify or timer:DURATION.
func ParseReadyMode(s string) (ReadyMode, error) {
	switch s {
	case "", ReadyAuto:
		return ReadyMode{Source: ReadyAuto}, nil
	case ReadyIPC, ReadyNotify:
		return ReadyMode{Source: s}, nil
	}
	if rest, ok := strings.CutPrefix(s, "timer:"); ok {
		d, err := time.ParseDuration(rest)
		if err != nil || d <= 0 {
			return ReadyMode{}, fmt.Errorf("ready mode %q: want timer:DURATION with a positive duration such as timer:2s", s)
		}
		return ReadyMode{Source: ReadyTimer, After: d}, nil
	}
	return ReadyMode{}, fmt.Errorf("ready mode %q: want auto, ipc, notify or timer:DURATION", s)
}

func (m ReadyMode) String() string {
	if m.Source == ReadyTimer {
		return "timer:" + m.After.String()
	}
	if m.Source == "" {
		return ReadyAuto
	}
	return m.Source
}

// Accepts reports whether readiness from source (ipc, notify, timer) counts.
func (m ReadyMode) Accepts(source string) bool {
	switch m.Source {
	case "", ReadyAuto:
		return source == ReadyIPC || source == ReadyNotify
	}
	return m.Source == source
}

// DrainMethod is how a worker is asked to stop.
type DrainMethod string

// The drain methods. DrainAuto resolves, per worker, to DrainIPC for a
// worker that has spoken on its IPC channel and DrainSignal for the rest.
const (
	DrainAuto   DrainMethod = "auto"
	DrainIPC    DrainMethod = "ipc"    // {"event":"disconnect"}, then the channel is closed
	DrainSignal DrainMethod = "signal" // the stop signal (SIGTERM by default)
	DrainBoth   DrainMethod = "both"   // both of the above
)

// ParseDrainMethod reads auto, ipc, signal or both.
func ParseDrainMethod(s string) (DrainMethod, error) {
	switch m := DrainMethod(s); m {
	case "":
		return DrainAuto, nil
	case DrainAuto, DrainIPC, DrainSignal, DrainBoth:
		return m, nil
	}
	return "", fmt.Errorf("drain mode %q: want auto, ipc, signal or both", s)
}

func (m DrainMethod) resolve(spokeIPC bool) DrainMethod {
	if m != DrainAuto && m != "" {
		return m
	}
	if spokeIPC {
		return DrainIPC
	}
	return DrainSignal
}
