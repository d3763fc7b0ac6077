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
		if err := goBuild(p.out, p.pkg); err != nil {
			return b, err
		}
	}
	return b, nil
}

// BuildVersion compiles dutchmaster into path with version stamped in, as
// a release build does (main.version): two builds that differ only in it
// let a run see which one a master is.
func BuildVersion(path, version string) error {
	return goBuild(path, pkgDutchmaster, "-ldflags", "-X main.version="+version)
}

// BuildHello compiles the example worker into path.
func BuildHello(path string) error { return goBuild(path, pkgHello) }

func goBuild(out, pkg string, flags ...string) error {
	args := append(append([]string{"build"}, flags...), "-o", out, pkg)
	if msg, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, msg)
	}
	return nil
}
