package loadtest

import (
	"fmt"
	"os/exec"
	"path/filepath"
)

// Binaries are the programs a run starts.
type Binaries struct {
	Dutchmaster string
	Hello       string // the example worker
}

// Import paths, so that `go build` works from any directory of the module.
const (
	pkgDutchmaster = "github.com/dutchmaster/dutchmaster/cmd/dutchmaster"
	pkgHello       = "github.com/dutchmaster/dutchmaster/examples/hello"
)

// Build compiles dutchmaster and the example worker into dir (the go tool
// must run inside this module).
func Build(dir string) (Binaries, error) {
	b := Binaries{
		Dutchmaster: filepath.Join(dir, "dutchmaster"),
		Hello:       filepath.Join(dir, "hello"),
	}
	for _, p := range []struct{ pkg, out string }{{pkgDutchmaster, b.Dutchmaster}, {pkgHello, b.Hello}} {
		out, err := exec.Command("go", "build", "-o", p.out, p.pkg).CombinedOutput()
		if err != nil {
			return b, fmt.Errorf("go build %s: %v\n%s", p.pkg, err, out)
		}
	}
	return b, nil
}
