package sockets

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Spec describes one listener, as given to --listen:
//
//	[NAME=]tcp://HOST:PORT     TCP, IPv4 and/or IPv6 as HOST resolves
//	[NAME=]tcp4://HOST:PORT    TCP over IPv4 only
//	[NAME=]tcp6://[HOST]:PORT  TCP over IPv6 only (brackets around an address)
//	[NAME=]udp://HOST:PORT     UDP; also udp4:// and udp6://
//	[NAME=]unix:///ABS/PATH    unix stream socket; optional ?mode=0660
//
// An empty HOST (tcp://:8080) listens on every address. PORT is a number,
// 0 to 65535; 0 lets the kernel pick a free port (Listener.Addr tells which).
// A HOST that is a name, not an address, is resolved once, at bind time, and
// the first address is used.
//
// NAME is what the worker sees in LISTEN_FDNAMES: 1 to 255 characters among
// letters, digits, '.', '_' and '-'. Without one, ParseSpecs names a listener
// "listen<i>", i its 0-based position in the list (DefaultName).
//
// A unix socket path must be absolute and at most 107 bytes (the kernel's
// sun_path). mode is the octal permission of the socket file, 0001 to 0777,
// default 0660 (DefaultUnixMode): connecting needs write permission on it.
type Spec struct {
	Name    string      // "" when the value gave none (see DefaultName)
	Network string      // Go's network name: tcp, tcp4, tcp6, udp, udp4, udp6 or unix
	Address string      // host:port (net.JoinHostPort form), or the socket path for unix
	Mode    os.FileMode // unix only: permission bits of the socket file; 0 means DefaultUnixMode
}

// DefaultUnixMode is the permission of a unix socket file when the spec says
// no mode: owner and group may connect.
const DefaultUnixMode os.FileMode = 0o660

// maxUnixPath is the longest socket path the kernel takes (sun_path is 108
// bytes including the terminating NUL).
const maxUnixPath = 107

// maxNameLen is systemd's limit for a LISTEN_FDNAMES entry.
const maxNameLen = 255

// DefaultName is the name of the i-th listener (0-based) when its spec has
// none: "listen0", "listen1", ...
func DefaultName(i int) string { return "listen" + strconv.Itoa(i) }

var schemes = []string{"tcp", "tcp4", "tcp6", "udp", "udp4", "udp6", "unix"}

// ParseSpec parses one --listen value (see Spec). Errors are *SpecError and
// name the value and the problem, e.g. --listen "tcp://x": missing port.
func ParseSpec(s string) (Spec, error) {
	bad := func(format string, args ...any) (Spec, error) {
		return Spec{}, &SpecError{Spec: s, Reason: fmt.Sprintf(format, args...)}
	}
	sep := strings.Index(s, "://")
	if sep < 0 {
		return bad("missing scheme (want tcp://HOST:PORT, unix:///PATH or udp://HOST:PORT)")
	}
	var spec Spec
	scheme := s[:sep]
	if eq := strings.LastIndexByte(scheme, '='); eq >= 0 {
		spec.Name, scheme = scheme[:eq], scheme[eq+1:]
		if reason := checkName(spec.Name); reason != "" {
			return bad("%s", reason)
		}
	}
	if !known(scheme) {
		return bad("unknown scheme %q (want one of %s)", scheme, strings.Join(schemes, ", "))
	}
	spec.Network = scheme
	rest := s[sep+len("://"):]
	var reason string
	if scheme == "unix" {
		spec.Address, spec.Mode, reason = parseUnix(rest)
	} else {
		spec.Address, reason = parseHostPort(scheme, rest)
	}
	if reason != "" {
		return bad("%s", reason)
	}
	return spec, nil
}

// ParseSpecs parses a list of --listen values in order, names the unnamed
// ones DefaultName(i), and rejects two listeners with the same name or the
// same address.
func ParseSpecs(values []string) ([]Spec, error) {
	specs := make([]Spec, 0, len(values))
	byName := map[string]string{}
	byAddr := map[string]string{}
	for i, v := range values {
		spec, err := ParseSpec(v)
		if err != nil {
			return nil, err
		}
		if spec.Name == "" {
			spec.Name = DefaultName(i)
		}
		if prev, dup := byName[spec.Name]; dup {
			return nil, &SpecError{Spec: v, Reason: fmt.Sprintf("name %q is already used by --listen %q", spec.Name, prev)}
		}
		if prev, dup := byAddr[spec.URL()]; dup {
			return nil, &SpecError{Spec: v, Reason: fmt.Sprintf("same address as --listen %q", prev)}
		}
		byName[spec.Name], byAddr[spec.URL()] = v, v
		specs = append(specs, spec)
	}
	return specs, nil
}

