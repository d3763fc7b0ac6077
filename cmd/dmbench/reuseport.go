package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/dutchmaster/dutchmaster/sockets/reuseport"

	"github.com/dutchmaster/dutchmaster/cmd/internal/loadtest"
)

// reusePortWorkers are N copies of the example worker started directly,
// without dutchmaster, each binding the same address with SO_REUSEPORT
// (HELLO_REUSEPORT): the kernel spreads connections over N accept queues
// instead of one shared queue. It is the baseline for the shared socket's
// throughput.
type reusePortWorkers struct {
	addr  string
	procs []*exec.Cmd
	exits []chan error

	stopped bool
	stopErr error
}

// startReusePort starts n workers on one 127.0.0.1 port and waits until
// each says it serves. The port is held by a SO_REUSEPORT socket of our own
// until they all bound it, then released.
func startReusePort(bin loadtest.Binaries, n int, boot, work, patience time.Duration) (*reusePortWorkers, error) {
	hold, err := reusePortListen("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer hold.Close()
	w := &reusePortWorkers{addr: hold.Addr().String()}
	serving := make(chan error, n)
	for range n {
		cmd := exec.Command(bin.Hello)
		cmd.Env = append(os.Environ(),
			"HELLO_REUSEPORT="+w.addr,
			"HELLO_BOOT_DELAY="+boot.String(),
			"HELLO_WORK="+work.String())
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		stderr, err := cmd.StderrPipe()
		if err != nil {
			w.stop(patience)
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			w.stop(patience)
			return nil, err
		}
		exit := make(chan error, 1)
		w.procs = append(w.procs, cmd)
		w.exits = append(w.exits, exit)
		go func() {
			sc := bufio.NewScanner(stderr)
			said := false
			for sc.Scan() {
				if !said && strings.Contains(sc.Text(), "with SO_REUSEPORT") {
					said = true
					serving <- nil
				}
			}
			if !said {
				serving <- fmt.Errorf("reuseport worker (pid %d) exited before serving", cmd.Process.Pid)
			}
			exit <- cmd.Wait()
		}()
	}
	timer := time.NewTimer(patience)
	defer timer.Stop()
	for range n {
		select {
		case err := <-serving:
			if err != nil {
				w.stop(patience)
				return nil, err
			}
		case <-timer.C:
			w.stop(patience)
			return nil, fmt.Errorf("reuseport workers not serving within %s", patience)
		}
	}
	return w, nil
}

func (w *reusePortWorkers) pids() []int {
	var out []int
	for _, p := range w.procs {
		out = append(out, p.Process.Pid)
	}
	return out
}

// stop sends SIGTERM (a graceful drain) to each worker, by pid, and
// SIGKILL to those still alive after patience. Later calls return the
// first one's result.
func (w *reusePortWorkers) stop(patience time.Duration) error {
	if w.stopped {
		return w.stopErr
	}
	w.stopped = true
	for _, p := range w.procs {
		p.Process.Signal(syscall.SIGTERM)
	}
	timer := time.NewTimer(patience)
	defer timer.Stop()
	var errs []error
	for i, exit := range w.exits {
		select {
		case <-exit:
		case <-timer.C:
			w.procs[i].Process.Kill()
			<-exit
			errs = append(errs, fmt.Errorf("reuseport worker (pid %d) killed after %s", w.procs[i].Process.Pid, patience))
		}
	}
	w.stopErr = errors.Join(errs...)
	return w.stopErr
}

// reusePortListen binds addr with SO_REUSEPORT, as the workers of the
// baseline do.
func reusePortListen(addr string) (net.Listener, error) {
	lc := reuseport.ListenConfig()
	return lc.Listen(context.Background(), "tcp", addr)
}
