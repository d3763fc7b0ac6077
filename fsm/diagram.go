package fsm

import (
	lfsm "github.com/looplab/fsm"
)

// Mermaid renders the transition table as a Mermaid state diagram, drawn
// from a fresh machine so that the picture does not depend on any worker.
func Mermaid() (string, error) {
	return lfsm.VisualizeWithType(newMachine(Forking), lfsm.MermaidStateDiagram)
}
