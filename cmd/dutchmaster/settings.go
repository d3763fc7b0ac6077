//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/dutchmaster/dutchmaster"
	"github.com/dutchmaster/dutchmaster/fsm"
	"github.com/dutchmaster/dutchmaster/sockets/control"
)

// settings are the flags and the config file's keys, with the same names.
// Values stay text until resolve, so both sources are checked by one code
// path and every error names the key.
type settings struct {
	Workers         string   `yaml:"workers"`
	Listen          []string `yaml:"listen"`
	RestartSignal   string   `yaml:"restart-signal"`
	UpgradeSignal   string   `yaml:"upgrade-signal"`
	StopSignal      string   `yaml:"stop-signal"`
	KillTimeout     string   `yaml:"kill-timeout"`
	Ready           string   `yaml:"ready"`
	ReadyTimeout    string   `yaml:"ready-timeout"`
	Drain           string   `yaml:"drain"`
	MaxSurge        string   `yaml:"max-surge"`
	Env             []string `yaml:"env"`
	Dir             string   `yaml:"dir"`
	BeforeFork      string   `yaml:"before-fork"`
	LogFormat       string   `yaml:"log-format"`
	LogLevel        string   `yaml:"log-level"`
	LogWorkerOutput string   `yaml:"log-worker-output"`
	LogTail         string   `yaml:"log-tail"`
	Policy          string   `yaml:"policy"`
	CanarySoak      string   `yaml:"canary-soak"`
	Backoff         string   `yaml:"backoff"`
	BackoffMax      string   `yaml:"backoff-max"`
	BackoffReset    string   `yaml:"backoff-reset"`
	Watchdog        string   `yaml:"watchdog"`
	MaxMemory       string   `yaml:"max-memory"`
	MemoryInterval  string   `yaml:"memory-interval"`
	MaxMemoryJitter string   `yaml:"max-memory-jitter"`
	MaxLifetime     string   `yaml:"max-lifetime"`
	LifetimeJitter  string   `yaml:"max-lifetime-jitter"`
	MaxRequests     string   `yaml:"max-requests"`
	RequestsJitter  string   `yaml:"max-requests-jitter"`
	RecycleConc     string   `yaml:"recycle-concurrency"`
	WorkerProtocol  string   `yaml:"worker-protocol"`
	Balance         string   `yaml:"balance"`
	NodePreload     string   `yaml:"node-preload"`
	NodeGrace       string   `yaml:"node-grace"`
	Name            string   `yaml:"name"`
	Control         string   `yaml:"control"`
	Metrics         string   `yaml:"metrics"`
	Record          string   `yaml:"record"`
	PIDFile         string   `yaml:"pidfile"`
	Subreaper       string   `yaml:"subreaper"`
	EnvClear        string   `yaml:"env-clear"`
	EnvAllow        []string `yaml:"env-allow"`
	User            string   `yaml:"user"`
	Group           string   `yaml:"group"`
	Command         []string `yaml:"command"`

	configFile string // the --config file, re-read at every rolling restart
}

// option is one flag and config key.
type option struct {
	name, usage string
	// field is the dutchmaster.Options field the option sets, as the
	// errors of dutchmaster.Run name it (Options.FIELD); none for the
	// options of the binary alone.
	field  string
	text   func(*settings) *string   // a single value
	list   func(*settings) *[]string // a repeatable value
	isBool bool
}

