package osproc

import (
	"fmt"
	"os"

	"github.com/dutchmaster/dutchmaster/sockets"
)

// trampolineEnv marks a process started as the trampoline; its value is
// never inherited by the worker.
const trampolineEnv = "DUTCHMASTER_TRAMPOLINE"

func init() {
	if os.Getenv(trampolineEnv) != "1" {
		return
	}
	os.Unsetenv(trampolineEnv)
	err := sockets.ExecWithListenPID(os.Args[1:])
	fmt.Fprintf(os.Stderr, "dutchmaster: %v\n", err)
	os.Exit(127) // the shell's "command not found"
}
