package control

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// socketFile is the control socket's file when the socket was taken over
// from the previous image: the new image removes it at Close as the one
// that bound it would have, but only while the path still names the file
// it found there (someone may have bound another socket at the path).
type socketFile struct {
	path     string
	dev, ino uint64
}

func statSocketFile(path string) (*socketFile, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return nil, fmt.Errorf("%s: the inherited control socket's file: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, fmt.Errorf("%s: not a socket file", path)
	}
	return &socketFile{path: path, dev: st.Dev, ino: st.Ino}, nil
}

func (f *socketFile) remove() error {
	var st unix.Stat_t
	if err := unix.Lstat(f.path, &st); err != nil || st.Dev != f.dev || st.Ino != f.ino {
		return nil // gone, or someone else's now
	}
	if err := os.Remove(f.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove socket file: %w", err)
	}
	return nil
}