// options lists every flag but --config, in the order of the usage text.
var options = []option{
	{name: "workers", field: "Workers", usage: "number of workers, or auto (= max(CPUs, 2)); re-evaluated at every rolling restart", text: func(s *settings) *string { return &s.Workers }},
	{name: "listen", field: "Listen", usage: "listener `SPEC`: [NAME=]tcp://HOST:PORT, tcp6://[::1]:PORT, unix:///path.sock, udp://HOST:PORT (repeatable)", list: func(s *settings) *[]string { return &s.Listen }},
	{name: "policy", field: "PolicyName", usage: "rolling restart policy: " + oneOf(dutchmaster.PolicyNames()), text: func(s *settings) *string { return &s.Policy }},
	{name: "max-surge", field: "MaxSurge", usage: "replacements starting at once (rolling, canary)", text: func(s *settings) *string { return &s.MaxSurge }},
	{name: "canary-soak", field: "CanarySoak", usage: "how long the canary must stay up before the rest roll (canary)", text: func(s *settings) *string { return &s.CanarySoak }},
	{name: "restart-signal", field: "RestartSignal", usage: "signal that starts a rolling restart: SIGUSR2, SIGHUP, SIGUSR1, SIGQUIT or SIGWINCH", text: func(s *settings) *string { return &s.RestartSignal }},
	{name: "upgrade-signal", field: "UpgradeSignal", usage: "signal that upgrades the master in place to the binary it was started from, as ctl upgrade does (default: none)", text: func(s *settings) *string { return &s.UpgradeSignal }},
	{name: "stop-signal", field: "StopSignal", usage: "signal that drains a worker that does not speak IPC", text: func(s *settings) *string { return &s.StopSignal }},
	{name: "kill-timeout", field: "KillTimeout", usage: "SIGKILL a draining worker still alive after this long", text: func(s *settings) *string { return &s.KillTimeout }},
	{name: "ready", field: "Ready", usage: "what counts as ready: auto, ipc, notify or timer:DURATION", text: func(s *settings) *string { return &s.Ready }},
	{name: "ready-timeout", field: "ReadyTimeout", usage: "kill a worker not ready after this long", text: func(s *settings) *string { return &s.ReadyTimeout }},
	{name: "drain", field: "Drain", usage: "how to ask a worker to stop: auto, ipc, signal or both", text: func(s *settings) *string { return &s.Drain }},
	{name: "backoff", field: "Backoff.Initial", usage: "wait before re-forking a slot after its second failure in a row, doubled each time", text: func(s *settings) *string { return &s.Backoff }},
	{name: "backoff-max", field: "Backoff.Max", usage: "longest wait between re-forks of a failing slot", text: func(s *settings) *string { return &s.BackoffMax }},
	{name: "backoff-reset", field: "Backoff.Reset", usage: "a worker up this long (or a rollout's replacement, once it listens) clears its slot's failures", text: func(s *settings) *string { return &s.BackoffReset }},
	{name: "watchdog", field: "Watchdog", usage: "a listening worker must send a heartbeat (WATCHDOG=1 or {\"event\":\"heartbeat\"}) at least this often, or it is replaced, then aborted; 0: off", text: func(s *settings) *string { return &s.Watchdog }},
	{name: "max-memory", field: "MaxMemory", usage: "recycle a worker whose processes' resident memory stays above `SIZE` (512M, 2G; K, M, G are powers of 1024); 0: off", text: func(s *settings) *string { return &s.MaxMemory }},
	{name: "memory-interval", field: "MemoryInterval", usage: "how often the workers' memory is sampled for --max-memory (3 samples over it in a row recycle)", text: func(s *settings) *string { return &s.MemoryInterval }},
	{name: "max-memory-jitter", field: "MaxMemoryJitter", usage: "a worker over --max-memory is recycled after a random wait up to this long", text: func(s *settings) *string { return &s.MaxMemoryJitter }},
	{name: "max-lifetime", field: "MaxLifetime", usage: "recycle a worker this long after its fork (plus jitter); 0: off", text: func(s *settings) *string { return &s.MaxLifetime }},
	{name: "max-lifetime-jitter", field: "MaxLifetimeJitter", usage: "random part added to each worker's --max-lifetime; default a tenth of it", text: func(s *settings) *string { return &s.LifetimeJitter }},
	{name: "max-requests", field: "MaxRequests", usage: "workers ask for their recycle after this many requests (DUTCHMASTER_MAX_REQUESTS; the Go worker API counts them); 0: off", text: func(s *settings) *string { return &s.MaxRequests }},
	{name: "max-requests-jitter", field: "MaxRequestsJitter", usage: "random part added to each worker's --max-requests; default a tenth of it", text: func(s *settings) *string { return &s.RequestsJitter }},
	{name: "recycle-concurrency", field: "RecycleConcurrency", usage: "how many workers may be recycled at once", text: func(s *settings) *string { return &s.RecycleConc }},
	{name: "worker-protocol", field: "WorkerProtocol", usage: "auto (node-cluster for node, else fds), fds or node-cluster", text: func(s *settings) *string { return &s.WorkerProtocol }},
	{name: "balance", field: "Balance", usage: "how new TCP connections are spread over the workers: auto (kernel where it can load, else round-robin for Node.js cluster workers and shared for the others), kernel (round-robin over the listening workers, decided in the kernel), round-robin (Node.js cluster workers: the master hands each connection over) or shared", text: func(s *settings) *string { return &s.Balance }},
	{name: "node-preload", usage: "load dutchmaster's drain module into Node.js cluster workers (on by default; =false: they drain as under Node's cluster)", text: func(s *settings) *string { return &s.NodePreload }, isBool: true},
	{name: "node-grace", field: "NodeGrace", usage: "how long a draining Node.js worker keeps its keep-alive connections, answering with Connection: close, before it closes the idle ones and runs the app's SIGTERM handler; shorter than --kill-timeout (default 5s, or half --kill-timeout if shorter)", text: func(s *settings) *string { return &s.NodeGrace }},
	{name: "env", field: "Env", usage: "`KEY=VALUE` added to the workers' environment (repeatable)", list: func(s *settings) *[]string { return &s.Env }},
	{name: "env-clear", field: "EnvClear", usage: "withhold the master's environment from workers (but --env-allow keys)", text: func(s *settings) *string { return &s.EnvClear }, isBool: true},
	{name: "env-allow", field: "EnvAllow", usage: "`KEY` of the master's environment that workers keep under --env-clear (repeatable)", list: func(s *settings) *[]string { return &s.EnvAllow }},
	{name: "user", field: "User", usage: "run workers as this user (name or uid); the master keeps the sockets", text: func(s *settings) *string { return &s.User }},
	{name: "group", field: "Group", usage: "run workers with this group (name or gid); default the user's", text: func(s *settings) *string { return &s.Group }},
	{name: "dir", field: "Dir", usage: "workers' working directory, symlinks resolved at every fork", text: func(s *settings) *string { return &s.Dir }},
	{name: "before-fork", field: "BeforeForkCommand", usage: "shell `COMMAND` run before every fork; failure fails the fork", text: func(s *settings) *string { return &s.BeforeFork }},
	{name: "log-format", usage: "auto (console on a terminal, else json), json or console", text: func(s *settings) *string { return &s.LogFormat }},
	{name: "log-level", usage: "debug, info, warn or error", text: func(s *settings) *string { return &s.LogLevel }},
	{name: "log-worker-output", field: "LogWorkerOutput", usage: "log each line of worker output with the worker's fields", text: func(s *settings) *string { return &s.LogWorkerOutput }, isBool: true},
	{name: "log-tail", field: "LogTail", usage: "keep each worker's last `N` lines of output (at most 1 MiB) in the master, and those of the last 16 that exited, for `dutchmaster ctl logs`; 0: none, and workers write to the master's stdout and stderr directly", text: func(s *settings) *string { return &s.LogTail }},
	{name: "name", field: "Name", usage: "`NAME` of this master, in logs, metrics, the journal and the default control socket's file name", text: func(s *settings) *string { return &s.Name }},
	{name: "control", field: "ControlSocket", usage: "control socket `PATH` for `dutchmaster ctl` (mode 0600), or none; default $DUTCHMASTER_CONTROL, else dutchmaster[-NAME].sock in $XDG_RUNTIME_DIR/dutchmaster, /run/dutchmaster (root) or /tmp/dutchmaster-UID", text: func(s *settings) *string { return &s.Control }},
	{name: "metrics", field: "MetricsAddress", usage: "serve /metrics (Prometheus), /metrics/cluster (Node.js workers' prom-client metrics), /healthz and /readyz on `HOST:PORT`", text: func(s *settings) *string { return &s.Metrics }},
	{name: "record", field: "Record", usage: "write every input and decision of the cluster's core to `FILE` (JSON lines), for `dutchmaster replay`", text: func(s *settings) *string { return &s.Record }},
	{name: "pidfile", field: "PIDFile", usage: "write the master's pid to `FILE` (locked while it runs, removed at exit); refuse to start if a running master holds it", text: func(s *settings) *string { return &s.PIDFile }},
	{name: "subreaper", field: "Subreaper", usage: "become a child subreaper: adopt and reap the orphans of the workers' children (always done as PID 1)", text: func(s *settings) *string { return &s.Subreaper }, isBool: true},
}

