package journal

import (
	"bytes"
	"encoding/json"
	"fmt"
	"syscall"
	"time"

	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/fsm"
)

// The journal forms of core's inputs: each has the type tag first, then
// the fields of the core type.
type (
	startIn struct {
		Type   string `json:"type"`
		Target int    `json:"target"`
	}
	restartIn struct {
		Type   string `json:"type"`
		Source string `json:"source"`
		Target int    `json:"target,omitempty"`
	}
	workerIn struct { // WorkerListening, WorkerDraining, WorkerHeartbeat, WatchdogTriggered
		Type   string `json:"type"`
		Worker int    `json:"worker"`
	}
	workerRestartIn struct {
		Type   string `json:"type"`
		Worker int    `json:"worker"`
		Reason string `json:"reason,omitempty"`
	}
	extendIn struct {
		Type   string   `json:"type"`
		Worker int      `json:"worker"`
		By     Duration `json:"by"`
	}
	usageIn struct {
		Type    string      `json:"type"`
		Samples []rssSample `json:"samples"`
	}
	rssSample struct {
		Worker int   `json:"worker"`
		RSS    int64 `json:"rss"`
	}
	replaceWorkerIn struct {
		Type   string `json:"type"`
		Worker int    `json:"worker"`
		Source string `json:"source"`
	}
	stopIn struct {
		Type   string `json:"type"`
		Source string `json:"source"`
	}
	scaleByIn struct {
		Type   string `json:"type"`
		Delta  int    `json:"delta"`
		Source string `json:"source"`
	}
	scaleToIn struct {
		Type   string `json:"type"`
		Target int    `json:"target"`
		Source string `json:"source"`
	}
	reconfigureIn struct {
		Type   string `json:"type"`
		Config Config `json:"config"`
	}
	spawnedIn struct {
		Type   string `json:"type"`
		Worker int    `json:"worker"`
		PID    int    `json:"pid"`
	}
	exitedIn struct {
		Type   string     `json:"type"`
		Worker int        `json:"worker"`
		Reason exitReason `json:"reason"`
	}
	timerIn struct {
		Type  string `json:"type"`
		Timer timer  `json:"timer"`
	}
	exitReason struct {
		Kind   string `json:"kind"`
		Code   int    `json:"code,omitempty"`
		Signal int    `json:"signal,omitempty"`
		Detail string `json:"detail,omitempty"`
	}
	timer struct {
		Kind   string `json:"kind"`
		Worker int    `json:"worker,omitempty"`
		Slot   int    `json:"slot,omitempty"`
		Seq    int    `json:"seq,omitempty"`
	}
)

// EncodeInput is the journal form of one input. Reconfigure records its
// policy by name (see Policy).
func EncodeInput(in core.Input) (json.RawMessage, error) {
	var v any
	switch in := in.(type) {
	case core.Start:
		v = startIn{"Start", in.Target}
	case core.RestartRequested:
		v = restartIn{"RestartRequested", in.Source, in.Target}
	case core.WorkerRestartRequested:
		v = workerRestartIn{"WorkerRestartRequested", int(in.Worker), in.Reason}
	case core.WorkerHeartbeat:
		v = workerIn{"WorkerHeartbeat", int(in.Worker)}
	case core.WatchdogTriggered:
		v = workerIn{"WatchdogTriggered", int(in.Worker)}
	case core.ReadyTimeoutExtended:
		v = extendIn{"ReadyTimeoutExtended", int(in.Worker), Duration(in.By)}
	case core.UsageSampled:
		u := usageIn{Type: "UsageSampled", Samples: make([]rssSample, len(in.Samples))}
		for i, s := range in.Samples {
			u.Samples[i] = rssSample{int(s.Worker), s.RSS}
		}
		v = u
	case core.ReplaceWorker:
		v = replaceWorkerIn{"ReplaceWorker", int(in.Worker), in.Source}
	case core.StopRequested:
		v = stopIn{"StopRequested", in.Source}
	case core.ScaleBy:
		v = scaleByIn{"ScaleBy", in.Delta, in.Source}
	case core.ScaleTo:
		v = scaleToIn{"ScaleTo", in.Target, in.Source}
	case core.Reconfigure:
		v = reconfigureIn{"Reconfigure", EncodeConfig(in.Config)}
	case core.WorkerSpawned:
		v = spawnedIn{"WorkerSpawned", int(in.Worker), in.PID}
	case core.WorkerListening:
		v = workerIn{"WorkerListening", int(in.Worker)}
	case core.WorkerDraining:
		v = workerIn{"WorkerDraining", int(in.Worker)}
	case core.WorkerExited:
		v = exitedIn{"WorkerExited", int(in.Worker), encodeReason(in.Reason)}
	case core.TimerFired:
		v = timerIn{"TimerFired", encodeTimer(in.Timer)}
	default:
		return nil, fmt.Errorf("journal: input %T has no journal form", in)
	}
	return json.Marshal(v)
}

