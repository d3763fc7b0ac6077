package loadtest

import (
	"math"
	"slices"
	"time"
)

// LatencyStats summarises latencies in milliseconds.
type LatencyStats struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// Stats returns the count, nearest-rank p50 and p99, and the maximum.
func Stats(v []float64) LatencyStats {
	if len(v) == 0 {
		return LatencyStats{}
	}
	v = slices.Clone(v)
	slices.Sort(v)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(v)))) - 1
		return Round(v[max(i, 0)], 3)
	}
	return LatencyStats{N: len(v), P50: rank(0.50), P99: rank(0.99), Max: Round(v[len(v)-1], 3)}
}

// Ms is d in milliseconds, to the microsecond.
func Ms(d time.Duration) float64 { return Round(float64(d)/1e6, 3) }

// Round rounds x to digits decimals.
func Round(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}
