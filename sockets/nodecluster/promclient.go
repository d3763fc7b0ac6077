package nodecluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// prom-client's cluster metrics (its AggregatorRegistry, lib/cluster.js):
// the primary sends every connected worker
//
//	{"type":"prom-client:getMetricsReq","requestId":N}
//
// and a worker that built an AggregatorRegistry answers with its
// registries as getMetricsAsJSON() gives them:
//
//	{"type":"prom-client:getMetricsRes","requestId":N,"metrics":[[metric, ...], ...]}
//
// or with {"type":..., "requestId":N, "error":"..."}. Both are plain
// process.send messages (no "cmd"), so they travel as user messages. The
// primary then aggregates the metrics by name and labels (Aggregate) and
// writes them in the Prometheus text format (WriteText).
//
// prom-client has no call in the other direction: a worker's own
// clusterMetrics() looks for cluster.workers, which a worker has none of,
// and resolves with "" without sending anything.
const (
	MetricsRequest  = "prom-client:getMetricsReq"
	MetricsResponse = "prom-client:getMetricsRes"
)

// metricsRequest is the primary's request, in prom-client's field order.
type metricsRequest struct {
	Type      string `json:"type"`
	RequestID int64  `json:"requestId"`
}

// metricsReply is a worker's answer, read and parsed by the session for
// the goroutine that asked.
type metricsReply struct {
	Metrics []Metric
	Err     error // the worker's error, or an unreadable answer
}

// requestIDs numbers the requests of every session of the master.
var requestIDs atomic.Int64

// errNotServing: the worker is not asked (it does not listen yet, or it
// drains: it would close its channel rather than answer).
var errNotServing = errors.New("not listening")

// askMetrics sends prom-client's request to the worker and returns where
// its answer will arrive. Only a worker that listens and does not drain
// is asked.
func (s *Session) askMetrics(id int64) (<-chan metricsReply, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.listening || s.disconnecting || s.leaving || s.broken != nil {
		return nil, errNotServing
	}
	if s.metricsWait == nil {
		s.metricsWait = make(map[int64]chan metricsReply)
	}
	ch := make(chan metricsReply, 1)
	s.metricsWait[id] = ch
	if err := s.send(outgoing{msg: metricsRequest{Type: MetricsRequest, RequestID: id}}); err != nil {
		delete(s.metricsWait, id)
		return nil, err
	}
	return ch, nil
}

// forgetMetrics drops a request whose answer is no longer awaited.
func (s *Session) forgetMetrics(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.metricsWait, id)
}

// metricsAnswer takes a prom-client answer off the channel (ok), parses
// it and hands it to the request that waits for it. An answer that comes
// too late is dropped: it is for the master, never for the app. It runs
// before the session's lock is taken: an answer may be several MiB, and
// the lock is only needed to find its request.
func (s *Session) metricsAnswer(line []byte) (Event, bool) {
	if !bytes.Contains(line, []byte(MetricsResponse)) {
		return Event{}, false
	}
	var m struct {
		Type      string       `json:"type"`
		RequestID int64        `json:"requestId"`
		Metrics   []jsonMetric `json:"metrics"`
		Error     *string      `json:"error"`
	}
	err := json.Unmarshal(line, &m)
	if m.Type != MetricsResponse {
		return Event{}, false // not an answer: the app's own message
	}
	var r metricsReply
	switch {
	case err != nil:
		r.Err = fmt.Errorf("unreadable metrics: %w", err)
	case m.Error != nil:
		r.Err = fmt.Errorf("the worker's registry failed: %s", *m.Error)
	default:
		r.Metrics, r.Err = metricsOf(m.Metrics)
	}
	ev := Event{Kind: KindInternal, Act: MetricsResponse}
	s.mu.Lock()
	ch, ok := s.metricsWait[m.RequestID]
	delete(s.metricsWait, m.RequestID)
	s.mu.Unlock()
	if ok {
		ch <- r // buffered, one answer per request
	}
	return ev, true
}

// Peer is one Node.js cluster worker to ask for its metrics.
type Peer struct {
	Worker  int // the worker's id
	PID     int
	Session *Session
}

// Answer is what one worker said: its metrics, parsed.
type Answer struct {
	Worker, PID int
	Metrics     []Metric
}

// Miss is a worker that was asked and did not answer in time, or answered
// an error or something unreadable; it is left out of the aggregate.
type Miss struct {
	Worker, PID int
	Err         error
}

