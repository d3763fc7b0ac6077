//go:build !unix

package worker

import (
	"fmt"
	"runtime"
)

// adopt fails where descriptors are not inherited by number (Windows,
// Plan 9, WebAssembly): no supervisor passes sockets there, so a program
// finds LISTEN_FDS unset and listens by itself (ErrNotActivated).
func adopt(fd int, name string) (Socket, error) {
	return Socket{Name: name, FD: fd}, fmt.Errorf("worker: inherited fd %d (%s): %s does not pass sockets by descriptor number; listen by yourself", fd, name, runtime.GOOS)
}
