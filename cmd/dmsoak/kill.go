package main

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/dutchmaster/dutchmaster/cmd/internal/loadtest"
)

// kill is one worker SIGKILLed by the soak, with the connections it held.
type kill struct {
	Worker int       `json:"worker"`
	PID    int       `json:"pid"`
	At     time.Time `json:"at"`
	During bool      `json:"during_rollout"`
	// Ports are the client-side ports of the connections the worker had
	// accepted when it was killed.
	Ports map[int]bool `json:"-"`
	Conns int          `json:"connections"`
}

// killWorker SIGKILLs the worker with pid, which serves on port, and
// records the connections it held. It stops the worker first (SIGSTOP, and
// waits until every thread has stopped), so that the connections it reads
// are all the worker has when SIGKILL lands: a stopped process accepts
// nothing more. The signals go through a pidfd (os.FindProcess), so a pid
// reused meanwhile is never hit.
func killWorker(worker, pid, port int) (*kill, error) {
	p, err := os.FindProcess(pid)
	if err != nil {
		return nil, err
	}
	defer p.Release()
	if err := loadtest.StopAndWait(p, time.Second); err != nil {
		if errors.Is(err, os.ErrProcessDone) {
			return nil, err
		}
		p.Signal(syscall.SIGKILL)
		return nil, fmt.Errorf("worker %d (pid %d): %w", worker, pid, err)
	}
	ports, perr := loadtest.PeerPorts(pid, port)
	k := &kill{Worker: worker, PID: pid, At: time.Now(), Ports: ports, Conns: len(ports)}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return nil, fmt.Errorf("worker %d (pid %d): %w", worker, pid, err)
	}
	if perr != nil {
		return k, fmt.Errorf("worker %d (pid %d): reading its connections: %w", worker, pid, perr)
	}
	return k, nil
}

// excusedBy returns the kill that explains a failure, or nil: the failure
// happened on a connection that the killed worker held when it was killed
// (its client-side port among the worker's connections, dialed before the
// kill, failed after it). A failed dial is never excused: the listening
// socket belongs to the master and outlives every worker.
func excusedBy(f loadtest.Failure, kills []*kill) *kill {
	if f.LocalPort == 0 {
		return nil
	}
	for _, k := range kills {
		if k.Ports[f.LocalPort] && !f.Dialed.After(k.At) && !f.End.Before(k.At) {
			return k
		}
	}
	return nil
}