// GatherMetrics asks every peer that listens and does not drain for its
// prom-client metrics and waits for the answers until ctx is done. asked
// counts the workers asked; every one of them is either in answers (in
// peer order) or in misses.
func GatherMetrics(ctx context.Context, peers []Peer) (asked int, answers []Answer, misses []Miss) {
	type pending struct {
		peer Peer
		id   int64
		ch   <-chan metricsReply
		err  error
	}
	// The requests go out together: a worker that does not read its
	// channel holds up its own send (the channel's send timeout), not
	// the others'.
	asks := make([]pending, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Go(func() {
			id := requestIDs.Add(1)
			ch, err := p.Session.askMetrics(id)
			asks[i] = pending{p, id, ch, err}
		})
	}
	wg.Wait()
	var waits []pending
	for _, a := range asks {
		switch {
		case errors.Is(a.err, errNotServing):
			continue
		case a.err != nil:
			asked++
			misses = append(misses, Miss{Worker: a.peer.Worker, PID: a.peer.PID, Err: fmt.Errorf("request not sent: %w", a.err)})
			continue
		}
		asked++
		waits = append(waits, a)
	}
	for _, w := range waits {
		var r metricsReply
		got := false
		select {
		case r = <-w.ch:
			got = true
		case <-ctx.Done():
			// An answer that arrived by now is taken, whichever the
			// select saw first.
			select {
			case r = <-w.ch:
				got = true
			default:
			}
		}
		if !got {
			w.peer.Session.forgetMetrics(w.id)
			misses = append(misses, Miss{Worker: w.peer.Worker, PID: w.peer.PID, Err: fmt.Errorf("no answer: %w", context.Cause(ctx))})
			continue
		}
		if r.Err != nil {
			misses = append(misses, Miss{Worker: w.peer.Worker, PID: w.peer.PID, Err: r.Err})
			continue
		}
		ms := r.Metrics
		answers = append(answers, Answer{Worker: w.peer.Worker, PID: w.peer.PID, Metrics: ms})
	}
	return asked, answers, misses
}

// Metric is one metric as prom-client's getMetricsAsJSON gives it.
type Metric struct {
	Name, Help, Type string
	// Aggregator names how the primary combines the workers' values:
	// sum (the default), first, min, max, average or omit.
	Aggregator string
	Values     []Value
}

// Value is one sample of a metric.
type Value struct {
	// MetricName is the sample's own name (a histogram's _bucket, _sum,
	// _count); "" means the metric's name.
	MetricName string
	Labels     Labels
	// Value is the sample; JSON's null (NaN or ±Infinity in the worker,
	// which JSON.stringify cannot write) counts as 0, as in JavaScript's
	// arithmetic.
	Value float64
}

// Labels keep the order the worker wrote them in, which is the order of
// the text format's label pairs. Values are the raw JSON values: a
// histogram's le is a number.
type Labels []Label

// Label is one label pair.
type Label struct {
	Name  string
	Value json.RawMessage
}

// UnmarshalJSON reads a JSON object, keeping the order of its keys (a
// repeated key keeps its first place and its last value, as in
// JavaScript).
func (ls *Labels) UnmarshalJSON(b []byte) error {
	*ls = nil
	dec := json.NewDecoder(bytes.NewReader(b))
	t, err := dec.Token()
	if err != nil {
		return err
	}
	if t == nil {
		return nil // null
	}
	if d, ok := t.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("labels: want an object, got %v", t)
	}
	at := map[string]int{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		name, _ := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return err
		}
		if i, ok := at[name]; ok {
			(*ls)[i].Value = v
			continue
		}
		at[name] = len(*ls)
		*ls = append(*ls, Label{Name: name, Value: v})
	}
	_, err = dec.Token() // }
	return err
}

// jsonMetric is one metric of getMetricsAsJSON, as it is read.
type jsonMetric []struct {
	Name       string  `json:"name"`
	Help       string  `json:"help"`
	Type       string  `json:"type"`
	Aggregator *string `json:"aggregator"`
	Values     []struct {
		MetricName string          `json:"metricName"`
		Labels     Labels          `json:"labels"`
		Value      json.RawMessage `json:"value"`
	} `json:"values"`
}

