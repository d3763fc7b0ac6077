// Package loadtest is what dmbench and dmsoak share: a closed-loop HTTP
// load that sees every failure as it happens, a dutchmaster process whose
// JSON log is parsed as it comes, readings of /proc (CPU, memory, threads,
// descriptors, the TCP connections a process holds, the kernel's TCP
// counters), the Go runtime's own figures from the master's /metrics
// (goroutines, heap), and building the binaries a run starts.
//
// Everything is bounded: a load in requests and time, every wait on a
// process or a log event by a patience given by the caller.
package loadtest
