package nodecluster

import "github.com/dutchmaster/dutchmaster/sockets/wire"

// EnvUniqueID is the variable that makes a Node.js process a cluster
// worker (cluster.isPrimary false, cluster.worker.id its value). The
// runtime sets it to the worker's id, on top of sockets.PlanWorkerFiles's
// NODE_CHANNEL_FD and NODE_CHANNEL_SERIALIZATION_MODE=json.
const EnvUniqueID = wire.EnvNodeUniqueID
