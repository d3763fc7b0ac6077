package wire

import (
	"strconv"
	"strings"
)

// Assignment is one KEY=VALUE line of an sd_notify payload.
type Assignment struct {
	Key, Value string
}

// Assignments is an sd_notify payload, parsed: its KEY=VALUE lines in order.
type Assignments []Assignment

// ParseNotify splits an sd_notify payload into its KEY=VALUE assignments,
// in order. It is the one reader of sd_notify payloads, the master's
// notify socket and a worker's readiness alike, so a datagram means the
// same everywhere. As systemd splits a datagram (strv_split_newlines), a
// line ends at '\n' or '\r', so "READY=1\r\n" counts; empty lines and
// lines without '=' or with an empty key are skipped; values are kept
// verbatim. A key may repeat: readers take the last assignment (Lookup).
func ParseNotify(payload string) Assignments {
	var out Assignments
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
func (as Assignments) Lookup(key string) (string, bool) {
	for i := len(as) - 1; i >= 0; i-- {
		if as[i].Key == key {
			return as[i].Value, true
		}
	}
	return "", false
}

// Ready reports READY=1: the sender finished starting (or reloading).
func (as Assignments) Ready() bool { return as.is("READY", "1") }

// Stopping reports STOPPING=1: the sender began shutting down.
func (as Assignments) Stopping() bool { return as.is("STOPPING", "1") }

// Watchdog reports WATCHDOG=1, a keep-alive ping (WATCHDOG=trigger is not
// a ping; read it with Lookup).
func (as Assignments) Watchdog() bool { return as.is("WATCHDOG", "1") }

// WatchdogTrigger reports WATCHDOG=trigger: the sender found itself
// broken and asks for the watchdog's action at once.
func (as Assignments) WatchdogTrigger() bool { return as.is("WATCHDOG", "trigger") }

// ExtendTimeout returns EXTEND_TIMEOUT_USEC=..., in microseconds: the
// sender asks for that much more time from now to finish what it is doing
// (starting, for a worker). ok is false when it is absent or not a
// positive count.
func (as Assignments) ExtendTimeout() (usec uint64, ok bool) {
	v, found := as.Lookup("EXTEND_TIMEOUT_USEC")
	if !found {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 64)
	return n, err == nil && n > 0
}

// Status returns STATUS=..., a one-line human-readable state.
func (as Assignments) Status() (string, bool) { return as.Lookup("STATUS") }

func (as Assignments) is(key, want string) bool {
	v, ok := as.Lookup(key)
	return ok && v == want
}
