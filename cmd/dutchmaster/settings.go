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
	WorkerProtocol  string   `yaml:"worker-protocol"`
	Balance         string   `yaml:"balance"`
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
	{name: "stop-signal", field: "StopSignal", usage: "signal that drains a worker that does not speak IPC", text: func(s *settings) *string { return &s.StopSignal }},
	{name: "kill-timeout", field: "KillTimeout", usage: "SIGKILL a draining worker still alive after this long", text: func(s *settings) *string { return &s.KillTimeout }},
	{name: "ready", field: "Ready", usage: "what counts as ready: auto, ipc, notify or timer:DURATION", text: func(s *settings) *string { return &s.Ready }},
	{name: "ready-timeout", field: "ReadyTimeout", usage: "kill a worker not ready after this long", text: func(s *settings) *string { return &s.ReadyTimeout }},
	{name: "drain", field: "Drain", usage: "how to ask a worker to stop: auto, ipc, signal or both", text: func(s *settings) *string { return &s.Drain }},
	{name: "backoff", field: "Backoff.Initial", usage: "wait before re-forking a slot after its second failure in a row, doubled each time", text: func(s *settings) *string { return &s.Backoff }},
	{name: "backoff-max", field: "Backoff.Max", usage: "longest wait between re-forks of a failing slot", text: func(s *settings) *string { return &s.BackoffMax }},
	{name: "backoff-reset", field: "Backoff.Reset", usage: "a worker up this long (or a rollout's replacement, once it listens) clears its slot's failures", text: func(s *settings) *string { return &s.BackoffReset }},
	{name: "worker-protocol", field: "WorkerProtocol", usage: "auto (node-cluster for node, else fds), fds or node-cluster", text: func(s *settings) *string { return &s.WorkerProtocol }},
	{name: "balance", field: "Balance", usage: "how new TCP connections are spread over the workers: auto (kernel where it can load, else shared), kernel (round-robin over the listening workers, decided in the kernel) or shared", text: func(s *settings) *string { return &s.Balance }},
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
	{name: "metrics", field: "MetricsAddress", usage: "serve /metrics (Prometheus), /healthz and /readyz on `HOST:PORT`", text: func(s *settings) *string { return &s.Metrics }},
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
		WorkerProtocol: "auto", Balance: "auto", EnvClear: "false", Subreaper: "false",
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
	o.WorkerProtocol, o.Balance = s.WorkerProtocol, s.Balance
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
	{"Draining (how a worker is stopped)", []helpEntry{
		{"drain", "MODE"}, {"stop-signal", "SIGNAL"}, {"kill-timeout", "DURATION"},
	}},
	{"Operations (config file, control, metrics, journal)", []helpEntry{
		{"config", "FILE"}, {"name", "NAME"}, {"control", "PATH"}, {"metrics", "ADDR"},
		{"record", "FILE"}, {"pidfile", "FILE"}, {"subreaper", ""},
	}},
	{"Logging (the master's log on stderr)", []helpEntry{
		{"log-format", "FORMAT"}, {"log-level", "LEVEL"}, {"log-worker-output", ""}, {"log-tail", "N"},
	}},
}

const helpHead = `usage: dutchmaster [OPTIONS] -- COMMAND [ARG...]
       dutchmaster ctl [--control PATH | --name NAME] [--json] status|top|restart [wN]|reload [wN]|stop|scale N|logs [wN]|ls
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
