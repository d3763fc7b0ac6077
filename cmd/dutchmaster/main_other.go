//go:build !linux

package main

import (
	"fmt"
	"os"
	"runtime"
)

func main() {
	fmt.Fprintf(os.Stderr, unsupported+"\n", runtime.GOOS, runtime.GOARCH)
	os.Exit(2)
}
