package sockets

import (
	"fmt"
)

// SpecError reports a --listen value that cannot be parsed. Its message names
// the value and what is wrong: --listen "tcp://x": missing port.
type SpecError struct {
	Spec   string // the value as given
	Reason string
}

func (e *SpecError) Error() string { return fmt.Sprintf("--listen %q: %s", e.Spec, e.Reason) }

// BindError reports a listener that could not be bound. Its message starts
// with the listener's address: tcp://127.0.0.1:80: address already in use.
// Err is the underlying cause (a syscall.Errno such as syscall.EADDRINUSE
// where there is one), so errors.Is works on it.
type BindError struct {
	Spec   Spec
	Reason string // human explanation; Err's text when empty
	Err    error
}

func (e *BindError) Error() string {
	reason := e.Reason
	if reason == "" && e.Err != nil {
		reason = e.Err.Error()
	}
	return e.Spec.URL() + ": " + reason
}

func (e *BindError) Unwrap() error { return e.Err }
