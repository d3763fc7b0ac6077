package main

import (
	"fmt"
	"time"

	"github.com/dutchmaster/dutchmaster/cmd/internal/loadtest"
)

// startMaster runs `dutchmaster [--balance MODE] [EXTRA] --workers N
// --listen 127.0.0.1:0 -- hello` and waits for "cluster ready".
func startMaster(bin loadtest.Binaries, workers int, balance string, boot, work time.Duration, patience time.Duration, extra ...string) (*loadtest.Master, error) {
	var mode []string
	if balance != "" {
		mode = []string{"--balance", balance}
	}
	mode = append(mode, extra...)
	return loadtest.StartMaster(bin.Dutchmaster, append(mode,
		"--workers", fmt.Sprint(workers),
		"--listen", "http=tcp://127.0.0.1:0",
		"--env", "HELLO_BOOT_DELAY="+boot.String(),
		"--env", "HELLO_WORK="+work.String(),
		"--", bin.Hello,
	), patience)
}
