package sockets

import "github.com/dutchmaster/dutchmaster/sockets/wire"

// Notification is one sd_notify datagram and who sent it. Its assignments
// are read with wire.Assignments' methods (Ready, Lookup, ...).
type Notification struct {
	PID, UID, GID int    // the sender, from the kernel's SCM_CREDENTIALS
	Payload       string // the datagram as received
	wire.Assignments
}
