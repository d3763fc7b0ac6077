package scenarios

import "testing"

func TestScenarios(t *testing.T) { RunDir(t, "testdata") }
