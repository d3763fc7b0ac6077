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
	// The worker inherits its listeners, its IPC channel and stdio, and
	// nothing else: whatever else the master held without close-on-exec
	// (a launcher's leak, a library's file opened after start-up) stops
	// here. ExecWithListenPID clears the flag again on the descriptors
	// that LISTEN_FDS and NODE_CHANNEL_FD name.
	err := limitWorkerProcesses()
	if err == nil {
		err = sockets.CloseOnExecAll()
	}
	if err == nil {
		err = sockets.ExecWithListenPID(os.Args[1:])
	}
	fmt.Fprintf(os.Stderr, "dutchmaster: %v\n", err)
	os.Exit(127) // the shell's "command not found"
}
