package nodecluster

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
)

// Query is one queryServer: the server a worker's listen() or bind() asks
// the primary for.
type Query struct {
	// Key is Node's handle key, `${address}:${port}:${addressType}:${fd}:${index}`
	// (e.g. "null:3000:4:undefined:0"). Every query with the same key
	// shares one socket; the worker names it again in its close message.
	Key string
	// Network is tcp, udp or unix; for a query by descriptor, that of the
	// socket it names.
	Network string
	// Address is the IP address (without brackets, maybe with a %zone) or
	// the unix socket path; "" for Node's null address: every address,
	// IPv6 and IPv4 where the host allows it.
	Address string
	// Port is the port; 0 picks a free one (once per key).
	Port int
	// IPv6 is set by address type 6 (TCP) or udp6.
	IPv6 bool
	// FD is the descriptor a listen({fd}) or bind({fd}) names, as numbered
	// in the worker; -1 when the query is by address.
	FD int
	// Flags are libuv's bind flags: FlagIPv6Only, FlagReuseAddr (UDP).
	Flags int
	// Data is what the worker attached (TLS session ticket keys); the
	// first non-empty data of a key is echoed to every worker.
	Data json.RawMessage
}

// libuv's bind flags, as Node passes them in a queryServer.
const (
	FlagIPv6Only  = 1 // UV_TCP_IPV6ONLY, UV_UDP_IPV6ONLY
	FlagReuseAddr = 4 // UV_UDP_REUSEADDR
)

func (q Query) String() string {
	switch {
	case q.FD >= 0:
		return fmt.Sprintf("fd %d", q.FD)
	case q.Network == "unix":
		return "unix://" + q.Address
	case q.Address == "":
		return fmt.Sprintf("%s://:%d", q.Network, q.Port)
	}
	a, err := netip.ParseAddr(q.Address)
	if err != nil {
		return fmt.Sprintf("%s://%s:%d", q.Network, q.Address, q.Port)
	}
	return q.Network + "://" + netip.AddrPortFrom(a, uint16(q.Port)).String()
}

// parseQuery reads a queryServer message. An error means a shape Node's
// primary would also reject (it answers EINVAL); the key is set anyway, so
// that the worker can be answered.
func parseQuery(m incoming) (Query, error) {
	q := Query{
		Key: jsString(m.Address) + ":" + jsString(m.Port) + ":" + jsString(m.AddressType) + ":" +
			jsString(m.FD) + ":" + jsString(m.Index),
		FD:   -1,
		Data: m.Data,
	}
	q.Flags, _ = jsInt(m.Flags)
	var addressType string
	_ = json.Unmarshal(m.AddressType, &addressType) // "udp4", "udp6"; numbers stay ""
	numericType, _ := jsInt(m.AddressType)
	var address *string
	_ = json.Unmarshal(m.Address, &address)
	port, hasPort := jsInt(m.Port)

	if fd, ok := jsInt(m.FD); ok && fd >= 0 {
		q.FD, q.Network = fd, "tcp"
		if addressType == "udp4" || addressType == "udp6" {
			q.Network = "udp"
		}
		return q, nil
	}
	switch {
	case addressType == "udp4" || addressType == "udp6":
		q.Network, q.IPv6 = "udp", addressType == "udp6"
	case numericType == -1 && hasPort && port == -1:
		q.Network = "unix"
		if address == nil || *address == "" {
			return q, fmt.Errorf("pipe query %s without a path", q.Key)
		}
		q.Address, q.Port = filepath.Clean(*address), -1
		if !filepath.IsAbs(q.Address) {
			return q, fmt.Errorf("pipe path %q is not absolute", *address)
		}
		return q, nil
	case numericType == 4 || numericType == 6:
		q.Network, q.IPv6 = "tcp", numericType == 6
	default:
		return q, fmt.Errorf("unknown address type %s", jsString(m.AddressType))
	}
	if !hasPort || port < 0 || port > 65535 {
		return q, fmt.Errorf("invalid port %s", jsString(m.Port))
	}
	q.Port = port
	if address != nil {
		q.Address = *address
	}
	return q, nil
}
