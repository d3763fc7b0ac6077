package journal_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/dutchmaster/dutchmaster/actors/core"
	"github.com/dutchmaster/dutchmaster/actors/observers/journal"
)

// FuzzReplay: any file given to `dutchmaster replay` is replayed or
// refused without a panic: the outcome is a summary, a *FormatError naming
// a line of the file, or a *Mismatch at a step.
func FuzzReplay(f *testing.F) {
	j := record(f, core.Config{}, rollingRestart(f))
	f.Add(j)
	f.Add(j[:len(j)-7]) // cut inside the last line
	first, _, _ := bytes.Cut(j, []byte("\n"))
	f.Add(append(append(first, '\n'), `{"at":"1s","input":{"type":"Start","target":2},"decisions":[]}`+"\n"...))
	f.Add([]byte(""))
	f.Add(recordUpgradeDuringRollout(f, time.Second))
	f.Add([]byte(`{"journal":"dutchmaster","version":99}` + "\n"))
	f.Add(append(append(first, '\n'), "{\"at\":\n"...))
	f.Fuzz(func(t *testing.T, file []byte) {
		_, err := journal.Replay(bytes.NewReader(file), journal.ReplayOptions{})
		var fe *journal.FormatError
		var mm *journal.Mismatch
		switch {
		case err == nil, errors.As(err, &mm):
		case errors.As(err, &fe):
			if lines := bytes.Count(file, []byte("\n")) + 1; fe.Line < 1 || fe.Line > lines {
				t.Fatalf("format error at line %d of a %d-line file: %v", fe.Line, lines, err)
			}
		default:
			t.Fatalf("replay: %v, neither a format error nor a mismatch", err)
		}
	})
}

// FuzzDecodeInput: any input line decodes or is refused without a panic,
// and one that decodes is written back (EncodeInput) to a form that
// decodes to the same form again: decoding loses nothing a replay needs.
func FuzzDecodeInput(f *testing.F) {
	for _, in := range []core.Input{
		core.Start{Target: 3}, core.RestartRequested{Source: "SIGUSR2", Target: 4},
		core.WorkerRestartRequested{Worker: 7}, core.StopRequested{Source: "control"},
		core.ReplaceWorker{Worker: 3, Source: "ctl#1 pid=42"},
		core.ScaleBy{Delta: -1, Source: "SIGTTOU"}, core.ScaleTo{Target: 5, Source: "control"},
		core.Reconfigure{Config: core.Config{MaxSurge: 2, Policy: core.Canary{MaxSurge: 2}}},
		core.WorkerSpawned{Worker: 2, PID: 4242}, core.WorkerListening{Worker: 2},
		core.WorkerDraining{Worker: 2}, core.TimerFired{Timer: core.Timer{Kind: core.PolicyWake, Seq: 9}},
	} {
		raw, err := journal.EncodeInput(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(raw))
	}
	f.Add([]byte(`{"type":"Reconfigure","config":{"policy":"mine"}}`))
	f.Add([]byte(`{"type":"WorkerExited","worker":1,"reason":{"kind":"signal","signal":9}}`))
	f.Add([]byte(`{"type":"Nope"}`))
	f.Add([]byte(`{"type":7}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		in, err := journal.DecodeInput(raw, nil)
		if err != nil {
			return
		}
		canon, err := journal.EncodeInput(in)
		if err != nil {
			t.Fatalf("%s decoded to %#v, which has no journal form: %v", raw, in, err)
		}
		back, err := journal.DecodeInput(canon, nil)
		if err != nil {
			t.Fatalf("%s: its canonical form %s does not decode: %v", raw, canon, err)
		}
		again, err := journal.EncodeInput(back)
		if err != nil || !bytes.Equal(again, canon) {
			t.Fatalf("%s: canonical form %s reads back as %s, %v", raw, canon, again, err)
		}
	})
}

// FuzzDecodeDecision: the same for a recorded decision.
func FuzzDecodeDecision(f *testing.F) {
	j := record(f, core.Config{}, rollingRestart(f))
	for line := range bytes.Lines(j) {
		var step struct{ Decisions []json.RawMessage }
		if json.Unmarshal(line, &step) == nil {
			for _, d := range step.Decisions {
				f.Add([]byte(d))
			}
		}
	}
	f.Add([]byte(`{"type":"Note","level":"nope","message":"x"}`))
	f.Add([]byte(`{"type":"SetTimer","timer":{"kind":"x"},"after":"-1s"}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		d, err := journal.DecodeDecision(raw, journal.Epoch)
		if err != nil {
			return
		}
		canon, err := journal.EncodeDecision(d, journal.Epoch)
		if err != nil {
			t.Fatalf("%s decoded to %#v, which has no journal form: %v", raw, d, err)
		}
		back, err := journal.DecodeDecision(canon, journal.Epoch)
		if err != nil {
			t.Fatalf("%s: its canonical form %s does not decode: %v", raw, canon, err)
		}
		again, err := journal.EncodeDecision(back, journal.Epoch)
		if err != nil || !bytes.Equal(again, canon) {
			t.Fatalf("%s: canonical form %s reads back as %s, %v", raw, canon, again, err)
		}
	})
}
