package nodecluster

import (
	"errors"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// libuv errors as Node reports them on Linux: the negated errno
// (UV__ERR(x) = -x), so a worker's listen() fails with the error code Node
// would have given, e.g. "listen EADDRINUSE: address already in use".
const (
	UVEADDRINUSE = -int(syscall.EADDRINUSE) // -98
	UVEACCES     = -int(syscall.EACCES)     // -13
	UVEINVAL     = -int(syscall.EINVAL)     // -22
	UVEBADF      = -int(syscall.EBADF)      // -9
)

// UVErrno is the libuv error number for err: the negated errno it wraps,
// or UV_EINVAL when it wraps none (what Node's primary answers for a query
// it cannot make sense of). nil is 0.
func UVErrno(err error) int {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if errors.As(err, &errno) && errno != 0 {
		return -int(errno)
	}
	return UVEINVAL
}

// ErrnoName is the code Node gives a libuv error number: -98 is
// EADDRINUSE. 0 is "OK"; an unknown number prints as itself.
func ErrnoName(uv int) string {
	if uv == 0 {
		return "OK"
	}
	if name := unix.ErrnoName(syscall.Errno(-uv)); name != "" {
		return name
	}
	return strconv.Itoa(uv)
}