// defaults are the values in force when neither a flag nor the config
// file sets a key.
func defaults() settings {
	return settings{
		Workers: "2", RestartSignal: "SIGUSR2", StopSignal: "SIGTERM", KillTimeout: "30s",
		Ready: "auto", ReadyTimeout: "60s", Drain: "auto", MaxSurge: "1",
		LogFormat: "auto", LogLevel: "info", LogWorkerOutput: "false", LogTail: "1000",
		Policy: dutchmaster.PolicyNames()[0], CanarySoak: dutchmaster.DefaultCanarySoak.String(), Backoff: "500ms", BackoffMax: "30s", BackoffReset: "60s",
		WorkerProtocol: "auto", Balance: "auto", NodePreload: "true", EnvClear: "false", Subreaper: "false",
		Watchdog: "0", MaxMemory: "0", MemoryInterval: dutchmaster.DefaultMemoryInterval.String(),
		MaxMemoryJitter: dutchmaster.DefaultMaxMemoryJitter.String(), MaxLifetime: "0", MaxRequests: "0", RecycleConc: "1",
	}
}

// maxConfigSize bounds the --config file: it is read whole, at start and
// at every rolling restart.
const maxConfigSize = 1 << 20

// loadConfig reads a YAML file with the flags' names as keys. Unknown
// keys are errors: a typo must not pass silently. So is a file with no
// settings at all: one caught empty is more likely half-written than
// meant to set every default.
func loadConfig(path string, into *settings) error {
	data, err := readConfig(path)
	if err != nil {
		return fmt.Errorf("--config %s: %w", path, err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return fmt.Errorf("--config %s: the file is empty (replace it in one step: write a new file beside it and rename it over the old)", path)
	}
	var raw any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return fmt.Errorf("--config %s: not valid YAML: %v", path, yamlErr(err))
	}
	if raw == nil {
		return fmt.Errorf("--config %s: the file has no settings, only comments (replace it in one step: write a new file beside it and rename it over the old)", path)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(into); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("--config %s: %v", path, yamlErr(err))
	}
	return nil
}

