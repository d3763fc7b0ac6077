package loadtest

import (
	"strings"
	"testing"
)

// exposition is a cut of the master's /metrics (the Go collector of
// client_golang, as dutchmaster --name web serves it).
const exposition = `# HELP dutchmaster_workers Workers by state.
# TYPE dutchmaster_workers gauge
dutchmaster_workers{name="web",state="listening"} 2
# HELP go_gc_duration_seconds A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles.
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{name="web",quantile="0"} 0.00036546
go_gc_duration_seconds{name="web",quantile="1"} 0.00036546
go_gc_duration_seconds_sum{name="web"} 0.00036546
go_gc_duration_seconds_count{name="web"} 1
# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines{name="web"} 14
# HELP go_memstats_heap_alloc_bytes Number of heap bytes allocated and currently in use, same as go_memstats_alloc_bytes. Equals to /memory/classes/heap/objects:bytes.
# TYPE go_memstats_heap_alloc_bytes gauge
go_memstats_heap_alloc_bytes{name="web"} 3.512368e+06
# HELP go_memstats_next_gc_bytes Number of heap bytes when next garbage collection will take place. Equals to /gc/heap/goal:bytes.
# TYPE go_memstats_next_gc_bytes gauge
go_memstats_next_gc_bytes{name="web"} 6.991258e+06
`

func TestParseGoStats(t *testing.T) {
	got, err := ParseGoStats(strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	if want := (GoStats{Goroutines: 14, HeapAlloc: 3512368, HeapGoal: 6991258}); got != want {
		t.Errorf("ParseGoStats = %+v, want %+v", got, want)
	}
	// Without the Go collector, the reading is an error, not zeros.
	noGo := exposition[:strings.Index(exposition, "# HELP go_goroutines")]
	if got, err := ParseGoStats(strings.NewReader(noGo)); err == nil || !strings.Contains(err.Error(), "go_goroutines") {
		t.Errorf("without go_goroutines: %+v, %v; want an error naming it", got, err)
	}
	if _, err := ParseGoStats(strings.NewReader("go_goroutines{ 14\n")); err == nil {
		t.Error("a broken exposition parsed")
	}
}
