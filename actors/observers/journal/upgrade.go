package journal

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/dutchmaster/dutchmaster/actors/core"
)

// An in-place upgrade (docs/upgrade.md) goes through the journal as
// three kinds of line besides the steps: upgrade, resumed and
// upgrade_failed (see the package documentation, "Upgrades").

// Image is one master binary of an upgrade.
type Image struct {
	// Binary is the executable's path.
	Binary string `json:"binary"`
	// Version is the binary's version, "" when not known (the old image
	// may not know the new one's).
	Version string `json:"version,omitempty"`
}

// UpgradeRecord is what the old image records of an upgrade.
type UpgradeRecord struct {
	From Image `json:"from"`
	To   Image `json:"to"`
	// StateFormat is the format of the core's handed state
	// (core.StateFormat of the old image).
	StateFormat int `json:"state_format"`
}

// State is what the new image needs to continue a recording: plain
// JSON, carried in the handed state.
type State struct {
	// Path is the journal's path, for messages (the file is taken over
	// by its descriptor, not reopened: it may have been moved).
	Path string `json:"path,omitempty"`
	// FD is the number of the journal file's descriptor, which stays
	// open, owned by the Recorder, over the exec; -1 when the recording
	// goes to a writer that is not a file Create opened.
	FD int `json:"fd"`
	// Version is the journal version the file is written in.
	Version int `json:"version"`
	// At is the handover's instant, counted from the recording's start.
	At Duration `json:"at"`
	// HandedAt is the handover's wall clock time: the new image measures
	// the pause of the exec from it.
	HandedAt time.Time `json:"handed_at"`
}

// The journal forms of the upgrade lines.
type (
	upgradeLine struct {
		UpgradeRecord
		HandedAt time.Time `json:"handed_at"`
	}
	resumedLine struct {
		Version string            `json:"version,omitempty"`
		Timers  []json.RawMessage `json:"timers,omitempty"`
	}
	upgradeFailedLine struct {
		Error string `json:"error"`
	}
)

// Upgrade records the upgrade at at, the instant the core was handed
// over (exactly the now given to its Handover: the replay hands over at
// that instant), and returns what the new image gives Continue. The
// journal's descriptor (State.FD) stays open and owned by r: the caller
// clears its close-on-exec flag just before the exec, and must not Close
// r. After a failed exec, UpgradeFailed, and the recording goes on.
func (r *Recorder) Upgrade(at time.Time, rec UpgradeRecord) (State, error) {
	if err := rec.check(); err != nil {
		return State{}, fmt.Errorf("journal: upgrade record: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usable(); err != nil {
		return State{}, err
	}
	off := at.Sub(r.start)
	line, err := json.Marshal(struct {
		At      Duration    `json:"at"`
		Upgrade upgradeLine `json:"upgrade"`
	}{Duration(off), upgradeLine{rec, at.Round(0)}})
	if err != nil {
		return State{}, err
	}
	r.writeLine(line)
	if r.err != nil {
		return State{}, r.err
	}
	st := State{Path: r.path, FD: -1, Version: Version, At: Duration(off), HandedAt: at.Round(0)}
	if f, ok := r.closer.(*os.File); ok {
		st.FD = int(f.Fd())
	}
	return st, nil
}

// UpgradeFailed records that the exec of an upgrade failed at now: the
// old image goes on, its core untouched by the handover.
func (r *Recorder) UpgradeFailed(now time.Time, reason error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usable(); err != nil {
		return err
	}
	line, err := json.Marshal(struct {
		At     Duration          `json:"at"`
		Failed upgradeFailedLine `json:"upgrade_failed"`
	}{Duration(now.Sub(r.start)), upgradeFailedLine{reason.Error()}})
	if err != nil {
		return err
	}
	r.writeLine(line)
	return r.err
}

// Resumed records, in the new image, that the core resumed at now
// (exactly the now given to core.Resume) with timers, the SetTimer
// decisions core.Resume returned; version is the new image's version.
// The replay resumes its core at the same instant and compares the timers.
func (r *Recorder) Resumed(now time.Time, version string, timers []core.Decision) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usable(); err != nil {
		return err
	}
	l := resumedLine{Version: version}
	for _, d := range timers {
		if _, ok := d.(core.SetTimer); !ok {
			return fmt.Errorf("journal: resumed: a %T among the timers", d)
		}
		raw, err := EncodeDecision(d, r.start)
		if err != nil {
			return err
		}
		l.Timers = append(l.Timers, raw)
	}
	line, err := json.Marshal(struct {
		At      Duration    `json:"at"`
		Resumed resumedLine `json:"resumed"`
	}{Duration(now.Sub(r.start)), l})
	if err != nil {
		return err
	}
	r.writeLine(line)
	return r.err
}