// DecodeInput reads the journal form of one input. Custom policies in a
// Reconfigure are looked up in policies.
func DecodeInput(raw json.RawMessage, policies map[string]core.Policy) (core.Input, error) {
	typ, err := typeOf(raw)
	if err != nil {
		return nil, err
	}
	switch typ {
	case "Start":
		v, err := decodeAs[startIn](raw)
		return core.Start{Target: v.Target}, err
	case "RestartRequested":
		v, err := decodeAs[restartIn](raw)
		return core.RestartRequested{Source: v.Source, Target: v.Target}, err
	case "WorkerRestartRequested":
		v, err := decodeAs[workerRestartIn](raw)
		return core.WorkerRestartRequested{Worker: core.WorkerID(v.Worker), Reason: v.Reason}, err
	case "WorkerHeartbeat":
		v, err := decodeAs[workerIn](raw)
		return core.WorkerHeartbeat{Worker: core.WorkerID(v.Worker)}, err
	case "WatchdogTriggered":
		v, err := decodeAs[workerIn](raw)
		return core.WatchdogTriggered{Worker: core.WorkerID(v.Worker)}, err
	case "ReadyTimeoutExtended":
		v, err := decodeAs[extendIn](raw)
		return core.ReadyTimeoutExtended{Worker: core.WorkerID(v.Worker), By: time.Duration(v.By)}, err
	case "UsageSampled":
		v, err := decodeAs[usageIn](raw)
		in := core.UsageSampled{Samples: make([]core.RSSSample, len(v.Samples))}
		for i, s := range v.Samples {
			in.Samples[i] = core.RSSSample{Worker: core.WorkerID(s.Worker), RSS: s.RSS}
		}
		return in, err
	case "WorkerListening":
		v, err := decodeAs[workerIn](raw)
		return core.WorkerListening{Worker: core.WorkerID(v.Worker)}, err
	case "WorkerDraining":
		v, err := decodeAs[workerIn](raw)
		return core.WorkerDraining{Worker: core.WorkerID(v.Worker)}, err
	case "ReplaceWorker":
		v, err := decodeAs[replaceWorkerIn](raw)
		return core.ReplaceWorker{Worker: core.WorkerID(v.Worker), Source: v.Source}, err
	case "StopRequested":
		v, err := decodeAs[stopIn](raw)
		return core.StopRequested{Source: v.Source}, err
	case "ScaleBy":
		v, err := decodeAs[scaleByIn](raw)
		return core.ScaleBy{Delta: v.Delta, Source: v.Source}, err
	case "ScaleTo":
		v, err := decodeAs[scaleToIn](raw)
		return core.ScaleTo{Target: v.Target, Source: v.Source}, err
	case "Reconfigure":
		v, err := decodeAs[reconfigureIn](raw)
		if err != nil {
			return nil, err
		}
		cfg, err := v.Config.Core(policies)
		if err != nil {
			return nil, fmt.Errorf("Reconfigure: %w", err)
		}
		return core.Reconfigure{Config: cfg}, nil
	case "WorkerSpawned":
		v, err := decodeAs[spawnedIn](raw)
		return core.WorkerSpawned{Worker: core.WorkerID(v.Worker), PID: v.PID}, err
	case "WorkerExited":
		v, err := decodeAs[exitedIn](raw)
		return core.WorkerExited{Worker: core.WorkerID(v.Worker), Reason: v.Reason.core()}, err
	case "TimerFired":
		v, err := decodeAs[timerIn](raw)
		return core.TimerFired{Timer: v.Timer.core()}, err
	}
	return nil, fmt.Errorf("unknown input type %q", typ)
}

func encodeReason(r fsm.ExitReason) exitReason {
	return exitReason{Kind: string(r.Kind), Code: r.Code, Signal: int(r.Signal), Detail: r.Detail}
}

func (r exitReason) core() fsm.ExitReason {
	return fsm.ExitReason{Kind: fsm.ExitKind(r.Kind), Code: r.Code, Signal: syscall.Signal(r.Signal), Detail: r.Detail}
}

func encodeTimer(t core.Timer) timer {
	return timer{Kind: string(t.Kind), Worker: int(t.Worker), Slot: t.Slot, Seq: t.Seq}
}

func (t timer) core() core.Timer {
	return core.Timer{Kind: core.TimerKind(t.Kind), Worker: core.WorkerID(t.Worker), Slot: t.Slot, Seq: t.Seq}
}

// typeOf reads the type tag of an input or decision.
func typeOf(raw json.RawMessage) (string, error) {
	var t struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(raw, &t); err != nil {
		return "", err
	}
	if t.Type == "" {
		return "", fmt.Errorf("no \"type\" in %s", raw)
	}
	return t.Type, nil
}

// decodeAs decodes raw into a T, refusing fields T does not have: an
// edited journal with a misspelt field is an error, not a silent zero.
func decodeAs[T any](raw json.RawMessage) (T, error) {
	var v T
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	err := dec.Decode(&v)
	return v, err
}
