package osproc

import (
	"os"
	"path/filepath"
	"syscall"

	"github.com/dutchmaster/dutchmaster/sockets/nodepreload"
)

// nodePreloadEnv returns the variables that load dutchmaster's preload
// module into a Node.js cluster worker whose environment is env, or none
// when Config.NodePreload is off or the module cannot be written (a
// warning, once: the worker then runs as under Node's own cluster). The
// module is written at the first fork that needs it and removed by Close.
func (r *Runtime) nodePreloadEnv(cfg Config, env []string) []string {
	if !cfg.NodeCluster || !cfg.NodePreload {
		return nil
	}
	r.mu.Lock()
	path, err := r.preload, error(nil)
	if path == "" && !r.preloadFailed {
		path, err = nodepreload.Write(preloadDir(cfg.Credential))
		r.preload, r.preloadFailed = path, err != nil
	}
	r.mu.Unlock()
	if err != nil {
		cfg.Logger.Warn().Err(err).Msg("node workers start without the preload module: keep-alive connections are not drained")
	}
	if path == "" {
		return nil
	}
	return nodepreload.Env(env, path, cfg.NodeGrace)
}

// preloadDir is where the module goes: the temporary directory, unless
// the workers run as another user who could not reach into it (a private
// TMPDIR), then /tmp.
func preloadDir(cred *syscall.Credential) string {
	dir := os.TempDir()
	if cred == nil || worldSearchable(dir) {
		return dir
	}
	return "/tmp"
}

// worldSearchable reports whether every directory on dir's path lets
// anyone through (o+x).
func worldSearchable(dir string) bool {
	dir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return false
	}
	for {
		fi, err := os.Stat(dir)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

// removePreload removes the module's directory (Close).
func (r *Runtime) removePreload() error {
	r.mu.Lock()
	path := r.preload
	r.preload = ""
	r.mu.Unlock()
	if path == "" {
		return nil
	}
	return os.RemoveAll(filepath.Dir(path))
}