// URL is the spec without its name, e.g. tcp://127.0.0.1:8080 or
// unix:///run/app.sock?mode=0600 (the mode only when not the default).
// Errors about the listener start with it.
func (s Spec) URL() string {
	if s.Network == "unix" && s.unixMode() != DefaultUnixMode {
		return fmt.Sprintf("unix://%s?mode=%#o", s.Address, uint32(s.unixMode()))
	}
	return s.Network + "://" + s.Address
}

// unixMode is the permission a unix listener's file gets.
func (s Spec) unixMode() os.FileMode {
	if s.Mode.Perm() == 0 {
		return DefaultUnixMode
	}
	return s.Mode.Perm()
}

// String is the canonical --listen value: NAME=URL, or URL without a name.
func (s Spec) String() string {
	if s.Name == "" {
		return s.URL()
	}
	return s.Name + "=" + s.URL()
}

// Stream reports whether the listener is a stream socket (tcp*, unix) that
// accepts connections; the others (udp*) are datagram sockets.
func (s Spec) Stream() bool { return !strings.HasPrefix(s.Network, "udp") }

func known(scheme string) bool {
	for _, k := range schemes {
		if scheme == k {
			return true
		}
	}
	return false
}

func checkName(name string) string {
	if name == "" {
		return "empty name before '=' (write NAME=tcp://..., or leave the name out)"
	}
	if len(name) > maxNameLen {
		return fmt.Sprintf("name is %d characters, more than %d", len(name), maxNameLen)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Sprintf("name %q: use letters, digits, '.', '_' or '-'", name)
		}
	}
	return ""
}

func parseHostPort(scheme, rest string) (addr, reason string) {
	switch {
	case rest == "":
		return "", "missing address (want HOST:PORT, or :PORT for every address)"
	case strings.ContainsAny(rest, "?#"):
		return "", "options are only supported for unix:// listeners"
	case strings.Contains(rest, "/"):
		return "", "unexpected path after the address"
	}
	host, port, err := net.SplitHostPort(rest)
	if err != nil {
		var ae *net.AddrError
		if !errors.As(err, &ae) {
			return "", err.Error()
		}
		switch ae.Err {
		case "missing port in address":
			return "", "missing port"
		case "too many colons in address":
			return "", "IPv6 addresses need brackets, e.g. " + scheme + "://[::1]:8080"
		}
		return "", ae.Err
	}
	if port == "" {
		return "", "missing port"
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", fmt.Sprintf("invalid port %q (want a number from 0 to 65535)", port)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		switch family := scheme[len(scheme)-1]; {
		case family == '4' && !ip.Unmap().Is4():
			return "", fmt.Sprintf("%s needs an IPv4 address, not %s", scheme, host)
		case family == '6' && ip.Is4():
			return "", fmt.Sprintf("%s needs an IPv6 address, not %s", scheme, host)
		}
	} else if strings.ContainsAny(host, " %[]") {
		return "", fmt.Sprintf("invalid host %q", host)
	}
	return net.JoinHostPort(host, port), ""
}

func parseUnix(rest string) (path string, mode os.FileMode, reason string) {
	path, query, _ := strings.Cut(rest, "?")
	switch {
	case path == "":
		return "", 0, "missing path (want unix:///ABSOLUTE/PATH)"
	case strings.HasPrefix(path, "@"):
		return "", 0, "abstract unix sockets (@name) are not supported; use a path"
	case !strings.HasPrefix(path, "/"):
		return "", 0, fmt.Sprintf("path %q must be absolute (three slashes: unix:///run/app.sock)", path)
	case strings.HasSuffix(path, "/"):
		return "", 0, fmt.Sprintf("path %q names a directory, not a socket file", path)
	case strings.IndexByte(path, 0) >= 0:
		return "", 0, "path contains a NUL byte"
	}
	path = filepath.Clean(path)
	if len(path) > maxUnixPath {
		return "", 0, fmt.Sprintf("path is %d bytes, more than the %d a unix socket allows", len(path), maxUnixPath)
	}
	mode = DefaultUnixMode
	opts, err := url.ParseQuery(query)
	if err != nil {
		return "", 0, fmt.Sprintf("invalid options %q: %v", query, err)
	}
	for key, vals := range opts {
		if key != "mode" {
			return "", 0, fmt.Sprintf("unknown option %q (want mode=0660)", key)
		}
		if len(vals) != 1 {
			return "", 0, "mode given more than once"
		}
		m, err := strconv.ParseUint(vals[0], 8, 32)
		if err != nil || m == 0 || m > 0o777 {
			return "", 0, fmt.Sprintf("invalid mode %q (want octal permission bits from 0001 to 0777, such as 0660)", vals[0])
		}
		mode = os.FileMode(m)
	}
	return path, mode, ""
}
