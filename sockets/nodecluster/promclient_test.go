package nodecluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// promClientDir holds prom-client (npm ci there; make test does).
var promClientDir = filepath.Join("..", "..", "cmd", "dutchmaster", "testdata", "promclient")

// TestAggregateAsPromClient: three workers' metrics (counters with
// labels in several orders and escapes, gauges with every aggregator,
// a histogram, a summary, default labels in one worker, a metric only
// the last one has) aggregate and print byte for byte as prom-client's
// own AggregatorRegistry.aggregate(...).metrics() does with them.
func TestAggregateAsPromClient(t *testing.T) {
	dir, err := filepath.Abs(promClientDir)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("node", filepath.Join("testdata", "promclient-aggregate.js"), dir).Output()
	if err != nil {
		t.Fatalf("node with prom-client (run npm ci in %s): %v", promClientDir, err)
	}
	var fixture struct {
		Workers []json.RawMessage `json:"workers"`
		Text    string            `json:"text"`
	}
	if err := json.Unmarshal(out, &fixture); err != nil {
		t.Fatal(err)
	}
	var workers [][]Metric
	for _, w := range fixture.Workers {
		// An answer's metrics are an array of registries.
		ms, err := ParseMetrics(json.RawMessage("[" + string(w) + "]"))
		if err != nil {
			t.Fatal(err)
		}
		workers = append(workers, ms)
	}
	agg, err := Aggregate(workers)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := WriteText(&b, agg); err != nil {
		t.Fatal(err)
	}
	if b.String() != fixture.Text {
		t.Fatalf("aggregated:\n%s\nprom-client:\n%s", b.String(), fixture.Text)
	}
}

func TestAggregateUnknownAggregatorLeftOut(t *testing.T) {
	ms, err := ParseMetrics(json.RawMessage(`[[{"name":"a","help":"h","type":"gauge","aggregator":"median","values":[{"value":1,"labels":{}}]},
		{"name":"b","help":"h","type":"gauge","values":[{"value":null,"labels":{"x":"1"}},{"value":2,"labels":{"x":"1"}}]}]]`))
	if err != nil {
		t.Fatal(err)
	}
	agg, err := Aggregate([][]Metric{ms})
	if err == nil || !strings.Contains(err.Error(), "median") {
		t.Fatalf("error %v, want the unknown aggregator named", err)
	}
	var b bytes.Buffer
	WriteText(&b, agg)
	if want := "# HELP b h\n# TYPE b gauge\nb{x=\"1\"} 2\n"; b.String() != want {
		t.Fatalf("got %q, want %q (a null value counts as 0; aggregator sum by default)", b.String(), want)
	}
}

func TestJSFloat(t *testing.T) {
	for f, want := range map[float64]string{
		1: "1", -2.5: "-2.5", 123456789012345680000: "123456789012345680000", 1e21: "1e+21",
		0.000001: "0.000001", 1e-7: "1e-7", 1.5e-10: "1.5e-10", 6.0120000000000005: "6.0120000000000005",
	} {
		if got := jsFloat(f); got != want {
			t.Errorf("jsFloat(%v) = %q, want %q", f, got, want)
		}
	}
}

// listeningSession is a session whose worker said online and listening.
func listeningSession(t *testing.T) (*Session, *fakeWire) {
	t.Helper()
	w := &fakeWire{}
	s := NewSession(w, nil)
	receive(t, s, `{"cmd":"NODE_CLUSTER","act":"online","seq":0}`, KindOnline)
	receive(t, s, `{"cmd":"NODE_CLUSTER","act":"listening","seq":1}`, KindListening)
	return s, w
}

