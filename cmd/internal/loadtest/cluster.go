package loadtest

import (
	"slices"
	"time"
)

// Cluster is the master's cluster as its log tells it, updated one event
// at a time: what the soak and the fault suite check the master against.
type Cluster struct {
	Target   int
	Live     map[int]string // worker id: forking, listening or draining
	PIDs     map[int]int    // worker id: pid, for every worker that was spawned
	Rollout  bool
	Stopping bool
}

// NewCluster returns the cluster before the first log line.
func NewCluster() *Cluster {
	return &Cluster{Live: map[int]string{}, PIDs: map[int]int{}}
}

// Apply follows one log line.
func (c *Cluster) Apply(e Event) {
	id := e.Num("worker")
	if pid := e.Num("pid"); pid != 0 && id != 0 {
		c.PIDs[id] = pid
	}
	switch e.Message {
	case "cluster starting":
		c.Target = e.Num("workers")
	case "scale", "worker count changed":
		c.Target = e.Num("to")
	case "fork":
		c.Live[id] = "forking"
	case "worker listening":
		c.Live[id] = "listening"
	case "drain", "kill":
		if _, ok := c.Live[id]; ok {
			c.Live[id] = "draining"
		}
	case "worker exited":
		delete(c.Live, id)
	case "restart requested", "worker requested restart", "policy marked worker for replacement":
		c.Rollout = true
	case "restart complete", "rollout aborted", "rollout cancelled by stop":
		c.Rollout = false
	case "stopping":
		c.Stopping = true
	}
}

// Settled reports a cluster at rest: no rollout, as many workers as the
// target, every one of them listening.
func (c *Cluster) Settled() bool {
	if c.Target == 0 || c.Rollout || c.Stopping || len(c.Live) != c.Target {
		return false
	}
	for _, s := range c.Live {
		if s != "listening" {
			return false
		}
	}
	return true
}

// Listening returns the ids of the listening workers, in order.
func (c *Cluster) Listening() []int {
	var out []int
	for id, s := range c.Live {
		if s == "listening" {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// LeftBehind waits until deadline for every worker the log names to be
// gone, and returns the pids of those still running then.
func (c *Cluster) LeftBehind(deadline time.Time) []int {
	var left []int
	for id, pid := range c.PIDs {
		for WorkerAlive(pid, id) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if WorkerAlive(pid, id) {
			left = append(left, pid)
		}
	}
	slices.Sort(left)
	return left
}

// LivePIDs are the pids of the workers alive by the log, in order.
func (c *Cluster) LivePIDs() []int {
	var out []int
	for id := range c.Live {
		if pid := c.PIDs[id]; pid != 0 {
			out = append(out, pid)
		}
	}
	slices.Sort(out)
	return out
}