// ParseMetrics reads the "metrics" of an answer: an array of registries,
// each an array of metrics; they come back as one list.
func ParseMetrics(raw json.RawMessage) ([]Metric, error) {
	var regs []jsonMetric
	if err := json.Unmarshal(raw, &regs); err != nil {
		return nil, fmt.Errorf("unreadable metrics: %w", err)
	}
	return metricsOf(regs)
}

func metricsOf(regs []jsonMetric) ([]Metric, error) {
	var out []Metric
	for _, reg := range regs {
		for _, m := range reg {
			if m.Name == "" {
				return nil, errors.New("unreadable metrics: a metric without a name")
			}
			agg := "sum"
			if m.Aggregator != nil {
				agg = *m.Aggregator
			}
			mm := Metric{Name: m.Name, Help: m.Help, Type: m.Type, Aggregator: agg}
			for _, v := range m.Values {
				var f float64
				switch s := string(bytes.TrimSpace(v.Value)); s {
				case "", "null":
				default:
					if err := json.Unmarshal(v.Value, &f); err != nil {
						return nil, fmt.Errorf("unreadable metrics: %s: value %s", m.Name, s)
					}
				}
				mm.Values = append(mm.Values, Value{MetricName: v.MetricName, Labels: v.Labels, Value: f})
			}
			out = append(out, mm)
		}
	}
	return out, nil
}

// aggregators are prom-client's (lib/metricAggregators.js).
var aggregators = map[string]func([]float64) float64{
	"sum": func(v []float64) float64 {
		s := 0.0
		for _, x := range v {
			s += x
		}
		return s
	},
	"first": func(v []float64) float64 { return v[0] },
	"average": func(v []float64) float64 {
		s := 0.0
		for _, x := range v {
			s += x
		}
		return s / float64(len(v))
	},
	"min": func(v []float64) float64 {
		m := math.Inf(1)
		for _, x := range v {
			m = math.Min(m, x)
		}
		return m
	},
	"max": func(v []float64) float64 {
		m := math.Inf(-1)
		for _, x := range v {
			m = math.Max(m, x)
		}
		return m
	},
}

// Aggregate combines the workers' metrics as prom-client's
// AggregatorRegistry.aggregate does: metrics by name, in the order they
// first appear; within one, samples by sample name and label set (labels
// compared in sorted order), combined with the first metric's
// aggregator; "omit" leaves the metric out. A metric whose aggregator is
// none of prom-client's is left out and named in the error (prom-client
// fails the whole answer instead).
func Aggregate(workers [][]Metric) ([]Metric, error) {
	var order []string
	byName := map[string][]Metric{}
	for _, ms := range workers {
		for _, m := range ms {
			if _, ok := byName[m.Name]; !ok {
				order = append(order, m.Name)
			}
			byName[m.Name] = append(byName[m.Name], m)
		}
	}
	var out []Metric
	var errs []error
	for _, name := range order {
		group := byName[name]
		first := group[0]
		if first.Aggregator == "omit" {
			continue
		}
		fn, ok := aggregators[first.Aggregator]
		if !ok {
			errs = append(errs, fmt.Errorf("metric %s left out: %q is not one of prom-client's aggregators", name, first.Aggregator))
			continue
		}
		var keys []string
		samples := map[string][]Value{}
		for _, m := range group {
			for _, v := range m.Values {
				k := sampleKey(v)
				if _, ok := samples[k]; !ok {
					keys = append(keys, k)
				}
				samples[k] = append(samples[k], v)
			}
		}
		res := Metric{Name: first.Name, Help: first.Help, Type: first.Type, Aggregator: first.Aggregator}
		for _, k := range keys {
			vs := samples[k]
			nums := make([]float64, len(vs))
			for i, v := range vs {
				nums[i] = v.Value
			}
			res.Values = append(res.Values, Value{MetricName: vs[0].MetricName, Labels: vs[0].Labels, Value: fn(nums)})
		}
		out = append(out, res)
	}
	return out, errors.Join(errs...)
}

// sampleKey is prom-client's grouping key: `${metricName}_${hashObject(labels)}`,
// the labels sorted by name, each as `name:value,`.
func sampleKey(v Value) string {
	var b strings.Builder
	if v.MetricName == "" {
		b.WriteString("undefined")
	} else {
		b.WriteString(v.MetricName)
	}
	b.WriteByte('_')
	ls := v.Labels
	if !slices.IsSortedFunc(ls, byName) {
		ls = slices.Clone(ls)
		slices.SortStableFunc(ls, byName)
	}
	for _, l := range ls {
		b.WriteString(l.Name)
		b.WriteByte(':')
		b.WriteString(jsValue(l.Value))
		b.WriteByte(',')
	}
	return b.String()
}

