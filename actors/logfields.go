package actors

import (
	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/actors/core"
)

// Log field names, stable for anyone who parses the JSON logs.
const (
	FieldWorker     = "worker"
	FieldPID        = "pid"
	FieldGeneration = "generation"
	FieldState      = "state"
	FieldSlot       = "slot"
	FieldReason     = "reason"
)

// withWorker adds the fields that every line about a worker carries.
func withWorker(e *zerolog.Event, w core.Worker) *zerolog.Event {
	e = e.Int(FieldWorker, int(w.ID)).Int(FieldSlot, w.Slot).Int(FieldGeneration, w.Generation).Str(FieldState, string(w.State))
	if w.PID != 0 {
		e = e.Int(FieldPID, w.PID)
	}
	return e
}