// readConfig reads a regular file (through symlinks) of at most
// maxConfigSize bytes. Anything else is refused before a read that could
// block for ever (a FIFO with no writer, a terminal) or never end (a
// device). The file is checked before it is opened, since opening some
// devices acts on them, and again once open, in case it was replaced in
// between; it is opened non-blocking, so that even then a FIFO does not
// block the open.
func readConfig(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, pathErr(err)
	}
	if err := regularFile(fi); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, pathErr(err)
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, pathErr(err)
	}
	if err := regularFile(fi); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, pathErr(err)
	}
	if len(data) > maxConfigSize {
		return nil, errConfigTooBig
	}
	return data, nil
}

var errConfigTooBig = errors.New("larger than 1 MiB; a configuration is a few lines")

func regularFile(fi os.FileInfo) error {
	mode := fi.Mode()
	switch {
	case mode.IsRegular():
		if fi.Size() > maxConfigSize {
			return errConfigTooBig
		}
		return nil
	case mode.IsDir():
		return errors.New("not a regular file, a directory")
	case mode&os.ModeNamedPipe != 0:
		return errors.New("not a regular file, a FIFO (named pipe)")
	case mode&os.ModeSocket != 0:
		return errors.New("not a regular file, a socket")
	case mode&os.ModeDevice != 0:
		return errors.New("not a regular file, a device")
	}
	return errors.New("not a regular file")
}

// pathErr drops the path and operation of a *PathError, which the caller
// names.
func pathErr(err error) error {
	if u := errors.Unwrap(err); u != nil {
		return u
	}
	return err
}

// yamlErr makes one line of a YAML error, in the terms of this file.
func yamlErr(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		var parts []string
		for _, e := range te.Errors {
			e = strings.TrimSpace(e)
			if where, rest, ok := strings.Cut(e, ": field "); ok {
				key, _, _ := strings.Cut(rest, " not found")
				e = where + ": unknown key " + key
			}
			parts = append(parts, e)
		}
		return strings.Join(parts, "; ")
	}
	return strings.TrimPrefix(err.Error(), "yaml: ")
}

