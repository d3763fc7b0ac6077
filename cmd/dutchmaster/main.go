// Command dutchmaster supervises N copies of a worker program on sockets
// it owns, and replaces them without dropping a connection.
//
//	dutchmaster [flags] -- COMMAND [ARG...]
//	dutchmaster ctl [--control PATH] [--json] status|restart|stop|scale N
//	dutchmaster replay FILE
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
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

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
	// The subcommands are clients: Ctrl-C, SIGTERM and timeout(1) end them
	// as they end any command (ctl says what the master goes on doing).
	if len(args) > 0 {
		switch args[0] {
		case "version":
			fmt.Fprintln(os.Stdout, "dutchmaster", version())
			return exitOK
		case "ctl":
			return runCtl(args[1:], os.Stdout, stderr)
		case "replay":
			return runReplay(args[1:], os.Stdout, stderr)
		}
	}
	// The master: Run stops taking signals when it returns; a stop or
	// scale signal that arrives after that, while the binary exits, must
	// not end it by the signal's default action (exit 143, or a suspended
	// master). SIGPIPE likewise: a last log line into a closed pipe fails
	// instead.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGTERM, syscall.SIGINT, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGHUP, syscall.SIGUSR1,
		syscall.SIGPIPE)
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
	// From here on everything the master writes to stderr goes through
	// the log's queue: a reader that stops reading costs lines, never the
	// master's progress, and the exit waits for it only so long.
	logw := newLogWriter(stderr)
	opts.Logger, err = newLogger(s.LogFormat, s.LogLevel, logw)
	if err != nil {
		fmt.Fprintf(stderr, "dutchmaster: %v\n", err)
		return exitUsage
	}
	dropLog := opts.Logger
	if s.Name != "" {
		dropLog = dropLog.With().Str("name", s.Name).Logger()
	}
	logw.start(func(n uint64) {
		dropLog.Warn().Uint64("dropped", n).Uint64("dropped_total", logw.Dropped()).
			Msg("log lines dropped")
	})
	defer logw.close()
	opts.LogDropped = logw.Dropped
	stderr = logw
	if s.configFile != "" {
		// Every rolling restart re-reads the file (and keeps the flags).
		// The logger is the master's own: a new log format or level is
		// checked, and said to wait for a new master.
		log, first := opts.Logger, s
		opts.Reload = func() (dutchmaster.Options, error) {
			s, err := parse(args, io.Discard)
			if err != nil {
				return dutchmaster.Options{}, err
			}
			if _, err := newLogger(s.LogFormat, s.LogLevel, io.Discard); err != nil {
				return dutchmaster.Options{}, err
			}
			if s.LogFormat != first.LogFormat || s.LogLevel != first.LogLevel {
				log.Warn().Str("log_format", s.LogFormat).Str("log_level", s.LogLevel).
					Msg("log-format and log-level change only with a new master; keeping the current ones")
			}
			next, err := s.resolve()
			if err == nil {
				// Checked here too, so that the master's refusal names the
				// flag of a bad value, as at start.
				err = inFlagTerms(dutchmaster.Check(next))
			}
			return next, err
		}
	}
	err = dutchmaster.Run(context.Background(), opts)
	var cfgErr *dutchmaster.ConfigError
	switch {
	case errors.As(err, &cfgErr):
		fmt.Fprintf(stderr, "dutchmaster: %v\n", inFlagTerms(err))
		return exitUsage
	case err != nil:
		err = inFlagTerms(err)
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

// boolFlag is a text setting written as a switch: --log-worker-output
// alone means true, --log-worker-output=false is allowed.
type boolFlag struct{ value *string }

func (b boolFlag) String() string {
	if b.value == nil {
		return ""
	}
	return *b.value
}
func (b boolFlag) Set(v string) error { *b.value = v; return nil }
func (b boolFlag) IsBoolFlag() bool   { return true }

// parse reads the config file (if any), then the flags, which win.
func parse(args []string, stderr io.Writer) (settings, error) {
	s := defaults()
	fromFlags := defaults()
	fs := flag.NewFlagSet("dutchmaster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(fs, stderr) }
	config := fs.String("config", "", "YAML `FILE` with the same keys as the flags; flags win; re-read at every rolling restart")
	for _, o := range options {
		switch {
		case o.list != nil:
			fs.Var(listFlag{o.list(&fromFlags)}, o.name, o.usage)
		case o.isBool:
			fs.Var(boolFlag{o.text(&fromFlags)}, o.name, o.usage)
		default:
			fs.StringVar(o.text(&fromFlags), o.name, *o.text(&fromFlags), o.usage)
		}
	}
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	if *config != "" {
		if err := loadConfig(*config, &s); err != nil {
			return s, err
		}
		s.configFile = *config
	}
	fs.Visit(func(f *flag.Flag) {
		for _, o := range options {
			if o.name != f.Name {
				continue
			}
			if o.list != nil {
				*o.list(&s) = *o.list(&fromFlags)
			} else {
				*o.text(&s) = *o.text(&fromFlags)
			}
		}
	})
	if rest := fs.Args(); len(rest) > 0 {
		s.Command = rest
	}
	if len(s.Command) == 0 {
		return s, errors.New("no worker command: give it after --, e.g. dutchmaster --listen tcp://127.0.0.1:8080 -- node app.js")
	}
	return s, nil
}

func usage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintln(w, `usage: dutchmaster [flags] -- COMMAND [ARG...]
       dutchmaster ctl [--control PATH] [--json] status|restart|stop|scale N
       dutchmaster replay FILE
       dutchmaster version

Runs COMMAND as N workers on the listeners, replacing them without dropping
a connection. SIGUSR2: rolling restart. SIGTERM/SIGINT: graceful stop
(twice: kill the workers). SIGTTIN/SIGTTOU: one worker more/less.
Exit status: 0 after a stop, 2 for bad input (no worker was started),
1 when the supervisor itself failed.

flags:`)
	fs.PrintDefaults()
}
