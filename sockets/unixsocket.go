package sockets

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// unixSocketFile is the file a unix listener created, identified by device
// and inode so that Close removes it only if it is still ours.
type unixSocketFile struct {
	path     string
	dev, ino uint64
}

func (u *unixSocketFile) remove() error {
	var st unix.Stat_t
	if err := unix.Lstat(u.path, &st); err != nil {
		return nil // already gone
	}
	if st.Dev != u.dev || st.Ino != u.ino {
		return nil // someone else's socket now
	}
	if err := os.Remove(u.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove socket file: %w", err)
	}
	return nil
}

// bindUnix binds a unix stream socket at spec.Address:
//
//   - the directory must exist (it is not created);
//   - an existing socket file nobody accepts on (connect is refused) is
//     stale and replaced; one that accepts is "in use"; an existing path
//     that is not a socket is never touched;
//   - the file is chmod'ed to the spec's mode between bind and listen, so no
//     client can connect under the umask's permissions.
func bindUnix(spec Spec) (*Listener, error) {
	path := spec.Address
	fail := func(reason string, err error) (*Listener, error) {
		return nil, &BindError{Spec: spec, Reason: reason, Err: err}
	}
	dir := filepath.Dir(path)
	switch fi, err := os.Stat(dir); {
	case errors.Is(err, fs.ErrNotExist):
		return fail(fmt.Sprintf("directory %s does not exist", dir), err)
	case err != nil:
		return fail(fmt.Sprintf("cannot access directory %s: %v", dir, errnoOf(err)), err)
	case !fi.IsDir():
		return fail(fmt.Sprintf("%s is not a directory", dir), syscall.ENOTDIR)
	}
	if err := clearStale(spec); err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail("socket: "+err.Error(), err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		switch err {
		case unix.EADDRINUSE:
			return fail("address already in use (the path was created while binding)", err)
		case unix.EACCES, unix.EPERM:
			return fail(fmt.Sprintf("permission denied creating the socket file in %s", dir), err)
		case unix.EROFS:
			return fail(fmt.Sprintf("%s is on a read-only file system", dir), err)
		}
		return fail("bind: "+err.Error(), err)
	}
	defer func() {
		if !ok {
			os.Remove(path)
		}
	}()
	if err := os.Chmod(path, spec.unixMode()); err != nil {
		return fail(fmt.Sprintf("chmod %#o: %v", uint32(spec.unixMode()), errnoOf(err)), err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return fail("stat the new socket file: "+err.Error(), err)
	}
	if err := unix.Listen(fd, listenBacklog); err != nil {
		return fail("listen: "+err.Error(), err)
	}
	ok = true
	return &Listener{
		spec:   spec,
		file:   os.NewFile(uintptr(fd), spec.String()),
		addr:   &net.UnixAddr{Name: path, Net: "unix"},
		socket: &unixSocketFile{path: path, dev: st.Dev, ino: st.Ino},
	}, nil
}

// listenBacklog asks for the largest accept queue; the kernel caps it at
// net.core.somaxconn.
const listenBacklog = 1<<16 - 1

// clearStale makes spec.Address free to bind, or says why it is not.
func clearStale(spec Spec) error {
	path := spec.Address
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return &BindError{Spec: spec, Reason: fmt.Sprintf("cannot inspect %s: %v", path, errnoOf(err)), Err: err}
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return &BindError{Spec: spec,
			Reason: fmt.Sprintf("%s exists and is not a socket (%s); refusing to replace it", path, fileKind(fi.Mode())),
			Err:    syscall.EEXIST}
	}
	switch err := probeUnix(path); err {
	case nil, unix.EAGAIN:
		// Accepted, or a listener whose queue is full: alive either way.
		return &BindError{Spec: spec, Reason: "address already in use (another process accepts on this socket)", Err: syscall.EADDRINUSE}
	case unix.ECONNREFUSED:
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return &BindError{Spec: spec, Reason: fmt.Sprintf("remove stale socket file: %v", errnoOf(err)), Err: err}
		}
		return nil
	case unix.ENOENT:
		return nil // removed meanwhile
	case unix.EPROTOTYPE:
		return &BindError{Spec: spec, Reason: "address already in use (by a socket of another type)", Err: syscall.EADDRINUSE}
	default:
		return &BindError{Spec: spec, Reason: fmt.Sprintf("cannot tell whether %s is in use: %v", path, err), Err: err}
	}
}

// probeUnix connects to the socket file at path without blocking and
// returns the connect error (nil: someone accepted).
func probeUnix(path string) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Connect(fd, &unix.SockaddrUnix{Name: path})
}

// errnoOf shortens *fs.PathError to its errno text (the path is already in
// the message around it).
func errnoOf(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func fileKind(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "a regular file"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	}
	return "mode " + m.String()
}
