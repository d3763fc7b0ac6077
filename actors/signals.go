package actors

import (
	"syscall"

	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/fsm"
)

// Signals maps the master's signals to cluster inputs: the restart signal
// to a rolling restart, SIGTERM and SIGINT to a graceful stop, SIGTTIN and
// SIGTTOU to one worker more or less (as unicorn and gunicorn do).
type Signals struct {
	Restart syscall.Signal // default SIGUSR2
}

// Input returns the cluster input for sig, or false for a signal the
// master does not act on.
func (s Signals) Input(sig syscall.Signal) (core.Input, bool) {
	restart := s.Restart
	if restart == 0 {
		restart = syscall.SIGUSR2
	}
	source := fsm.SignalName(sig)
	switch sig {
	case restart:
		return core.RestartRequested{Source: source}, true
	case syscall.SIGTERM, syscall.SIGINT:
		return core.StopRequested{Source: source}, true
	case syscall.SIGTTIN:
		return core.ScaleBy{Delta: 1, Source: source}, true
	case syscall.SIGTTOU:
		return core.ScaleBy{Delta: -1, Source: source}, true
	}
	return nil, false
}
