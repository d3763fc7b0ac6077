package maxage_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster"
	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/examples/maxage"
	"github.com/dutchmaster/dutchmaster/scenarios"
)

// TestScenario replays testdata/max-age.txt with the policy registered
// under its name: the scenario harness checks the replace-before-stop
// invariant at every step, as it does for the built-in policies.
func TestScenario(t *testing.T) {
	scenarios.RunDir(t, "testdata", scenarios.Options{
		Policies: map[string]core.Policy{"max-age": maxage.Policy{Age: 24 * time.Hour}},
	})
}

// Example shows the policy passed to an embedded supervisor.
func Example() {
	opts := dutchmaster.Options{
		Command: []string{"./server"},
		Listen:  []string{"http=tcp://127.0.0.1:8080"},
		Policy:  maxage.Policy{Age: 24 * time.Hour},
		Logger:  zerolog.New(os.Stderr),
	}
	_ = func() error { return dutchmaster.Run(context.Background(), opts) }
}
