package main

// unsupported is what the binary says where the master cannot run: it
// relies on Linux process calls (parent-death signals, child subreapers,
// pidfds, cgroups). The Go worker API, sockets/worker, builds everywhere.
const unsupported = "dutchmaster runs on Linux only (this binary is for %s/%s); run it in a Linux machine, VM or container"
