package osproc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// FindCommand fails early for a worker command that does not exist or
// cannot be run, so the operator hears about it before any worker
// starts, rather than from every fork. A name with a slash is a path,
// relative to dir when dir is set; any other name is looked up in PATH.
func FindCommand(name, dir string) error {
	if strings.Contains(name, "/") {
		path := name
		if !filepath.IsAbs(path) && dir != "" {
			path = filepath.Join(dir, path)
		}
		fi, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("worker command %s: %w", name, errors.Unwrap(err))
		}
		if fi.IsDir() || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("worker command %s: not an executable file", name)
		}
		return nil
	}
	if _, err := exec.LookPath(name); err != nil {
		return fmt.Errorf("worker command %s: not found in PATH", name)
	}
	return nil
}
