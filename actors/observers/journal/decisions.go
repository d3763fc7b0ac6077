package journal

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/fsm"
)

// The journal forms of core's decisions.
type (
	forkOut struct {
		Type        string `json:"type"`
		Worker      int    `json:"worker"`
		Slot        int    `json:"slot"`
		Generation  int    `json:"generation"`
		Replacement bool   `json:"replacement"`
		MaxRequests int    `json:"max_requests,omitempty"`
	}
	recycledOut struct {
		Type   string `json:"type"`
		Worker int    `json:"worker"`
		Cause  string `json:"cause"`
	}
	orderOut struct { // Drain, Kill, Abort, WatchdogMissed
		Type   string `json:"type"`
		Worker int    `json:"worker"`
		Reason string `json:"reason"`
	}
	setTimerOut struct {
		Type  string   `json:"type"`
		Timer timer    `json:"timer"`
		After Duration `json:"after"`
	}
	noteOut struct {
		Type    string  `json:"type"`
		Level   string  `json:"level"`
		Message string  `json:"message"`
		Worker  *worker `json:"worker,omitempty"`
		Fields  []field `json:"fields,omitempty"`
	}
	emptyOut struct { // Stopped
		Type string `json:"type"`
	}
	targetOut struct {
		Type   string `json:"type"`
		Target int    `json:"target"`
	}
	rolloutStartedOut struct {
		Type       string `json:"type"`
		Generation int    `json:"generation"`
		Baseline   int    `json:"baseline"`
		Source     string `json:"source"`
	}
	rolloutEndedOut struct {
		Type    string `json:"type"`
		Outcome string `json:"outcome"`
		Reason  string `json:"reason,omitempty"`
	}
	rolloutCoalescedOut struct {
		Type       string `json:"type"`
		Generation int    `json:"generation"`
		Source     string `json:"source"`
	}
	readyOut struct {
		Type       string `json:"type"`
		Generation int    `json:"generation"`
		Workers    int    `json:"workers"`
	}
	// refusedOut holds the refused input in its own journal form.
	refusedOut struct {
		Type   string          `json:"type"`
		Input  json.RawMessage `json:"input"`
		Reason string          `json:"reason"`
	}
	// worker is core.Worker; its times are offsets from the journal's start.
	worker struct {
		ID               int       `json:"id"`
		Slot             int       `json:"slot"`
		Generation       int       `json:"generation"`
		State            string    `json:"state"`
		PID              int       `json:"pid,omitempty"`
		ForkedAt         *Duration `json:"forked_at,omitempty"`
		ReadyAt          *Duration `json:"ready_at,omitempty"`
		Replacement      bool      `json:"replacement,omitempty"`
		RestartRequested bool      `json:"restart_requested,omitempty"`
		Due              bool      `json:"due,omitempty"`
	}
	// field is a Note's key and value; exactly one value is set. The
	// core writes strings, ints and durations; anything else is kept as
	// its text (Other), which replays to the same text.
	field struct {
		Key      string    `json:"key"`
		String   *string   `json:"string,omitempty"`
		Int      *int      `json:"int,omitempty"`
		Duration *Duration `json:"duration,omitempty"`
		Other    *string   `json:"other,omitempty"`
	}
)

// Other is how a Note field value of a type the journal does not know
// comes back from a journal: its text.
type Other string

// EncodeDecision is the journal form of one decision; times are written as
// offsets from start.
func EncodeDecision(d core.Decision, start time.Time) (json.RawMessage, error) {
	var v any
	switch d := d.(type) {
	case core.Fork:
		v = forkOut{"Fork", int(d.Worker), d.Slot, d.Generation, d.Replacement, d.MaxRequests}
	case core.Abort:
		v = orderOut{"Abort", int(d.Worker), d.Reason}
	case core.WatchdogMissed:
		v = orderOut{"WatchdogMissed", int(d.Worker), d.Reason}
	case core.Recycled:
		v = recycledOut{"Recycled", int(d.Worker), d.Cause}
	case core.Drain:
		v = orderOut{"Drain", int(d.Worker), d.Reason}
	case core.Kill:
		v = orderOut{"Kill", int(d.Worker), d.Reason}
	case core.SetTimer:
		v = setTimerOut{"SetTimer", encodeTimer(d.Timer), Duration(d.After)}
	case core.Note:
		n := noteOut{Type: "Note", Level: d.Level.String(), Message: d.Message}
		if d.Worker != nil {
			w := encodeWorker(*d.Worker, start)
			n.Worker = &w
		}
		for _, f := range d.Fields {
			n.Fields = append(n.Fields, encodeField(f))
		}
		v = n
	case core.Stopped:
		v = emptyOut{"Stopped"}
	case core.TargetChanged:
		v = targetOut{"TargetChanged", d.Target}
	case core.RolloutStarted:
		v = rolloutStartedOut{"RolloutStarted", d.Generation, d.Baseline, d.Source}
	case core.RolloutEnded:
		v = rolloutEndedOut{"RolloutEnded", d.Outcome, d.Reason}
	case core.RolloutCoalesced:
		v = rolloutCoalescedOut{"RolloutCoalesced", d.Generation, d.Source}
	case core.Ready:
		v = readyOut{"Ready", d.Generation, d.Workers}
	case core.Refused:
		in, err := EncodeInput(d.Input)
		if err != nil {
			return nil, fmt.Errorf("journal: refused input: %w", err)
		}
		v = refusedOut{"Refused", in, d.Reason}
	default:
		return nil, fmt.Errorf("journal: decision %T has no journal form", d)
	}
	return json.Marshal(v)
}