// resolve turns settings into Options, naming the key of the first bad value.
func (s settings) resolve() (dutchmaster.Options, error) {
	var o dutchmaster.Options
	var err error
	fail := func(key, value, want string) (dutchmaster.Options, error) {
		return o, fmt.Errorf("--%s %q: %s", key, value, want)
	}
	switch s.Workers {
	case "auto":
		o.Workers = dutchmaster.AutoWorkers
	default:
		n, err := strconv.Atoi(s.Workers)
		if err != nil || n < 1 || n > 4096 {
			return fail("workers", s.Workers, "want a number from 1 to 4096, or auto")
		}
		o.Workers = func() int { return n }
	}
	o.Listen = s.Listen
	if o.RestartSignal, err = parseSignalFlag("restart-signal", s.RestartSignal); err != nil {
		return o, err
	}
	if s.UpgradeSignal != "" {
		if o.UpgradeSignal, err = parseSignalFlag("upgrade-signal", s.UpgradeSignal); err != nil {
			return o, err
		}
	}
	if o.StopSignal, err = parseSignalFlag("stop-signal", s.StopSignal); err != nil {
		return o, err
	}
	if o.KillTimeout, err = duration("kill-timeout", s.KillTimeout); err != nil {
		return o, err
	}
	if o.ReadyTimeout, err = duration("ready-timeout", s.ReadyTimeout); err != nil {
		return o, err
	}
	o.Ready, o.Drain = s.Ready, s.Drain
	n, err := strconv.Atoi(s.MaxSurge)
	if err != nil || n < 1 {
		return fail("max-surge", s.MaxSurge, "want a whole number, 1 or more")
	}
	o.MaxSurge = n
	o.PolicyName = s.Policy
	if o.CanarySoak, err = duration("canary-soak", s.CanarySoak); err != nil {
		return o, err
	}
	if o.Backoff.Initial, err = duration("backoff", s.Backoff); err != nil {
		return o, err
	}
	if o.Backoff.Max, err = duration("backoff-max", s.BackoffMax); err != nil {
		return o, err
	}
	if o.Backoff.Reset, err = duration("backoff-reset", s.BackoffReset); err != nil {
		return o, err
	}
	if o.Backoff.Max < o.Backoff.Initial {
		return fail("backoff-max", s.BackoffMax, "want at least --backoff ("+s.Backoff+")")
	}
	if err := s.resolveHealth(&o); err != nil {
		return o, err
	}
	o.WorkerProtocol, o.Balance = s.WorkerProtocol, s.Balance
	preload, err := strconv.ParseBool(s.NodePreload)
	if err != nil {
		return fail("node-preload", s.NodePreload, "want true or false")
	}
	o.DisableNodePreload = !preload
	if s.NodeGrace != "" {
		if o.NodeGrace, err = duration("node-grace", s.NodeGrace); err != nil {
			return o, err
		}
	}
	if o.EnvClear, err = strconv.ParseBool(s.EnvClear); err != nil {
		return fail("env-clear", s.EnvClear, "want true or false")
	}
	for _, key := range s.EnvAllow {
		if key == "" || strings.ContainsAny(key, "=\x00") {
			return fail("env-allow", key, "want the name of a variable, without =")
		}
	}
	o.EnvAllow, o.User, o.Group = s.EnvAllow, s.User, s.Group
	o.Env, o.Dir, o.BeforeForkCommand = s.Env, s.Dir, s.BeforeFork
	if o.LogWorkerOutput, err = strconv.ParseBool(s.LogWorkerOutput); err != nil {
		return fail("log-worker-output", s.LogWorkerOutput, "want true or false")
	}
	if n, err := strconv.Atoi(s.LogTail); err != nil || n < 0 || n > control.MaxLogLines {
		return fail("log-tail", s.LogTail, fmt.Sprintf("want a number of lines from 0 to %d", control.MaxLogLines))
	} else {
		o.LogTail = n
	}
	o.Name = s.Name
	switch s.Control {
	case "none":
	case "":
		o.ControlSocket, o.ControlSocketOptional = control.DefaultPath(s.Name), true
	default:
		o.ControlSocket = s.Control
	}
	o.MetricsAddress, o.Record, o.PIDFile = s.Metrics, s.Record, s.PIDFile
	if o.Subreaper, err = strconv.ParseBool(s.Subreaper); err != nil {
		return fail("subreaper", s.Subreaper, "want true or false")
	}
	o.Command = s.Command
	return o, nil
}

