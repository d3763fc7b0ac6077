// Package nodecluster makes the dutchmaster master the primary of Node.js's
// cluster module, so that an unmodified Node.js app (server.listen(3000),
// or a cluster.isPrimary script) runs under dutchmaster as it ran under
// cluster.fork and dutch-master.
//
// The one guarantee: every worker that asks for the same server (the same
// address, port, address type, fd and index, Node's own key) gets the same
// socket, which the master binds once and keeps for its whole life, so
// every generation of workers shares one accept queue and a restart never
// refuses a connection.
//
// Node's cluster protocol is internal to Node and undocumented; this
// package speaks the primary's side of its shared-handle (SCHED_NONE) mode
// as Node 20 does (docs/node.md):
//
//   - framing: JSON lines; internal messages are objects whose "cmd"
//     starts with "NODE_"; cluster messages are {"cmd":"NODE_CLUSTER",
//     ..., "seq": n} and a reply carries "ack": the request's seq;
//   - a handle travels as {"cmd":"NODE_HANDLE","type":...,"msg":{...}} with
//     its descriptor (SCM_RIGHTS) in the same write; the worker answers
//     NODE_HANDLE_ACK, or NODE_HANDLE_NACK when the descriptor did not
//     arrive (resent up to MaxHandleRetransmissions times), and every
//     message sent after a handle waits for that answer, as in Node;
//   - from the worker: online, queryServer (answered with the shared
//     socket, or with the negative libuv errno of the failed bind),
//     listening (the first one means ready), close, exitedAfterDisconnect
//     (acknowledged), and user messages (process.send), passed through;
//   - to the worker: {"act":"disconnect"}, the graceful stop: the worker
//     closes its servers, then its channel, and exits once idle. The
//     channel itself is never closed to stop a worker: Node then exits at
//     once, without draining.
//
// A Registry holds the shared sockets (one per master); a Session is the
// primary's side of one worker's channel. Neither starts processes: the
// runtime (actors/osproc) wires them to each worker's IPC channel.
package nodecluster
