package journal

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/dutchmaster/dutchmaster/actors/core"
)

// ReplayOptions adjust a replay.
type ReplayOptions struct {
	// Policies are custom policies by name, for journals recorded with one.
	Policies map[string]core.Policy
	// AfterStep, if set, is called after every step that replayed the same
	// decisions, with the cluster's view before and after it; an error
	// stops the replay and is returned (wrapped with the line).
	AfterStep func(Step) error
}

// Step is one replayed step, for ReplayOptions.AfterStep.
type Step struct {
	Line  int // 1-based line of the journal
	At    time.Duration
	Input core.Input
	// Decisions are every decision of the replayed step, facts included
	// whatever the journal's version.
	Decisions []core.Decision
	// Before and After are the cluster's views around the step.
	Before, After core.View
	// Config is the configuration in force after the step.
	Config core.Config
}

// Summary says what a replay covered.
type Summary struct {
	Header Header
	Steps  int
	// Decisions counts the decisions compared (those the journal's
	// version records).
	Decisions int
	// Truncated: the journal's last line was cut short (the master died
	// while writing it); it was ignored.
	Truncated bool
	// Upgrades counts the upgrades replayed (a handover and a resume of
	// the core), FailedUpgrades those whose exec failed (the old image
	// went on).
	Upgrades, FailedUpgrades int
	// UpgradeUnfinished: the journal ends at an upgrade that neither
	// resumed nor failed (the new image did not start, or did not go on
	// recording).
	UpgradeUnfinished bool
}

// FormatError is a journal that cannot be read: not a journal, another
// version, a line that is not valid JSON or names an unknown type.
type FormatError struct {
	Line int
	Err  error
}

func (e *FormatError) Error() string { return fmt.Sprintf("journal line %d: %v", e.Line, e.Err) }
func (e *FormatError) Unwrap() error { return e.Err }

// Mismatch is the first step whose replayed decisions differ from the
// recorded ones. Recorded and Replayed are the first differing decision's
// journal forms; one of them is empty when one side has fewer decisions.
type Mismatch struct {
	Line     int
	At       time.Duration
	Input    string // the input's journal form
	Index    int    // 0-based index of the first differing decision
	Recorded string
	Replayed string
	// RecordedCount and ReplayedCount are how many decisions each side has.
	RecordedCount, ReplayedCount int
}

func (m *Mismatch) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "journal line %d (at %s, input %s): decision %d differs", m.Line, m.At, m.Input, m.Index+1)
	if m.RecordedCount != m.ReplayedCount {
		fmt.Fprintf(&b, " (%d recorded, %d replayed)", m.RecordedCount, m.ReplayedCount)
	}
	show := func(s string) string {
		if s == "" {
			return "(none)"
		}
		return s
	}
	fmt.Fprintf(&b, "\n  recorded: %s\n  replayed: %s", show(m.Recorded), show(m.Replayed))
	return b.String()
}

// MaxLine bounds a journal line that Replay reads. A step of the largest
// cluster (core.MaxWorkers workers, each with a few decisions of a few
// hundred bytes) takes a few MiB.
const MaxLine = 64 << 20

// ReplayFile replays the journal at path; see Replay.
func ReplayFile(path string, opts ReplayOptions) (Summary, error) {
	f, err := os.Open(path)
	if err != nil {
		return Summary{}, err
	}
	defer f.Close()
	return Replay(f, opts)
}