// usable is nil when r still records; r.mu held.
func (r *Recorder) usable() error {
	if r.closed {
		return errors.New("journal: closed")
	}
	return r.err
}

// Check says whether this binary can continue a recording handed over
// as st (for the upgrade's preflight): it writes only its own version.
func (st State) Check() error {
	if st.Version != Version {
		return fmt.Errorf("the journal %s is in version %d and this binary writes version %d: it cannot continue it", st.Path, st.Version, Version)
	}
	if st.HandedAt.IsZero() {
		return errors.New("journal handover: no handover time")
	}
	return nil
}

// Continue takes over, in the new image, the journal file the old one
// handed over (st, from Upgrade): it wraps the inherited descriptor
// st.FD, which must be open, and appends to it. now is the new image's
// clock at the takeover; the pause of the exec is measured on the wall
// clock from st.HandedAt (none if the clock went back). Step times go on
// from st.At plus the pause. The new image then calls Resumed once its
// core resumed. Close closes the file.
func Continue(st State, now time.Time) (*Recorder, error) {
	if err := st.Check(); err != nil {
		return nil, err
	}
	if st.FD < 0 {
		return nil, fmt.Errorf("journal handover: descriptor %d: the recording was not to a file", st.FD)
	}
	// Checked before it is wrapped: an *os.File would close the number
	// when collected, though it was not open (and may be opened later).
	var stat syscall.Stat_t
	if err := syscall.Fstat(st.FD, &stat); err != nil {
		return nil, fmt.Errorf("journal handover: descriptor %d (%s): %w", st.FD, st.Path, err)
	}
	r, err := ContinueWriter(io.Discard, st, now)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(st.FD), st.Path)
	r.w.Reset(f)
	r.closer, r.path = f, st.Path
	return r, nil
}

// ContinueWriter is Continue on any writer that goes on where the old
// recording's stopped (a test's buffer; an embedding program's own
// stream).
func ContinueWriter(w io.Writer, st State, now time.Time) (*Recorder, error) {
	if err := st.Check(); err != nil {
		return nil, err
	}
	pause := max(now.Round(0).Sub(st.HandedAt), 0)
	start := now.Add(-time.Duration(st.At) - pause)
	return &Recorder{w: bufio.NewWriterSize(w, 64<<10), start: start}, nil
}

func (u UpgradeRecord) check() error {
	switch {
	case u.From.Binary == "":
		return errors.New("no old binary")
	case u.To.Binary == "":
		return errors.New("no new binary")
	case u.StateFormat < 1:
		return fmt.Errorf("state format %d", u.StateFormat)
	}
	return nil
}

// decodeStrict decodes one JSON object into v, refusing unknown fields.
func decodeStrict(raw json.RawMessage, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("more than one value")
	}
	return nil
}

// kinds counts the kinds of line s claims to be: a step, an upgrade, a
// resume, a failed upgrade. A line is exactly one.
func (s stepLine) kinds() int {
	n := 0
	for _, raw := range []json.RawMessage{s.Input, s.Upgrade, s.Resumed, s.UpgradeFailed} {
		if raw != nil {
			n++
		}
	}
	return n
}

// pendingUpgrade is an upgrade line that no resumed or upgrade_failed
// line has followed yet.
type pendingUpgrade struct {
	line int
	at   time.Duration
}

