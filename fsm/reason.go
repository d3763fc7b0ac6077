package fsm

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
)

// ExitKind sorts the ways a worker's process can end.
type ExitKind string

// The kinds of exit.
const (
	// ExitClean: the process exited with status 0.
	ExitClean ExitKind = "clean"
	// ExitCode: the process exited with a non-zero status.
	ExitCode ExitKind = "code"
	// ExitSignal: a signal ended the process (not a kill by the master).
	ExitSignal ExitKind = "signal"
	// ExitHardKill: the master sent SIGKILL (kill timeout, ready timeout, second stop).
	ExitHardKill ExitKind = "killed"
	// ExitForkFailed: the process never started (exec failed, before-fork hook failed).
	ExitForkFailed ExitKind = "fork-failed"
)

// ExitReason is why a worker is killed.
type ExitReason struct {
	Kind   ExitKind
	Code   int            // exit status, for ExitCode
	Signal syscall.Signal // for ExitSignal and ExitHardKill
	Detail string         // free text: the fork error, the last stderr lines
}

// Clean reports whether the process exited with status 0.
func (r ExitReason) Clean() bool { return r.Kind == ExitClean }

func (r ExitReason) String() string {
	var b strings.Builder
	b.WriteString(string(r.Kind))
	switch r.Kind {
	case ExitCode:
		fmt.Fprintf(&b, " %d", r.Code)
	case ExitSignal, ExitHardKill:
		if r.Signal != 0 {
			b.WriteString(" " + SignalName(r.Signal))
		}
	}
	if r.Detail != "" {
		b.WriteString(": " + r.Detail)
	}
	return b.String()
}

// SignalName is the short conventional name of a signal ("SIGTERM").
func SignalName(s syscall.Signal) string {
	if name, ok := signalNames[s]; ok {
		return name
	}
	return fmt.Sprintf("signal %d", int(s))
}

var signalNames = map[syscall.Signal]string{
	syscall.SIGHUP: "SIGHUP", syscall.SIGINT: "SIGINT", syscall.SIGQUIT: "SIGQUIT",
	syscall.SIGILL: "SIGILL", syscall.SIGABRT: "SIGABRT", syscall.SIGBUS: "SIGBUS",
	syscall.SIGFPE: "SIGFPE", syscall.SIGKILL: "SIGKILL", syscall.SIGUSR1: "SIGUSR1",
	syscall.SIGSEGV: "SIGSEGV", syscall.SIGUSR2: "SIGUSR2", syscall.SIGPIPE: "SIGPIPE",
	syscall.SIGALRM: "SIGALRM", syscall.SIGTERM: "SIGTERM", syscall.SIGCHLD: "SIGCHLD",
	syscall.SIGCONT: "SIGCONT", syscall.SIGSTOP: "SIGSTOP", syscall.SIGTSTP: "SIGTSTP",
	syscall.SIGTTIN: "SIGTTIN", syscall.SIGTTOU: "SIGTTOU", syscall.SIGWINCH: "SIGWINCH",
}

// ParseSignal accepts "SIGTERM", "TERM" or "15" (any case for names).
func ParseSignal(s string) (syscall.Signal, error) {
	up := strings.ToUpper(strings.TrimSpace(s))
	if !strings.HasPrefix(up, "SIG") {
		up = "SIG" + up
	}
	for sig, name := range signalNames {
		if name == up {
			return sig, nil
		}
	}
	if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	return 0, fmt.Errorf("unknown signal %q (want a name such as SIGTERM or a number)", s)
}
