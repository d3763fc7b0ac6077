// Command dutchmaster supervises N copies of a worker program on sockets
// it owns, and replaces them without dropping a connection.
//
//	dutchmaster [flags] -- COMMAND [ARG...]
//	dutchmaster version
//
// SIGUSR2 starts a graceful rolling restart, SIGTERM or SIGINT a graceful
// stop (a second one kills the workers). docs/configuration.md lists every
// flag and config key.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/dutchmaster/dutchmaster"
)

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1 // the supervisor failed while running
	exitUsage = 2 // bad flags, config or command: no worker was started
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "version" {
		fmt.Fprintln(os.Stdout, "dutchmaster", version())
		return exitOK
	}
	s, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "dutchmaster: %v\n", err)
		return exitUsage
	}
	opts, err := s.resolve()
	if err != nil {
		fmt.Fprintf(stderr, "dutchmaster: %v\n", err)
		return exitUsage
	}
	opts.Logger, err = newLogger(s.LogFormat, s.LogLevel, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "dutchmaster: %v\n", err)
		return exitUsage
	}
	err = dutchmaster.Run(context.Background(), opts)
	var cfgErr *dutchmaster.ConfigError
	switch {
	case errors.As(err, &cfgErr):
		fmt.Fprintf(stderr, "dutchmaster: %v\n", err)
		return exitUsage
	case err != nil:
		opts.Logger.Error().Err(err).Msg("dutchmaster failed")
		fmt.Fprintf(stderr, "dutchmaster: %v\n", err)
		return exitError
	}
	return exitOK
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// listFlag is a repeatable flag.
type listFlag struct{ values *[]string }

func (l listFlag) String() string {
	if l.values == nil {
		return ""
	}
	return strings.Join(*l.values, ",")
}
func (l listFlag) Set(v string) error { *l.values = append(*l.values, v); return nil }

// parse reads the config file (if any), then the flags, which win.
func parse(args []string, stderr io.Writer) (settings, error) {
	s := defaults()
	var fromFlags settings
	fs := flag.NewFlagSet("dutchmaster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(fs, stderr) }
	config := fs.String("config", "", "YAML file with the same keys as the flags; flags win")
	fs.StringVar(&fromFlags.Workers, "workers", s.Workers, "number of workers, or auto (= max(CPUs, 2))")
	fs.Var(listFlag{&fromFlags.Listen}, "listen", "listener `SPEC`: [NAME=]tcp://HOST:PORT, tcp6://[::1]:PORT, unix:///path.sock, udp://HOST:PORT (repeatable)")
	fs.StringVar(&fromFlags.RestartSignal, "restart-signal", s.RestartSignal, "signal that starts a rolling restart")
	fs.StringVar(&fromFlags.StopSignal, "stop-signal", s.StopSignal, "signal that drains a worker that does not speak IPC")
	fs.StringVar(&fromFlags.KillTimeout, "kill-timeout", s.KillTimeout, "SIGKILL a draining worker still alive after this long")
	fs.StringVar(&fromFlags.Ready, "ready", s.Ready, "what counts as ready: auto, ipc, notify or timer:DURATION")
	fs.StringVar(&fromFlags.ReadyTimeout, "ready-timeout", s.ReadyTimeout, "kill a worker not ready after this long")
	fs.StringVar(&fromFlags.Drain, "drain", s.Drain, "how to ask a worker to stop: auto, ipc, signal or both")
	fs.StringVar(&fromFlags.MaxSurge, "max-surge", s.MaxSurge, "replacements starting at once during a rolling restart")
	fs.Var(listFlag{&fromFlags.Env}, "env", "`KEY=VALUE` added to the workers' environment (repeatable)")
	fs.StringVar(&fromFlags.Dir, "dir", "", "workers' working directory, symlinks resolved at every fork")
	fs.StringVar(&fromFlags.BeforeFork, "before-fork", "", "shell `COMMAND` run before every fork; failure fails the fork")
	fs.StringVar(&fromFlags.LogFormat, "log-format", s.LogFormat, "auto (console on a terminal, else json), json or console")
	fs.StringVar(&fromFlags.LogLevel, "log-level", s.LogLevel, "debug, info, warn or error")
	fs.StringVar(&fromFlags.LogWorkerOutput, "log-worker-output", s.LogWorkerOutput, "log each line of worker output with the worker's fields")
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	if *config != "" {
		if err := loadConfig(*config, &s); err != nil {
			return s, err
		}
	}
	fs.Visit(func(f *flag.Flag) { override(&s, fromFlags, f.Name) })
	if rest := fs.Args(); len(rest) > 0 {
		s.Command = rest
	}
	if len(s.Command) == 0 {
		return s, errors.New("no worker command: give it after --, e.g. dutchmaster --listen tcp://127.0.0.1:8080 -- node app.js")
	}
	return s, nil
}

// override copies one flag the user set over the config file's value.
func override(s *settings, f settings, name string) {
	switch name {
	case "workers":
		s.Workers = f.Workers
	case "listen":
		s.Listen = f.Listen
	case "restart-signal":
		s.RestartSignal = f.RestartSignal
	case "stop-signal":
		s.StopSignal = f.StopSignal
	case "kill-timeout":
		s.KillTimeout = f.KillTimeout
	case "ready":
		s.Ready = f.Ready
	case "ready-timeout":
		s.ReadyTimeout = f.ReadyTimeout
	case "drain":
		s.Drain = f.Drain
	case "max-surge":
		s.MaxSurge = f.MaxSurge
	case "env":
		s.Env = f.Env
	case "dir":
		s.Dir = f.Dir
	case "before-fork":
		s.BeforeFork = f.BeforeFork
	case "log-format":
		s.LogFormat = f.LogFormat
	case "log-level":
		s.LogLevel = f.LogLevel
	case "log-worker-output":
		s.LogWorkerOutput = f.LogWorkerOutput
	}
}

func usage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintln(w, `usage: dutchmaster [flags] -- COMMAND [ARG...]
       dutchmaster version

Runs COMMAND as N workers on the listeners, replacing them without dropping
a connection. SIGUSR2: rolling restart. SIGTERM/SIGINT: graceful stop
(twice: kill). Exit status 0 after a graceful stop, 2 for bad input.

flags:`)
	fs.PrintDefaults()
}
