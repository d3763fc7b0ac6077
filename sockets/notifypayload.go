package sockets

import "strings"

// Notification is one sd_notify datagram and who sent it.
type Notification struct {
	PID, UID, GID int    // the sender, from the kernel's SCM_CREDENTIALS
	Payload       string // the datagram as received
	Assignments   []Assignment
}

// Assignment is one KEY=VALUE line of an sd_notify payload.
type Assignment struct {
	Key, Value string
}

// ParseNotify splits an sd_notify payload into its KEY=VALUE assignments,
// in order. It is the one reader of sd_notify payloads: the master's
// readiness (actors.NotifyReady) reads through it too, so a datagram means
// the same everywhere. As systemd splits a datagram (strv_split_newlines),
// a line ends at '\n' or '\r', so "READY=1\r\n" counts; empty lines and
// lines without '=' or with an empty key are skipped; values are kept
// verbatim. A key may repeat: readers take the last assignment (Lookup).
func ParseNotify(payload string) []Assignment {
	var out []Assignment
	for line := range strings.FieldsFuncSeq(payload, isNotifyNewline) {
		key, value, ok := strings.Cut(line, "=")
		if !ok || key == "" {
			continue
		}
		out = append(out, Assignment{Key: key, Value: value})
	}
	return out
}

func isNotifyNewline(r rune) bool { return r == '\n' || r == '\r' }

// Lookup returns the value of the last assignment of key, as systemd reads
// a datagram that repeats one.
func (n Notification) Lookup(key string) (string, bool) {
	for i := len(n.Assignments) - 1; i >= 0; i-- {
		if n.Assignments[i].Key == key {
			return n.Assignments[i].Value, true
		}
	}
	return "", false
}

// Ready reports READY=1: the sender finished starting (or reloading).
func (n Notification) Ready() bool { return n.is("READY", "1") }

// Stopping reports STOPPING=1: the sender began shutting down.
func (n Notification) Stopping() bool { return n.is("STOPPING", "1") }

// Watchdog reports WATCHDOG=1, a keep-alive ping (WATCHDOG=trigger is not
// a ping; read it with Lookup).
func (n Notification) Watchdog() bool { return n.is("WATCHDOG", "1") }

// Status returns STATUS=..., a one-line human-readable state.
func (n Notification) Status() (string, bool) { return n.Lookup("STATUS") }

func (n Notification) is(key, want string) bool {
	v, ok := n.Lookup(key)
	return ok && v == want
}