// TestGatherMetrics: each listening worker gets prom-client's request;
// the answers (matched by request id, so an answer to another request
// is not taken) are taken off the channel and parsed; a worker that does
// not answer before the deadline, or answers an error, is a miss; a
// worker that drains or does not listen yet is not asked.
func TestGatherMetrics(t *testing.T) {
	answering, aw := listeningSession(t)
	failing, fw := listeningSession(t)
	silent, _ := listeningSession(t)
	draining, dw := listeningSession(t)
	if err := draining.Disconnect(); err != nil {
		t.Fatal(err)
	}
	dw.take()
	booting := NewSession(&fakeWire{}, nil)
	receive(t, booting, `{"cmd":"NODE_CLUSTER","act":"online","seq":0}`, KindOnline)

	answer := func(s *Session, w *fakeWire, body string) {
		for {
			lines, _ := w.take()
			if len(lines) == 0 {
				time.Sleep(time.Millisecond)
				continue
			}
			var req metricsRequest
			if err := json.Unmarshal([]byte(lines[0]), &req); err != nil || req.Type != MetricsRequest {
				t.Errorf("request %s", lines[0])
				return
			}
			// An answer to an older request is taken off the channel and
			// dropped, not mistaken for this one (which is still awaited).
			if ev := s.Receive([]byte(fmt.Sprintf(`{"type":%q,"requestId":%d,"metrics":[]}`, MetricsResponse, req.RequestID-1000))); ev.Kind != KindInternal || awaited(s) != 1 {
				t.Errorf("stale answer: %+v", ev)
			}
			ev := s.Receive([]byte(fmt.Sprintf(`{"type":%q,"requestId":%d,%s}`, MetricsResponse, req.RequestID, body)))
			if ev.Kind != KindInternal || ev.Act != MetricsResponse {
				t.Errorf("answer: %+v", ev)
			}
			return
		}
	}
	// The wait ends once both have answered: the silent worker is then
	// given up.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		answer(answering, aw, `"metrics":[[{"name":"c","help":"h","type":"counter","values":[{"value":3,"labels":{}}],"aggregator":"sum"}]]`)
	}()
	go func() { defer wg.Done(); answer(failing, fw, `"error":"collect failed"`) }()
	go func() { wg.Wait(); cancel() }()
	peers := []Peer{{1, 11, answering}, {2, 12, failing}, {3, 13, silent}, {4, 14, draining}, {5, 15, booting}}
	asked, answers, misses := GatherMetrics(ctx, peers)
	if asked != 3 || len(answers) != 1 || answers[0].Worker != 1 || len(answers[0].Metrics) != 1 || answers[0].Metrics[0].Values[0].Value != 3 {
		t.Fatalf("asked %d, answers %+v", asked, answers)
	}
	if len(misses) != 2 || misses[0].Worker != 2 || !strings.Contains(misses[0].Err.Error(), "collect failed") ||
		misses[1].Worker != 3 || !errors.Is(misses[1].Err, context.Canceled) {
		t.Fatalf("misses %+v", misses)
	}
	if awaited(silent) != 0 {
		t.Fatal("the silent worker's request is still awaited")
	}
	// Its late answer is taken off the channel all the same.
	if ev := silent.Receive([]byte(`{"type":"prom-client:getMetricsRes","requestId":1,"metrics":[]}`)); ev.Kind != KindInternal {
		t.Fatalf("late answer: %+v", ev)
	}
	// An app's own message that mentions the type is still the app's.
	if ev := silent.Receive([]byte(`{"note":"prom-client:getMetricsRes"}`)); ev.Kind != KindMessage {
		t.Fatalf("app message: %+v", ev)
	}
}

// awaited counts the session's metrics requests awaiting an answer.
func awaited(s *Session) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.metricsWait)
}

// FuzzMetricsAnswer: any line a worker sends is either an answer to a
// metrics request or not, without a panic; an answer's metrics aggregate
// and print, and every sample printed is a line of the text.
func FuzzMetricsAnswer(f *testing.F) {
	for _, seed := range []string{
		`{"type":"prom-client:getMetricsRes","requestId":1,"metrics":[[{"name":"c","help":"h","type":"counter","values":[{"value":3,"labels":{"a":"x","b":2}}],"aggregator":"sum"}]]}`,
		`{"type":"prom-client:getMetricsRes","requestId":1,"metrics":[[{"name":"h","help":"","type":"histogram","values":[{"value":1,"metricName":"h_bucket","labels":{"le":0.005,"le":"+Inf"}},{"value":null,"labels":null}],"aggregator":"average"}]]}`,
		`{"type":"prom-client:getMetricsRes","requestId":1,"error":"boom"}`,
		`{"type":"prom-client:getMetricsRes","requestId":"1","metrics":{}}`,
		`{"type":"prom-client:getMetricsRes","metrics":[[{"name":"g","values":[{"value":"x"}]}]]}`,
		`{"note":"prom-client:getMetricsRes"}`, `"prom-client:getMetricsRes"`, `{"type":"prom-client:getMetricsRes"`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		s := NewSession(&fakeWire{}, nil)
		ch := make(chan metricsReply, 1)
		s.metricsWait = map[int64]chan metricsReply{1: ch}
		ev, ok := s.metricsAnswer(line)
		if !ok {
			if ev.Kind != KindMessage || awaited(s) != 1 {
				t.Fatalf("%q: not an answer, but %+v", line, ev)
			}
			return
		}
		var r metricsReply
		select {
		case r = <-ch:
		default:
			return // an answer to another request
		}
		if r.Err != nil {
			return
		}
		agg, _ := Aggregate([][]Metric{r.Metrics, r.Metrics})
		var b bytes.Buffer
		if err := WriteText(&b, agg); err != nil {
			t.Fatal(err)
		}
		samples := 0
		for _, m := range agg {
			samples += len(m.Values)
		}
		if got := strings.Count(b.String(), "\n"); got < samples+2*len(agg) {
			t.Fatalf("%q: %d lines of text for %d metrics and %d samples", line, got, len(agg), samples)
		}
	})
}
