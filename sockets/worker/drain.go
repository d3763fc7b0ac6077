package worker

import (
	"os"
	"os/signal"
	"syscall"
)

// Drained returns a channel that is closed when the master asks this worker
// to drain: {"event":"disconnect"} or EOF on the IPC channel (what Node.js
// reports as 'disconnect'), or SIGTERM. After it closes the worker should
// stop accepting, finish what is in flight and exit by itself; the master
// sends SIGKILL after its --kill-timeout (30 s by default), counted from the
// start of the drain.
//
// The first call starts watching: from then on SIGTERM no longer kills the
// process, it closes the channel (and later ones are ignored). A worker that
// never calls Drained (or ServeHTTP) keeps Go's default SIGTERM behaviour.
func Drained() <-chan struct{} {
	in := current()
	in.watch(true)
	return in.drained
}

// watch starts the drain watchers once: the IPC channel's reader and, if
// sigterm, a SIGTERM handler. The goroutines live as long as their source.
func (in *inherited) watch(sigterm bool) {
	in.watchOnce.Do(func() {
		if sigterm {
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGTERM)
			go func() {
				<-sig
				in.drain()
			}()
		}
		if in.ch != nil {
			go in.ch.watch(in.drain)
		}
	})
}

func (in *inherited) drain() { in.drainOnce.Do(func() { close(in.drained) }) }
