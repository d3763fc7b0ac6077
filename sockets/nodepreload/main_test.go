package nodepreload

import (
	"testing"

	"github.com/dutchmaster/dutchmaster/sockets/testproc"
)

// Leaked goroutines fail the run: testproc.Main runs goleak after the tests.
func TestMain(m *testing.M) { testproc.Main(m) }
