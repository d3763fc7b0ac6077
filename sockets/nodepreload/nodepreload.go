// Package nodepreload is the module that dutchmaster loads into its
// Node.js cluster workers (preload.cjs, embedded here), and what a worker's
// environment needs to load it. The module makes an unmodified Node.js app
// drain as a worker written for dutchmaster does (docs/node.md, "Drain"):
// at the cluster's disconnect or the stop signal, every server stops
// accepting; for a grace, HTTP responses say "Connection: close" and idle
// keep-alive connections stay open; then the idle ones get a lingering
// close (never a reset), and the app's own SIGTERM or SIGINT handlers run.
// It also reports readiness for servers that bypass the cluster primary,
// sends heartbeats under WATCHDOG_USEC, and asks for its replacement after
// DUTCHMASTER_MAX_REQUESTS requests.
//
// The master writes the module to a file (Write) that every user can
// read, since workers may run as another user, and adds `--require FILE`
// to the worker's NODE_OPTIONS (Env), after the app's own options. The
// module takes its --require out of process.env.NODE_OPTIONS at start, so
// the node processes the app starts do not load it.
package nodepreload

import (
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

//go:embed preload.cjs
var source []byte

const (
	// FileName is the module's file name; the module knows its own
	// --require in NODE_OPTIONS by it. The .cjs extension keeps it
	// CommonJS whatever package.json says, so that ESM apps load it too.
	FileName = "dutchmaster-node-preload.cjs"
	// EnvGrace is the grace in milliseconds.
	EnvGrace = "DUTCHMASTER_NODE_GRACE_MS"
	// EnvNodeOptions is Node's own variable of options.
	EnvNodeOptions = "NODE_OPTIONS"
	// DefaultGrace is the grace when none is set: Node's default
	// keepAliveTimeout, so that every connection idle at the drain's start
	// has its whole keep-alive window to send a last request.
	DefaultGrace = 5 * time.Second
)

// Source returns the module's text.
func Source() []byte { return slices.Clone(source) }

// Write writes the module into a new directory under dir (os.TempDir() if
// dir is empty), the directory mode 0755 and the file 0444, and returns
// the file's path. The caller removes filepath.Dir(path) when no worker
// needs it any more.
func Write(dir string) (string, error) {
	tmp, err := os.MkdirTemp(dir, "dutchmaster-node-")
	if err != nil {
		return "", fmt.Errorf("node preload module: %w", err)
	}
	path := filepath.Join(tmp, FileName)
	err = os.Chmod(tmp, 0o755)
	if err == nil {
		err = os.WriteFile(path, source, 0o444)
	}
	if err == nil {
		err = os.Chmod(path, 0o444) // whatever the umask
	}
	if err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("node preload module: %w", err)
	}
	return path, nil
}

// Env returns the variables that load the module at path into a worker
// whose environment is env (KEY=VALUE; the last of a key wins, as in
// os/exec): NODE_OPTIONS, the last one's value with `--require "path"`
// added at its end, and the grace. Appended to env, they win.
func Env(env []string, path string, grace time.Duration) []string {
	opts := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, EnvNodeOptions+"="); ok {
			opts = v
		}
	}
	if opts != "" {
		opts += " "
	}
	opts += "--require " + quote(path)
	return []string{
		EnvNodeOptions + "=" + opts,
		EnvGrace + "=" + strconv.FormatInt(grace.Milliseconds(), 10),
	}
}

// quote puts s in double quotes as Node reads NODE_OPTIONS: a backslash
// escapes the next character.
func quote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}