// replayUpgrade replays one upgrade line (s has no input) on c, with up
// the upgrade in progress, lastAt the previous line's time. At a resumed
// line it hands c over at the upgrade's instant and resumes it at the
// resumed one's, through the state's JSON as the master does, and
// compares the timers the resume sets again with the recorded ones.
func replayUpgrade(c *core.Cluster, version, line int, lastAt time.Duration, up *pendingUpgrade, s stepLine, sum *Summary) (*core.Cluster, *pendingUpgrade, error) {
	bad := func(format string, args ...any) (*core.Cluster, *pendingUpgrade, error) {
		return c, up, &FormatError{Line: line, Err: fmt.Errorf(format, args...)}
	}
	if version < upgradesFrom {
		return bad("an upgrade line in a version %d journal, which does not record upgrades", version)
	}
	at := time.Duration(s.At)
	if at < lastAt {
		return bad("upgrade line at %s, before the line above it (%s)", at, lastAt)
	}
	switch {
	case s.Upgrade != nil:
		var u upgradeLine
		if err := decodeStrict(s.Upgrade, &u); err != nil {
			return bad("upgrade: %w", err)
		}
		if err := u.check(); err != nil {
			return bad("upgrade: %w", err)
		}
		if up != nil {
			return bad("an upgrade while the one at line %d neither resumed nor failed", up.line)
		}
		return c, &pendingUpgrade{line: line, at: at}, nil

	case s.UpgradeFailed != nil:
		var f upgradeFailedLine
		if err := decodeStrict(s.UpgradeFailed, &f); err != nil {
			return bad("upgrade_failed: %w", err)
		}
		if up == nil {
			return bad("upgrade_failed without an upgrade line before it")
		}
		// The exec failed: the old image went on with its core, which the
		// handover did not change.
		sum.FailedUpgrades++
		return c, nil, nil
	}

	var r resumedLine
	if err := decodeStrict(s.Resumed, &r); err != nil {
		return bad("resumed: %w", err)
	}
	if up == nil {
		return bad("resumed without an upgrade line before it")
	}
	recorded := make([]string, len(r.Timers))
	for i, raw := range r.Timers {
		d, err := DecodeDecision(raw, Epoch)
		if err != nil {
			return bad("resumed: timer %d: %w", i+1, err)
		}
		if _, ok := d.(core.SetTimer); !ok {
			return bad("resumed: timer %d: a %T, not a SetTimer", i+1, d)
		}
		canon, err := EncodeDecision(d, Epoch)
		if err != nil {
			return bad("resumed: timer %d: %w", i+1, err)
		}
		recorded[i] = string(canon)
	}
	st, err := c.Handover(Epoch.Add(up.at))
	if err != nil {
		return c, up, fmt.Errorf("journal line %d: replaying the upgrade at line %d: %w", line, up.line, err)
	}
	data, err := json.Marshal(st)
	if err != nil {
		return c, up, err
	}
	if st, err = core.DecodeState(data); err != nil {
		return c, up, fmt.Errorf("journal line %d: replaying the upgrade at line %d: %w", line, up.line, err)
	}
	resumed, rearm, err := core.Resume(c.Config(), st, Epoch.Add(at))
	if err != nil {
		return c, up, fmt.Errorf("journal line %d: replaying the upgrade at line %d: %w", line, up.line, err)
	}
	replayed := make([]string, len(rearm))
	for i, d := range rearm {
		raw, err := EncodeDecision(d, Epoch)
		if err != nil {
			return c, up, err
		}
		replayed[i] = string(raw)
	}
	if i, differ := firstDifference(recorded, replayed); differ {
		m := &Mismatch{Line: line, At: at, Input: fmt.Sprintf("resumed after the upgrade at line %d", up.line), Index: i,
			RecordedCount: len(recorded), ReplayedCount: len(replayed)}
		if i < len(recorded) {
			m.Recorded = recorded[i]
		}
		if i < len(replayed) {
			m.Replayed = replayed[i]
		}
		return c, up, m
	}
	sum.Upgrades++
	sum.Decisions += len(replayed)
	return resumed, nil, nil
}

// firstDifference is the index of the first element that differs
// between a and b (one of them may be shorter).
func firstDifference(a, b []string) (int, bool) {
	for i := range max(len(a), len(b)) {
		if i >= len(a) || i >= len(b) || a[i] != b[i] {
			return i, true
		}
	}
	return 0, false
}