func byName(a, b Label) int { return strings.Compare(a.Name, b.Name) }

// TextContentType is the content type of WriteText's output.
const TextContentType = "text/plain; version=0.0.4; charset=utf-8"

// WriteText writes metrics in the Prometheus text format, byte for byte
// as prom-client's Registry.metrics() writes them.
func WriteText(w io.Writer, metrics []Metric) error {
	var b bytes.Buffer
	for i, m := range metrics {
		if i > 0 {
			b.WriteString("\n\n")
		}
		name := escapeText(m.Name)
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s", name, escapeText(m.Help), name, m.Type)
		for _, v := range m.Values {
			b.WriteByte('\n')
			if v.MetricName != "" {
				b.WriteString(v.MetricName)
			} else {
				b.WriteString(name)
			}
			if len(v.Labels) > 0 {
				b.WriteByte('{')
				for j, l := range v.Labels {
					if j > 0 {
						b.WriteByte(',')
					}
					b.WriteString(l.Name)
					b.WriteString(`="`)
					b.WriteString(labelText(l.Value))
					b.WriteByte('"')
				}
				b.WriteByte('}')
			}
			b.WriteByte(' ')
			b.WriteString(valueText(v.Value))
		}
	}
	b.WriteByte('\n')
	_, err := w.Write(b.Bytes())
	return err
}

// escapeText escapes a name or help text as prom-client does.
func escapeText(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "\n", `\n`)
}

// labelText is a label value: a string escaped (with its quotes), any
// other value as JavaScript writes it.
func labelText(raw json.RawMessage) string {
	if s, ok := jsonString(raw); ok {
		return strings.ReplaceAll(escapeText(s), `"`, `\"`)
	}
	return jsValue(raw)
}

// jsonString reads a JSON string; a string without escapes (the common
// case) is taken as it is, without a decoder.
func jsonString(raw json.RawMessage) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	if raw[len(raw)-1] == '"' && bytes.IndexByte(raw[1:len(raw)-1], '\\') < 0 && bytes.IndexByte(raw[1:len(raw)-1], '"') < 0 {
		return string(raw[1 : len(raw)-1]), true
	}
	var s string
	return s, json.Unmarshal(raw, &s) == nil
}

// valueText is prom-client's getValueAsString.
func valueText(f float64) string {
	switch {
	case math.IsNaN(f):
		return "Nan"
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	}
	return jsFloat(f)
}

// jsValue is `${value}` of a JSON value: numbers as JavaScript writes
// them, everything else as jsString.
func jsValue(raw json.RawMessage) string {
	if s, ok := jsonString(raw); ok {
		return s
	}
	var f float64
	if t := bytes.TrimSpace(raw); len(t) > 0 && (t[0] == '-' || (t[0] >= '0' && t[0] <= '9')) && json.Unmarshal(t, &f) == nil {
		return jsFloat(f)
	}
	return jsString(raw)
}

// jsFloat is JavaScript's Number.prototype.toString for a finite number
// (ECMAScript's Number::toString): the shortest digits that read back the
// same, in positional notation for exponents from -7 to 20.
func jsFloat(f float64) string {
	if f == 0 {
		return "0"
	}
	sign := ""
	if f < 0 {
		sign, f = "-", -f
	}
	// d.ddddde±x: digits and the decimal exponent n, value = 0.digits × 10^n.
	e := strconv.FormatFloat(f, 'e', -1, 64)
	mant, exp, _ := strings.Cut(e, "e")
	digits := strings.Replace(mant, ".", "", 1)
	x, _ := strconv.Atoi(exp)
	n, k := x+1, len(digits)
	switch {
	case k <= n && n <= 21:
		return sign + digits + strings.Repeat("0", n-k)
	case 0 < n && n <= 21:
		return sign + digits[:n] + "." + digits[n:]
	case -6 < n && n <= 0:
		return sign + "0." + strings.Repeat("0", -n) + digits
	}
	s := digits[:1]
	if k > 1 {
		s += "." + digits[1:]
	}
	es := "+"
	if n-1 < 0 {
		es = "-"
	}
	return sign + s + "e" + es + strconv.Itoa(abs(n-1))
}

func abs(i int) int {
	if i < 0 {
		return -i
	}
	return i
}
