package sockets

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestParseSpec(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Spec
	}{
		{"tcp://127.0.0.1:8080", Spec{Network: "tcp", Address: "127.0.0.1:8080"}},
		{"tcp://:80", Spec{Network: "tcp", Address: ":80"}},
		{"web=tcp://localhost:0", Spec{Name: "web", Network: "tcp", Address: "localhost:0"}},
		{"tcp4://0.0.0.0:443", Spec{Network: "tcp4", Address: "0.0.0.0:443"}},
		{"tcp6://[::1]:65535", Spec{Network: "tcp6", Address: "[::1]:65535"}},
		{"tcp://[::]:80", Spec{Network: "tcp", Address: "[::]:80"}},
		{"tcp4://[::ffff:127.0.0.1]:80", Spec{Network: "tcp4", Address: "[::ffff:127.0.0.1]:80"}},
		{"udp://127.0.0.1:53", Spec{Network: "udp", Address: "127.0.0.1:53"}},
		{"dns=udp6://[::1]:5353", Spec{Name: "dns", Network: "udp6", Address: "[::1]:5353"}},
		{"unix:///run/app.sock", Spec{Network: "unix", Address: "/run/app.sock", Mode: 0o660}},
		{"api.v2=unix:///run//x/../app.sock?mode=0600", Spec{Name: "api.v2", Network: "unix", Address: "/run/app.sock", Mode: 0o600}},
		{"a_b-c=unix:///tmp/a=b.sock?mode=777", Spec{Name: "a_b-c", Network: "unix", Address: "/tmp/a=b.sock", Mode: 0o777}},
	} {
		got, err := ParseSpec(tc.in)
		if err != nil {
			t.Errorf("ParseSpec(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseSpec(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
		// The canonical form parses back to the same spec.
		if again, err := ParseSpec(got.String()); err != nil || again != got {
			t.Errorf("ParseSpec(%q) round trip via %q = %+v, %v", tc.in, got.String(), again, err)
		}
	}
}

func TestParseSpecErrors(t *testing.T) {
	for _, tc := range []struct{ in, reason string }{
		{"", "missing scheme"},
		{"127.0.0.1:80", "missing scheme"},
		{"http://127.0.0.1:80", `unknown scheme "http"`},
		{"TCP://127.0.0.1:80", `unknown scheme "TCP"`},
		{"tcp://x", "missing port"},
		{"tcp://", "missing address"},
		{"tcp://127.0.0.1:", "missing port"},
		{"tcp://[::1]", "missing port"},
		{"tcp://::1:80", "IPv6 addresses need brackets"},
		{"tcp://127.0.0.1:http", `invalid port "http"`},
		{"tcp://127.0.0.1:65536", `invalid port "65536"`},
		{"tcp://127.0.0.1:-1", `invalid port "-1"`},
		{"tcp4://[::1]:80", "tcp4 needs an IPv4 address"},
		{"tcp6://127.0.0.1:80", "tcp6 needs an IPv6 address"},
		{"tcp://127.0.0.1:80/x", "unexpected path"},
		{"tcp://127.0.0.1:80?mode=0600", "only supported for unix"},
		{"=tcp://127.0.0.1:80", "empty name"},
		{"a:b=tcp://127.0.0.1:80", "use letters, digits"},
		{"a b=tcp://127.0.0.1:80", "use letters, digits"},
		{strings.Repeat("n", 256) + "=tcp://:1", "more than 255"},
		{"unix://", "missing path"},
		{"unix://run/app.sock", "must be absolute"},
		{"unix://@abstract", "abstract unix sockets"},
		{"unix:///run/", "names a directory"},
		{"unix:///" + strings.Repeat("p", 120), "more than the 107"},
		{"unix:///run/a.sock?mode=0999", `invalid mode "0999"`},
		{"unix:///run/a.sock?mode=01777", `invalid mode "01777"`},
		{"unix:///run/a.sock?mode=0", `invalid mode "0"`},
		{"unix:///run/a.sock?mode=0600&mode=0600", "more than once"},
		{"unix:///run/a.sock?owner=me", `unknown option "owner"`},
	} {
		_, err := ParseSpec(tc.in)
		var se *SpecError
		if !errors.As(err, &se) {
			t.Errorf("ParseSpec(%q) = %v, want a *SpecError", tc.in, err)
			continue
		}
		if se.Spec != tc.in || !strings.Contains(err.Error(), tc.reason) || !strings.HasPrefix(err.Error(), "--listen ") {
			t.Errorf("ParseSpec(%q) error %q, want it to name the spec and say %q", tc.in, err, tc.reason)
		}
	}
}

func TestSpecErrorMessage(t *testing.T) {
	_, err := ParseSpec("tcp://x")
	if got, want := err.Error(), `--listen "tcp://x": missing port`; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestParseSpecs(t *testing.T) {
	specs, err := ParseSpecs([]string{"tcp://127.0.0.1:1", "admin=tcp://127.0.0.1:2", "unix:///tmp/x.sock"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range specs {
		names = append(names, s.Name)
	}
	if got := strings.Join(names, ":"); got != "listen0:admin:listen2" {
		t.Fatalf("names %q, want listen0:admin:listen2 (default names by position)", got)
	}

	for _, tc := range []struct {
		in     []string
		reason string
	}{
		{[]string{"a=tcp://:1", "a=tcp://:2"}, `name "a" is already used`},
		{[]string{"tcp://:1", "listen0=tcp://:2"}, `name "listen0" is already used`},
		{[]string{"a=tcp://:1", "b=tcp://:1"}, "same address"},
		{[]string{"tcp://:1", "tcp://"}, "missing address"},
	} {
		if _, err := ParseSpecs(tc.in); err == nil || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("ParseSpecs(%q) = %v, want an error saying %q", tc.in, err, tc.reason)
		}
	}
}

func TestSpecStream(t *testing.T) {
	for in, stream := range map[string]bool{"tcp://:1": true, "tcp6://[::1]:1": true, "unix:///a": true, "udp://:1": false, "udp4://:1": false} {
		s, err := ParseSpec(in)
		if err != nil {
			t.Fatal(err)
		}
		if s.Stream() != stream {
			t.Errorf("%s: Stream() = %v", in, !stream)
		}
	}
	if DefaultUnixMode != os.FileMode(0o660) {
		t.Errorf("DefaultUnixMode = %#o", DefaultUnixMode)
	}
}
