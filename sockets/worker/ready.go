package worker

import (
	"fmt"
	"net"

	"github.com/dutchmaster/dutchmaster/sockets/wire"
)

// Ready tells the master that this worker accepts connections, so that it
// may drain the worker this one replaces. It sends {"event":"ready"} on the
// IPC channel when there is one, else READY=1 to NOTIFY_SOCKET; with neither
// (running by hand) it does nothing and returns nil.
//
// Only the first successful call sends; later calls return nil. Call it once
// every listener the worker serves is being accepted on (ServeHTTP does it
// for one).
func Ready() error { return current().ready() }

func (in *inherited) ready() error {
	in.readyMu.Lock()
	defer in.readyMu.Unlock()
	if in.readySent {
		return nil
	}
	var err error
	switch {
	case in.ch != nil:
		err = in.ch.send(wire.Event{Event: wire.EventReady})
	case in.chErr != nil:
		return in.chErr
	case in.notifyAddr != "":
		err = notify(in.notifyAddr, "READY=1")
	default:
		return nil
	}
	if err == nil {
		in.readySent = true
	}
	return err
}

// notify sends one sd_notify datagram to addr (a path, or @name for the
// abstract namespace). The kernel attaches this process's credentials, which
// is how the master knows who sent it.
func notify(addr, state string) error {
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("worker: sd_notify %s: %w", addr, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("worker: sd_notify %s: %w", addr, err)
	}
	return nil
}