// Replay feeds every input of the journal through a fresh core.Cluster,
// built with the header's configuration, at the recorded times on a
// scripted clock starting at Epoch, and checks that each step decides
// exactly what was recorded. It returns a *Mismatch at the first
// difference and a *FormatError for a journal it cannot read.
func Replay(r io.Reader, opts ReplayOptions) (Summary, error) {
	var sum Summary
	br := bufio.NewReaderSize(r, 64<<10)
	line := 0
	// A line is read only up to MaxLine: a file that is not a journal (or
	// a damaged one) must not take the reader's memory with one endless
	// line.
	next := func() ([]byte, bool, error) {
		var b []byte
		for {
			chunk, err := br.ReadSlice('\n')
			if len(b)+len(chunk) > MaxLine {
				return nil, false, &FormatError{Line: line + 1, Err: fmt.Errorf("longer than %d MiB, which no journal line is: not a journal, or a damaged one", MaxLine>>20)}
			}
			b = append(b, chunk...)
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			if len(b) == 0 && err == io.EOF {
				return nil, false, io.EOF
			}
			if err != nil && err != io.EOF {
				return nil, false, err
			}
			line++
			complete := err == nil
			return bytes.TrimRight(b, "\r\n"), complete, nil
		}
	}

	first, _, err := next()
	if err == io.EOF {
		return sum, &FormatError{Line: 1, Err: errors.New("empty file: not a journal")}
	}
	if err != nil {
		return sum, err
	}
	h, err := decodeHeader(first)
	if err != nil {
		return sum, &FormatError{Line: 1, Err: err}
	}
	sum.Header = h
	cfg, err := h.Config.Core(opts.Policies)
	if err != nil {
		return sum, &FormatError{Line: 1, Err: err}
	}
	c := core.New(cfg)
	var up *pendingUpgrade // an upgrade line not yet resumed or failed
	var lastAt time.Duration
	for {
		b, complete, err := next()
		if err == io.EOF {
			sum.UpgradeUnfinished = up != nil
			return sum, nil
		}
		if err != nil {
			return sum, err
		}
		if len(bytes.TrimSpace(b)) == 0 {
			continue
		}
		var s stepLine
		if err := json.Unmarshal(b, &s); err != nil {
			if !complete {
				sum.Truncated = true
				return sum, nil
			}
			return sum, &FormatError{Line: line, Err: err}
		}
		if kinds := s.kinds(); kinds != 1 {
			return sum, &FormatError{Line: line, Err: fmt.Errorf(`%d kinds of line in one: a line is a step ("input") or one upgrade line ("upgrade", "resumed", "upgrade_failed")`, kinds)}
		}
		if s.Input == nil {
			if c, up, err = replayUpgrade(c, h.Version, line, lastAt, up, s, &sum); err != nil {
				return sum, err
			}
			lastAt = time.Duration(s.At)
			continue
		}
		if up != nil {
			return sum, &FormatError{Line: line, Err: fmt.Errorf("a step between the upgrade at line %d and its resumed (or upgrade_failed) line", up.line)}
		}
		if err := replayStep(c, h.Version, line, s, opts, &sum); err != nil {
			return sum, err
		}
		lastAt = time.Duration(s.At)
	}
}

func decodeHeader(b []byte) (Header, error) {
	var h Header
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil || h.Journal != Magic {
		return h, errors.New(`not a dutchmaster journal (the first line must be its header, {"journal":"dutchmaster",...})`)
	}
	if h.Version < 1 || h.Version > Version {
		return h, fmt.Errorf("journal version %d: this dutchmaster reads versions 1 to %d", h.Version, Version)
	}
	return h, nil
}

// replayStep steps c with one recorded input and compares the decisions,
// leaving out of the replayed ones those the journal's version does not
// record.
func replayStep(c *core.Cluster, version, line int, s stepLine, opts ReplayOptions, sum *Summary) error {
	in, err := DecodeInput(s.Input, opts.Policies)
	if err != nil {
		return &FormatError{Line: line, Err: fmt.Errorf("input: %w", err)}
	}
	recorded := make([]string, len(s.Decisions))
	for i, raw := range s.Decisions {
		d, err := DecodeDecision(raw, Epoch)
		if err != nil {
			return &FormatError{Line: line, Err: fmt.Errorf("decision %d: %w", i+1, err)}
		}
		if !recordedIn(version, d) {
			return &FormatError{Line: line, Err: fmt.Errorf("decision %d: a %T in a version %d journal, which does not record them", i+1, d, version)}
		}
		canon, err := EncodeDecision(d, Epoch)
		if err != nil {
			return &FormatError{Line: line, Err: err}
		}
		recorded[i] = string(canon)
	}
	at := time.Duration(s.At)
	var before core.View
	if opts.AfterStep != nil {
		before = c.View()
	}
	out := c.Step(Epoch.Add(at), in)
	replayed := make([]string, 0, len(out))
	for _, d := range out {
		if !recordedIn(version, d) {
			continue
		}
		raw, err := EncodeDecision(d, Epoch)
		if err != nil {
			return err
		}
		replayed = append(replayed, string(raw))
	}
	for i := range max(len(recorded), len(replayed)) {
		var rec, rep string
		if i < len(recorded) {
			rec = recorded[i]
		}
		if i < len(replayed) {
			rep = replayed[i]
		}
		if rec != rep {
			return &Mismatch{Line: line, At: at, Input: string(s.Input), Index: i, Recorded: rec, Replayed: rep,
				RecordedCount: len(recorded), ReplayedCount: len(replayed)}
		}
	}
	sum.Steps++
	sum.Decisions += len(replayed)
	if opts.AfterStep != nil {
		step := Step{Line: line, At: at, Input: in, Decisions: out, Before: before, After: c.View(), Config: c.Config()}
		if err := opts.AfterStep(step); err != nil {
			return fmt.Errorf("journal line %d (at %s, input %s): %w", line, at, s.Input, err)
		}
	}
	return nil
}
