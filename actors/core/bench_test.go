package core

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkRollout drives the core alone through one rolling restart of n
// workers in which every fork is ready at once and every drain exits at
// once: what the decision logic costs, without processes or actors. The
// cost per worker must not grow with n (a rollout linear in the workers).
func BenchmarkRollout(b *testing.B) {
	for _, n := range []int{64, 256, 1024} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for _, p := range []Policy{Rolling{MaxSurge: 1}, BlueGreen{}, Canary{MaxSurge: 1}} {
				b.Run(p.Name(), func(b *testing.B) {
					c := New(Config{Policy: p})
					now := time.Unix(0, 0)
					run := func(in Input) int { return settle(c, &now, in) }
					run(Start{Target: n})
					inputs := 0
					b.ResetTimer()
					for range b.N {
						inputs += run(RestartRequested{Source: "bench"})
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/worker")
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(inputs), "ns/input")
				})
			}
		})
	}
}

// settle feeds in, then answers every decision as an eager runtime would
// (forks listen, drains and kills exit; timers fire only when nothing
// else is left, soak waits included), until the cluster is quiet. It
// returns how many inputs that took.
func settle(c *Cluster, now *time.Time, in Input) int {
	queue := []Input{in}
	var timers []Timer
	inputs := 0
	for len(queue) > 0 || len(timers) > 0 {
		if len(queue) == 0 {
			*now = now.Add(time.Minute)
			queue = append(queue, TimerFired{Timer: timers[0]})
			timers = timers[1:]
		}
		next := queue[0]
		queue = queue[1:]
		inputs++
		for _, d := range c.Step(*now, next) {
			switch d := d.(type) {
			case Fork:
				queue = append(queue, WorkerListening{Worker: d.Worker})
			case Drain:
				queue = append(queue, WorkerExited{Worker: d.Worker})
			case Kill:
				queue = append(queue, WorkerExited{Worker: d.Worker})
			case SetTimer:
				if d.Timer.Kind == PolicyWake {
					timers = append(timers, d.Timer)
				}
			}
		}
	}
	return inputs
}
