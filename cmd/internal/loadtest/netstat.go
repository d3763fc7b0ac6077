package loadtest

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// tcpCounters are the kernel's TCP counters (/proc/net/snmp and
// /proc/net/netstat) that tell where connections are lost or delayed.
// They count for the whole host (network namespace), so a run reports
// their change over its restart load.
var tcpCounters = []struct{ key, name string }{
	{"TcpExt:ListenOverflows", "listen_overflows"}, // accept queue full
	{"TcpExt:ListenDrops", "listen_drops"},         // SYN or handshake dropped at a listener
	{"Tcp:RetransSegs", "retrans_segs"},            // segments sent again (each one a ≥ 200 ms stall on loopback)
	{"TcpExt:TCPSynRetrans", "syn_retrans"},        // SYNs sent again (≥ 1 s)
	{"TcpExt:TCPTimeouts", "timeouts"},             // retransmission timer expiries
	{"Tcp:OutRsts", "out_rsts"},                    // resets sent
	{"Tcp:EstabResets", "estab_resets"},            // established connections reset
}

// ReadTCPCounters reads every "Prefix: names" / "Prefix: values" pair of
// lines of /proc/net/snmp and /proc/net/netstat.
func ReadTCPCounters() (map[string]int64, error) {
	out := map[string]int64{}
	for _, path := range []string{"/proc/net/snmp", "/proc/net/netstat"} {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		for i := 0; i+1 < len(lines); i += 2 {
			names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
			if len(names) != len(values) || len(names) == 0 || names[0] != values[0] {
				return nil, fmt.Errorf("%s: unexpected lines %q / %q", path, lines[i], lines[i+1])
			}
			for j := 1; j < len(names); j++ {
				// Tcp:MaxConn is -1: parse as signed.
				if v, err := strconv.ParseInt(values[j], 10, 64); err == nil {
					out[names[0]+names[j]] = v
				}
			}
		}
	}
	return out, nil
}

// TCPDelta is after - before for the counters a report shows.
func TCPDelta(before, after map[string]int64) map[string]int64 {
	d := map[string]int64{}
	for _, c := range tcpCounters {
		d[c.name] = after[c.key] - before[c.key]
	}
	return d
}
