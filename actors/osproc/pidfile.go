package osproc

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// PIDFile is a pidfile held by this master: the file holds its pid and
// an exclusive flock(2) on it for the master's whole life. "Held by a
// live master" means exactly "locked": the kernel drops the lock when its
// holder dies, however it dies, so a file left by a killed master is
// taken over, and a reused pid never fools the check.
type PIDFile struct {
	path     string
	f        *os.File
	dev, ino uint64
}

// ErrPIDFileHeld is CreatePIDFile's error for a file a running master
// holds.
var ErrPIDFileHeld = errors.New("held by a running master")

// CreatePIDFile takes path, or says which master holds it. Its errors
// start with the path.
func CreatePIDFile(path string) (*PIDFile, error) {
	// The file can be removed between open and lock by the master that
	// held it, exiting; then the lock is on a file nobody sees, and the
	// open is tried again.
	for range 5 {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644) // close-on-exec, as every os.OpenFile
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, errors.Unwrap(err))
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			held, _ := os.ReadFile(path)
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				pid := strings.TrimSpace(string(held))
				if _, err := strconv.Atoi(pid); err != nil {
					pid = "unknown"
				}
				return nil, fmt.Errorf("%s: %w (pid %s)", path, ErrPIDFileHeld, pid)
			}
			return nil, fmt.Errorf("%s: lock: %w", path, err)
		}
		var open, named unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &open); err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if err := unix.Stat(path, &named); err != nil || named.Dev != open.Dev || named.Ino != open.Ino {
			f.Close()
			continue
		}
		if err := f.Truncate(0); err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return &PIDFile{path: path, f: f, dev: open.Dev, ino: open.Ino}, nil
	}
	return nil, fmt.Errorf("%s: replaced again and again while being locked", path)
}

// Remove deletes the file, if it is still this master's, then drops the
// lock (in that order, so that no other master takes a file about to go).
func (p *PIDFile) Remove() {
	var st unix.Stat_t
	if err := unix.Stat(p.path, &st); err == nil && st.Dev == p.dev && st.Ino == p.ino {
		os.Remove(p.path)
	}
	p.f.Close()
}

// FD is the descriptor that holds the file's lock: an upgrade in place
// hands it to the new image, which keeps the lock (AdoptPIDFile).
func (p *PIDFile) FD() int { return int(p.f.Fd()) }

// AdoptPIDFile takes over the pidfile at path whose locked descriptor fd
// an old image of this master handed over (an upgrade in place: same
// pid, same file, the lock never dropped).
func AdoptPIDFile(path string, fd int) (*PIDFile, error) {
	f := os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: the handed-over descriptor: %w", path, err)
	}
	return &PIDFile{path: path, f: f, dev: st.Dev, ino: st.Ino}, nil
}
