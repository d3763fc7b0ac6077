package control

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// EnvControl names the environment variable that gives the control
// socket's path to both the master and `dutchmaster ctl`, when neither is
// told one: set once (a container image's ENV, a login profile), it makes
// both agree whatever their names and working directories.
const EnvControl = "DUTCHMASTER_CONTROL"

// DefaultDir is the directory of the default control sockets:
// $XDG_RUNTIME_DIR/dutchmaster when XDG_RUNTIME_DIR is set, /run/dutchmaster
// for root, else dutchmaster-UID in the temporary directory ($TMPDIR, else
// /tmp). It never depends on the working directory, so that a ctl run from
// anywhere finds the master.
func DefaultDir() string {
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
		return filepath.Join(dir, "dutchmaster")
	}
	uid := os.Geteuid()
	if uid == 0 {
		return "/run/dutchmaster"
	}
	return filepath.Join(os.TempDir(), "dutchmaster-"+strconv.Itoa(uid))
}

// SocketFile is the file name of a master's default control socket in
// DefaultDir: dutchmaster.sock, or dutchmaster-NAME.sock for a named one.
func SocketFile(name string) string {
	if name == "" {
		return "dutchmaster.sock"
	}
	return "dutchmaster-" + name + ".sock"
}

// DefaultPath is where a master named name puts its control socket when
// not told, and where ctl looks for it: $DUTCHMASTER_CONTROL if set, else
// SocketFile(name) in DefaultDir.
func DefaultPath(name string) string {
	if p := os.Getenv(EnvControl); p != "" {
		return p
	}
	return filepath.Join(DefaultDir(), SocketFile(name))
}

// InDefaultDir reports whether path's directory is DefaultDir.
func InDefaultDir(path string) bool {
	return filepath.Clean(filepath.Dir(path)) == filepath.Clean(DefaultDir())
}

// PrepareDir makes the directory of a control socket at path ready, when
// that directory is DefaultDir (any other directory is the operator's and
// left as it is): created mode 0700 if missing (its parent must exist),
// then checked by CheckDir.
func PrepareDir(path string) error {
	if !InDefaultDir(path) {
		return nil
	}
	dir := filepath.Dir(path)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("control socket directory %s: %w", dir, err)
	}
	return CheckDir(dir)
}

// CheckDir refuses a control socket directory that someone else could
// have planted or could write in: it must be a directory (not a symbolic
// link), owned by this process's effective user, and writable by no group
// and no other user. Otherwise another local user could put a socket of
// theirs where ctl looks (and be sent its commands), or remove the
// master's. A missing directory is not an error here.
func CheckDir(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket directory %s: %w", dir, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	uid := os.Geteuid()
	switch {
	case !fi.IsDir():
		return fmt.Errorf("control socket directory %s: not a directory (%s); refusing to use it: remove it, or give --control or $%s", dir, fi.Mode().Type(), EnvControl)
	case !ok || int(st.Uid) != uid:
		owner := -1
		if ok {
			owner = int(st.Uid)
		}
		return fmt.Errorf("control socket directory %s: owned by uid %d, not by this user (uid %d); refusing to use it: remove it, or give --control or $%s", dir, owner, uid, EnvControl)
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("control socket directory %s: mode %04o lets other users write in it; refusing to use it: chmod 0700 it, or give --control or $%s", dir, fi.Mode().Perm(), EnvControl)
	}
	return nil
}
