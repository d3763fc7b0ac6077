//go:build linux

// Command dutchmaster supervises N copies of a worker program on sockets
// it owns, and replaces them without dropping a connection.
//
//	dutchmaster [OPTIONS] -- COMMAND [ARG...]
//	dutchmaster ctl [--control PATH | --name NAME] [--json] [--timeout D] status|top|restart [wN]|reload [wN]|stop|scale N|logs [wN]|ls|upgrade [--binary PATH]
//	dutchmaster replay FILE
//	dutchmaster version | --version
//	dutchmaster help | --help | -h
//
// SIGUSR2 starts a graceful rolling restart, SIGTERM or SIGINT a graceful
// stop (a second one kills the workers). docs/configuration.md lists every
// option and config key.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dutchmaster/dutchmaster"
	"github.com/dutchmaster/dutchmaster/actors/core"
)

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1 // the supervisor failed while running
	exitUsage = 2 // bad flags, config or command: no worker was started
)

func main() {
	// Workers are forked on the main thread, and an upgrade executes the
	// new binary there: a worker's parent-death signal follows the thread
	// that forked it, and the exec ends every other thread.
	os.Exit(dutchmaster.ServeMainThread(func() int { return run(os.Args[1:], os.Stderr) }))
}

func run(args []string, stderr io.Writer) int {
	// The subcommands are clients: Ctrl-C, SIGTERM and timeout(1) end them
	// as they end any command (ctl says what the master goes on doing).
	if len(args) > 0 {
		switch args[0] {
		case "version", "--version", "-version":
			fmt.Fprintln(os.Stdout, "dutchmaster", versionString())
			return exitOK
		case "help":
			return runHelp(args[1:], os.Stdout, stderr)
		case "ctl":
			if helpAsked(args[1:]) {
				// Asked for, the help is the output: stdout, exit 0.
				return runCtl([]string{"--help"}, os.Stdout, os.Stdout)
			}
			return runCtl(args[1:], os.Stdout, stderr)
		case "replay":
			return runReplay(args[1:], os.Stdout, stderr)
		case "upgrade-check":
			return runUpgradeCheck(args[1:], os.Stdin, os.Stdout, stderr)
		}
	}
	// The master: Run stops taking signals when it returns; a stop or
	// scale signal that arrives after that, while the binary exits, must
	// not end it by the signal's default action (exit 143, or a suspended
	// master). SIGPIPE likewise: a last log line into a closed pipe fails
	// instead.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGTERM, syscall.SIGINT, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGHUP, syscall.SIGUSR1,
		syscall.SIGPIPE)
	s, err := parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		help(os.Stdout)
		return exitOK
	case errors.Is(err, errVersion):
		fmt.Fprintln(os.Stdout, "dutchmaster", versionString())
		return exitOK
	case err != nil:
		return usageFailed(stderr, err)
	}
	opts, err := s.resolve()
	if err != nil {
		return usageFailed(stderr, err)
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
	// The lines of the start (listening, control socket listening) wait
	// in the queue until the cluster takes its first step: a start that
	// fails on bad input says so in one line, without the lines of what it
	// had opened before. Then they go out, in order.
	startLog := sync.OnceFunc(func() {
		logw.start(func(n uint64) {
			dropLog.Warn().Uint64("dropped", n).Uint64("dropped_total", logw.Dropped()).
				Msg("log lines dropped")
		})
	})
	opts.Observe = func(time.Time, core.Input, []core.Decision) { startLog() }
	if _, upgrade := os.LookupEnv(dutchmaster.UpgradeStateEnv); upgrade {
		// The new image of an upgrade: the master has long started, and
		// its cluster may take no step for a while.
		startLog()
	}
	defer logw.close()
	opts.LogDropped = logw.Dropped
	opts.Version = versionString()
	opts.LogFlush = func() { logw.flush() }
	stderr = logw
	if s.configFile != "" {
		// Every rolling restart re-reads the file (and keeps the flags).
		// The logger is the master's own: a new log format or level is
		// checked, and said to wait for a new master.
		log, first := opts.Logger, s
		opts.Reload = func() (dutchmaster.Options, error) {
			s, err := parse(args)
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
		logw.discard()
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

// runUpgradeCheck is `dutchmaster upgrade-check`, which a running master
// asks of a new binary before it executes it (an upgrade in place): on
// stdin the master's state formats, arguments and configuration
// (dutchmaster.UpgradeCheck); on stdout this binary's version, exit 0, if
// it can take over; else one line on stderr saying why, exit 1.
func runUpgradeCheck(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintf(stderr, "dutchmaster upgrade-check: %v\n", err)
		return exitError
	}
	if len(args) > 0 {
		fmt.Fprintf(stderr, "dutchmaster upgrade-check: no arguments wanted (a running master gives its state on stdin), got %q\n", strings.Join(args, " "))
		return exitUsage
	}
	var in dutchmaster.UpgradeCheck
	if err := json.NewDecoder(io.LimitReader(stdin, 1<<20)).Decode(&in); err != nil {
		return fail(fmt.Errorf("reading the master's state on stdin: %w", err))
	}
	s, err := parse(in.Args)
	if err != nil {
		return fail(fmt.Errorf("the master's arguments: %w", err))
	}
	opts, err := s.resolve()
	if err != nil {
		return fail(fmt.Errorf("the master's arguments: %w", err))
	}
	if err := dutchmaster.CheckUpgrade(in, opts); err != nil {
		return fail(inFlagTerms(err))
	}
	fmt.Fprintln(stdout, versionString())
	return exitOK
}

// version is stamped in by the release build (make dist):
// -ldflags "-X main.version=v1.2.3".
var version string

// versionString is the stamped version, else the module version the go
// command recorded (go install ...@v1.2.3), else "(devel)".
func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// usageHint ends every error in the use of the command line.
const usageHint = "run 'dutchmaster --help' for usage"

// usageError is a command line that is not understood (an unknown flag,
// a missing value or command), as opposed to a value that is refused,
// whose one line names the option and what it wants.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// errVersion is --version among the flags.
var errVersion = errors.New("version asked for")

// usageFailed reports bad input in one line (and, for a command line not
// understood, the hint), and is the exit status.
func usageFailed(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "dutchmaster: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(stderr, usageHint)
	}
	return exitUsage
}

// helpAsked reports whether args ask for help (-h, -help, --help) before
// a "--".
func helpAsked(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

// runHelp is `dutchmaster help [ctl|replay]`.
func runHelp(args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 0:
		help(stdout)
		return exitOK
	case len(args) == 1 && args[0] == "ctl":
		return runCtl([]string{"--help"}, stdout, stdout)
	case len(args) == 1 && args[0] == "replay":
		return runReplay([]string{"--help"}, stdout, stdout)
	}
	fmt.Fprintf(stderr, "dutchmaster help: no help on %q; try help, help ctl or help replay\n", strings.Join(args, " "))
	fmt.Fprintln(stderr, usageHint)
	return exitUsage
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

// parse reads the config file (if any), then the flags, which win. It
// writes nothing: -h and --help are flag.ErrHelp, --version errVersion,
// and a command line not understood a usageError.
func parse(args []string) (settings, error) {
	s := defaults()
	fromFlags := defaults()
	fs := flag.NewFlagSet("dutchmaster", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	config := fs.String("config", "", configUsage)
	showVersion := fs.Bool("version", false, "print the version")
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
		if errors.Is(err, flag.ErrHelp) {
			return s, err
		}
		return s, usageError{flagError(err)}
	}
	if *showVersion {
		return s, errVersion
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
		return s, usageError{errors.New("no worker command: give it after --, e.g. dutchmaster --listen tcp://127.0.0.1:8080 -- node app.js")}
	}
	return s, nil
}

// flagError adds to an unknown flag's error the option it most likely
// meant: "flag provided but not defined: -wrokers (did you mean --workers?)".
func flagError(err error) error {
	const unknown = "flag provided but not defined: -"
	msg := err.Error()
	name, ok := strings.CutPrefix(msg, unknown)
	if !ok {
		return err
	}
	if near := nearestOption(strings.TrimLeft(name, "-")); near != "" {
		return fmt.Errorf("%s (did you mean --%s?)", msg, near)
	}
	return err
}

// nearestOption is the option name within two edits of name, if one is.
func nearestOption(name string) string {
	names := []string{"config", "version", "help"}
	for _, o := range options {
		names = append(names, o.name)
	}
	best, bestDist := "", 3
	for _, n := range names {
		if d := editDistance(name, n); d < bestDist {
			best, bestDist = n, d
		}
	}
	return best
}

// editDistance counts the insertions, deletions, substitutions and
// transpositions of neighbours that turn a into b.
func editDistance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// helpWidth is the width the help is wrapped to, and helpIndent the
// column of the options' descriptions.
const (
	helpWidth  = 79
	helpIndent = 28
)

// help writes `dutchmaster --help`: the usage, the options by topic with
// their values and defaults, examples and where the docs are.
func help(w io.Writer) {
	var b strings.Builder
	b.WriteString(helpHead + "\n")
	byName := map[string]option{"config": {name: "config", usage: configUsage}}
	for _, o := range options {
		byName[o.name] = o
	}
	listed := map[string]bool{}
	def := defaults()
	for i, g := range helpGroups {
		entries := g.entries
		if i == len(helpGroups)-1 {
			// An option no group names is still listed.
			for _, o := range options {
				if !grouped(o.name) {
					entries = append(entries, helpEntry{o.name, placeholder(o)})
				}
			}
		}
		fmt.Fprintf(&b, "\n%s:\n", g.title)
		for _, e := range entries {
			o, ok := byName[e.name]
			if !ok || listed[e.name] {
				continue
			}
			listed[e.name] = true
			left := "  --" + e.name
			if e.value != "" {
				left += " " + e.value
			}
			text := strings.ReplaceAll(o.usage, "`", "")
			if o.text != nil && !o.isBool {
				if d := *o.text(&def); d != "" {
					text += " (default " + d + ")"
				}
			}
			writeEntry(&b, left, text)
		}
	}
	b.WriteString("\n" + helpTail + "\n")
	io.WriteString(w, b.String())
}

// grouped reports whether a group of the help names the option.
func grouped(name string) bool {
	for _, g := range helpGroups {
		for _, e := range g.entries {
			if e.name == name {
				return true
			}
		}
	}
	return false
}

// placeholder is the value of an option no group of the help names: the
// name its usage quotes, else VALUE.
func placeholder(o option) string {
	if o.isBool {
		return ""
	}
	if name, _ := flag.UnquoteUsage(&flag.Flag{Usage: o.usage, Value: listFlag{}}); name != "" && name != "value" {
		return name
	}
	return "VALUE"
}

// writeEntry writes an option and its description, wrapped at helpWidth
// in a column of its own.
func writeEntry(b *strings.Builder, left, text string) {
	col := len(left)
	b.WriteString(left)
	if col+2 > helpIndent {
		b.WriteString("\n")
		col = 0
	}
	line := 0
	for _, word := range strings.Fields(text) {
		if line > 0 && helpIndent+line+1+len(word) > helpWidth {
			b.WriteString("\n")
			col, line = 0, 0
		}
		if line == 0 {
			b.WriteString(strings.Repeat(" ", helpIndent-col))
		} else {
			b.WriteString(" ")
			line++
		}
		b.WriteString(word)
		line += len(word)
	}
	b.WriteString("\n")
}
