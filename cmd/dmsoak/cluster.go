package main

import (
	"slices"

	"github.com/dutchmaster/dutchmaster/cmd/internal/loadtest"
)

// cluster is the master's cluster as its log tells it, updated one event
// at a time.
type cluster struct {
	target   int
	live     map[int]string // worker id: forking, listening or draining
	pids     map[int]int    // worker id: pid, for every worker that was spawned
	rollout  bool
	stopping bool
}

func newCluster() *cluster {
	return &cluster{live: map[int]string{}, pids: map[int]int{}}
}

func (c *cluster) apply(e loadtest.Event) {
	id := e.Num("worker")
	if pid := e.Num("pid"); pid != 0 && id != 0 {
		c.pids[id] = pid
	}
	switch e.Message {
	case "cluster starting":
		c.target = e.Num("workers")
	case "scale", "worker count changed":
		c.target = e.Num("to")
	case "fork":
		c.live[id] = "forking"
	case "worker listening":
		c.live[id] = "listening"
	case "drain", "kill":
		if _, ok := c.live[id]; ok {
			c.live[id] = "draining"
		}
	case "worker exited":
		delete(c.live, id)
	case "restart requested", "worker requested restart", "policy marked worker for replacement":
		c.rollout = true
	case "restart complete", "rollout aborted", "rollout cancelled by stop":
		c.rollout = false
	case "stopping":
		c.stopping = true
	}
}

// settled reports a cluster at rest: no rollout, as many workers as the
// target, every one of them listening.
func (c *cluster) settled() bool {
	if c.target == 0 || c.rollout || c.stopping || len(c.live) != c.target {
		return false
	}
	for _, s := range c.live {
		if s != "listening" {
			return false
		}
	}
	return true
}

// listening returns the ids of the listening workers, in order.
func (c *cluster) listening() []int {
	var out []int
	for id, s := range c.live {
		if s == "listening" {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// allPIDs returns the pid of every worker the log names.
func (c *cluster) allPIDs() []int {
	var out []int
	for _, pid := range c.pids {
		out = append(out, pid)
	}
	slices.Sort(out)
	return out
}