// DecodeDecision reads the journal form of one decision; offsets become
// times from start.
func DecodeDecision(raw json.RawMessage, start time.Time) (core.Decision, error) {
	typ, err := typeOf(raw)
	if err != nil {
		return nil, err
	}
	switch typ {
	case "Fork":
		v, err := decodeAs[forkOut](raw)
		return core.Fork{Worker: core.WorkerID(v.Worker), Slot: v.Slot, Generation: v.Generation, Replacement: v.Replacement, MaxRequests: v.MaxRequests}, err
	case "Abort":
		v, err := decodeAs[orderOut](raw)
		return core.Abort{Worker: core.WorkerID(v.Worker), Reason: v.Reason}, err
	case "WatchdogMissed":
		v, err := decodeAs[orderOut](raw)
		return core.WatchdogMissed{Worker: core.WorkerID(v.Worker), Reason: v.Reason}, err
	case "Recycled":
		v, err := decodeAs[recycledOut](raw)
		return core.Recycled{Worker: core.WorkerID(v.Worker), Cause: v.Cause}, err
	case "Drain":
		v, err := decodeAs[orderOut](raw)
		return core.Drain{Worker: core.WorkerID(v.Worker), Reason: v.Reason}, err
	case "Kill":
		v, err := decodeAs[orderOut](raw)
		return core.Kill{Worker: core.WorkerID(v.Worker), Reason: v.Reason}, err
	case "SetTimer":
		v, err := decodeAs[setTimerOut](raw)
		return core.SetTimer{Timer: v.Timer.core(), After: time.Duration(v.After)}, err
	case "Note":
		v, err := decodeAs[noteOut](raw)
		if err != nil {
			return nil, err
		}
		return v.core(start)
	case "Stopped":
		_, err := decodeAs[emptyOut](raw)
		return core.Stopped{}, err
	case "TargetChanged":
		v, err := decodeAs[targetOut](raw)
		return core.TargetChanged{Target: v.Target}, err
	case "RolloutStarted":
		v, err := decodeAs[rolloutStartedOut](raw)
		return core.RolloutStarted{Generation: v.Generation, Baseline: v.Baseline, Source: v.Source}, err
	case "RolloutEnded":
		v, err := decodeAs[rolloutEndedOut](raw)
		return core.RolloutEnded{Outcome: v.Outcome, Reason: v.Reason}, err
	case "RolloutCoalesced":
		v, err := decodeAs[rolloutCoalescedOut](raw)
		return core.RolloutCoalesced{Generation: v.Generation, Source: v.Source}, err
	case "Ready":
		v, err := decodeAs[readyOut](raw)
		return core.Ready{Generation: v.Generation, Workers: v.Workers}, err
	case "Refused":
		v, err := decodeAs[refusedOut](raw)
		if err != nil {
			return nil, err
		}
		in, err := DecodeInput(v.Input, nil)
		if err != nil {
			return nil, fmt.Errorf("refused input: %w", err)
		}
		return core.Refused{Input: in, Reason: v.Reason}, nil
	}
	return nil, fmt.Errorf("unknown decision type %q", typ)
}

func (n noteOut) core(start time.Time) (core.Decision, error) {
	level, err := zerolog.ParseLevel(n.Level)
	if err != nil {
		return nil, fmt.Errorf("note level: %w", err)
	}
	out := core.Note{Level: level, Message: n.Message}
	if n.Worker != nil {
		w := n.Worker.core(start)
		out.Worker = &w
	}
	for _, f := range n.Fields {
		cf, err := f.core()
		if err != nil {
			return nil, err
		}
		out.Fields = append(out.Fields, cf)
	}
	return out, nil
}

func encodeWorker(w core.Worker, start time.Time) worker {
	return worker{
		ID: int(w.ID), Slot: w.Slot, Generation: w.Generation, State: string(w.State), PID: w.PID,
		ForkedAt: offset(w.ForkedAt, start), ReadyAt: offset(w.ReadyAt, start),
		Replacement: w.Replacement, RestartRequested: w.RestartRequested, Due: w.Due,
	}
}

func (w worker) core(start time.Time) core.Worker {
	return core.Worker{
		ID: core.WorkerID(w.ID), Slot: w.Slot, Generation: w.Generation, State: fsm.State(w.State), PID: w.PID,
		ForkedAt: instant(w.ForkedAt, start), ReadyAt: instant(w.ReadyAt, start),
		Replacement: w.Replacement, RestartRequested: w.RestartRequested, Due: w.Due,
	}
}

// offset is t as an offset from start, nil for the zero time.
func offset(t, start time.Time) *Duration {
	if t.IsZero() {
		return nil
	}
	d := Duration(t.Sub(start))
	return &d
}

func instant(d *Duration, start time.Time) time.Time {
	if d == nil {
		return time.Time{}
	}
	return start.Add(time.Duration(*d))
}

func encodeField(f core.Field) field {
	out := field{Key: f.Key}
	switch v := f.Value.(type) {
	case string:
		out.String = &v
	case int:
		out.Int = &v
	case time.Duration:
		d := Duration(v)
		out.Duration = &d
	case Other:
		s := string(v)
		out.Other = &s
	default:
		s := fmt.Sprint(v)
		out.Other = &s
	}
	return out
}

func (f field) core() (core.Field, error) {
	set := 0
	var v any
	if f.String != nil {
		set, v = set+1, *f.String
	}
	if f.Int != nil {
		set, v = set+1, *f.Int
	}
	if f.Duration != nil {
		set, v = set+1, time.Duration(*f.Duration)
	}
	if f.Other != nil {
		set, v = set+1, Other(*f.Other)
	}
	if set != 1 {
		return core.Field{}, fmt.Errorf("note field %q: want exactly one of string, int, duration, other", f.Key)
	}
	return core.Field{Key: f.Key, Value: v}, nil
}
