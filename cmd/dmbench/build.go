package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
)

// binaries are the programs a run starts.
type binaries struct {
	dutchmaster string
	hello       string // the example worker
}

// Import paths, so that `go build` works from any directory of the module.
const (
	pkgDutchmaster = "github.com/dutchmaster/dutchmaster/cmd/dutchmaster"
	pkgHello       = "github.com/dutchmaster/dutchmaster/examples/hello"
)

// build compiles dutchmaster and the example worker into dir (the go tool
// must run inside this module).
func build(dir string) (binaries, error) {
	b := binaries{
		dutchmaster: filepath.Join(dir, "dutchmaster"),
		hello:       filepath.Join(dir, "hello"),
	}
	for _, p := range []struct{ pkg, out string }{{pkgDutchmaster, b.dutchmaster}, {pkgHello, b.hello}} {
		out, err := exec.Command("go", "build", "-o", p.out, p.pkg).CombinedOutput()
		if err != nil {
			return b, fmt.Errorf("go build %s: %v\n%s", p.pkg, err, out)
		}
	}
	return b, nil
}