// resolveHealth reads the watchdog and recycling settings.
func (s settings) resolveHealth(o *dutchmaster.Options) error {
	var err error
	if o.Watchdog, err = durationOrOff("watchdog", s.Watchdog); err != nil {
		return err
	}
	if o.Watchdog > 0 && o.Watchdog < 100*time.Millisecond {
		return fmt.Errorf("--watchdog %q: want at least 100ms, or 0 for none", s.Watchdog)
	}
	if o.MaxMemory, err = size("max-memory", s.MaxMemory); err != nil {
		return err
	}
	if o.MemoryInterval, err = duration("memory-interval", s.MemoryInterval); err != nil {
		return err
	}
	if o.MaxMemoryJitter, err = duration("max-memory-jitter", s.MaxMemoryJitter); err != nil {
		return err
	}
	if o.MaxLifetime, err = durationOrOff("max-lifetime", s.MaxLifetime); err != nil {
		return err
	}
	if s.LifetimeJitter != "" {
		if o.MaxLifetimeJitter, err = durationOrOff("max-lifetime-jitter", s.LifetimeJitter); err != nil {
			return err
		}
	}
	if o.MaxRequests, err = count("max-requests", s.MaxRequests, 0); err != nil {
		return err
	}
	if s.RequestsJitter != "" {
		if o.MaxRequestsJitter, err = count("max-requests-jitter", s.RequestsJitter, 0); err != nil {
			return err
		}
	}
	o.RecycleConcurrency, err = count("recycle-concurrency", s.RecycleConc, 1)
	return err
}

// durationOrOff reads a duration, or 0 for none.
func durationOrOff(key, v string) (time.Duration, error) {
	if v == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("--%s %q: want a duration such as 30s, or 0 for none", key, v)
	}
	return d, nil
}

// count reads a whole number of at least least.
func count(key, v string, least int) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < least {
		return 0, fmt.Errorf("--%s %q: want a whole number, %d or more", key, v, least)
	}
	return n, nil
}

// size reads a byte count: a number with an optional K, M, G or T
// (powers of 1024; "Ki", "KiB", "KB" and "k" mean the same), or 0.
func size(key, v string) (int64, error) {
	m := sizeSyntax.FindStringSubmatch(strings.TrimSpace(v))
	if m == nil {
		return 0, fmt.Errorf("--%s %q: want a size such as 512M or 2G (K, M, G, T: powers of 1024), or 0 for none", key, v)
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, fmt.Errorf("--%s %q: want a size such as 512M or 2G", key, v)
	}
	shift := map[string]uint{"": 0, "k": 10, "m": 20, "g": 30, "t": 40}[strings.ToLower(m[2])]
	b := n * float64(int64(1)<<shift)
	if b >= 1<<62 {
		return 0, fmt.Errorf("--%s %q: too large", key, v)
	}
	return int64(b), nil
}

