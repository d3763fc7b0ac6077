//go:build !plan9

package worker

import (
	"errors"
	"syscall"
)

// peerGone: a write failed because the master's end is closed.
func peerGone(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}