var sizeSyntax = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*([kKmMgGtT]?)(?:i?[bB]?)$`)

// optionsField matches the Options fields that errors of dutchmaster.Run
// name: Options.KillTimeout, Options.Backoff.Max.
var optionsField = regexp.MustCompile(`Options(\.[A-Z][A-Za-z0-9]*)+`)

// inFlagTerms rewrites an error of dutchmaster.Run for the command line:
// each Options field it names becomes the flag (and config key) that sets
// it, so `Options.KillTimeout -1s: ...` reads `--kill-timeout -1s: ...`.
func inFlagTerms(err error) error {
	if err == nil {
		return nil
	}
	msg := optionsField.ReplaceAllStringFunc(err.Error(), func(m string) string {
		field := strings.TrimPrefix(m, "Options.")
		for _, o := range options {
			if o.field == field {
				return "--" + o.name
			}
		}
		return m
	})
	return errors.New(msg)
}

// oneOf lists choices as a sentence: "a, b or c".
func oneOf(choices []string) string {
	if len(choices) < 2 {
		return strings.Join(choices, "")
	}
	return strings.Join(choices[:len(choices)-1], ", ") + " or " + choices[len(choices)-1]
}

func parseSignalFlag(key, v string) (syscall.Signal, error) {
	sig, err := fsm.ParseSignal(v)
	if err != nil {
		return 0, fmt.Errorf("--%s %q: want a signal name such as SIGUSR2", key, v)
	}
	return sig, nil
}

func duration(key, v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("--%s %q: want a positive duration such as 30s", key, v)
	}
	return d, nil
}

// configUsage is --config's line in the help; --config is a flag only.
const configUsage = "YAML `FILE` with the options as keys; the flags win; re-read at every rolling restart"

// helpEntry is an option in the help: its name and the placeholder of
// its value ("" for a switch).
type helpEntry struct{ name, value string }

// helpGroups lay the options out in `dutchmaster --help` by topic. An
// option of the table missing here is still listed, under the last
// heading, so that the help never leaves one out.
var helpGroups = []struct {
	title   string
	entries []helpEntry
}{
	{"Workers (what runs, where, as whom)", []helpEntry{
		{"workers", "N"}, {"listen", "SPEC"}, {"balance", "MODE"}, {"worker-protocol", "PROTOCOL"}, {"dir", "PATH"},
		{"env", "KEY=VALUE"}, {"env-clear", ""}, {"env-allow", "KEY"}, {"user", "USER"}, {"group", "GROUP"},
		{"before-fork", "COMMAND"},
	}},
	{"Restarts (readiness, rollouts, crash loops)", []helpEntry{
		{"restart-signal", "SIGNAL"}, {"policy", "POLICY"}, {"max-surge", "N"}, {"canary-soak", "DURATION"},
		{"ready", "MODE"}, {"ready-timeout", "DURATION"},
		{"backoff", "DURATION"}, {"backoff-max", "DURATION"}, {"backoff-reset", "DURATION"},
	}},
	{"Health (hung and leaky workers)", []helpEntry{
		{"watchdog", "DURATION"}, {"max-memory", "SIZE"}, {"memory-interval", "DURATION"}, {"max-memory-jitter", "DURATION"},
		{"max-lifetime", "DURATION"}, {"max-lifetime-jitter", "DURATION"}, {"max-requests", "N"}, {"max-requests-jitter", "N"},
		{"recycle-concurrency", "N"},
	}},
	{"Draining (how a worker is stopped)", []helpEntry{
		{"drain", "MODE"}, {"stop-signal", "SIGNAL"}, {"kill-timeout", "DURATION"},
		{"node-preload", ""}, {"node-grace", "DURATION"},
	}},
	{"Operations (config file, control, metrics, journal)", []helpEntry{
		{"config", "FILE"}, {"name", "NAME"}, {"control", "PATH"}, {"metrics", "ADDR"},
		{"record", "FILE"}, {"pidfile", "FILE"}, {"subreaper", ""}, {"upgrade-signal", "SIGNAL"},
	}},
	{"Logging (the master's log on stderr)", []helpEntry{
		{"log-format", "FORMAT"}, {"log-level", "LEVEL"}, {"log-worker-output", ""}, {"log-tail", "N"},
	}},
}

const helpHead = `usage: dutchmaster [OPTIONS] -- COMMAND [ARG...]
       dutchmaster ctl [--control PATH | --name NAME] [--json] status|top|restart [wN]|reload [wN]|stop|scale N|logs [wN]|ls|upgrade [--binary PATH]
       dutchmaster replay FILE
       dutchmaster version | --version
       dutchmaster help [ctl|replay] | --help | -h

Runs COMMAND as N workers on the listeners, and replaces them without
dropping a connection. SIGUSR2: rolling restart. SIGTERM/SIGINT: graceful
stop (twice: kill the workers). SIGTTIN/SIGTTOU: one worker more/less.`

const helpTail = `Options take a value after a space or an =: --workers 4, --workers=4.
Switches stand alone (--subreaper) or take =false. Every option but
--config is also a key of the config file. DURATION: 500ms, 30s, 1m30s.
SPEC: [NAME=]tcp://HOST:PORT, tcp6://[::1]:PORT, unix:///PATH, udp://HOST:PORT.

Examples:
  dutchmaster --workers 4 --listen http=tcp://0.0.0.0:8080 -- ./server
  dutchmaster --name app --config /etc/dutchmaster/app.yaml -- node app.js
  dutchmaster ctl --name app restart     rolling restart; waits for its end
  kill -USR2 MASTER_PID                  the same, without waiting

Exit status: 0 after a stop; 1 when the supervisor itself failed; 2 for
bad input (one line on stderr; no worker was started).

Every option and the config file: docs/configuration.md.
ctl, metrics, the journal, systemd and containers: docs/operations.md.`
