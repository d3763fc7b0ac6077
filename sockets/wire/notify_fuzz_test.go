package wire

import (
	"strings"
	"testing"
)

// FuzzParseNotify: any datagram parses without a panic into assignments
// whose keys are non-empty, hold no '=' and no line end, and whose values
// hold no line end; written back one per line they parse to the same; and
// the readers take the last assignment of a key, as systemd does.
func FuzzParseNotify(f *testing.F) {
	for _, seed := range []string{
		"READY=1", "READY=1\nREADY=0", "READY=0\nREADY=1", "STATUS=booting\nREADY=1\n",
		"READY=1\r\nSTATUS=a=b c\r\n", "garbage\n=x\n\n", "WATCHDOG=trigger\nSTOPPING=1",
		"STATUS=READY=1", "MAINPID=42\nFDSTORE=1\nFDNAME=x", "\xff=\xfe\n", "",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, payload string) {
		as := ParseNotify(payload)
		var b strings.Builder
		last := map[string]string{}
		for _, a := range as {
			if a.Key == "" || strings.ContainsAny(a.Key, "=\n\r") || strings.ContainsAny(a.Value, "\n\r") {
				t.Fatalf("%q: bad assignment %q", payload, a)
			}
			b.WriteString(a.Key + "=" + a.Value + "\n")
			last[a.Key] = a.Value
		}
		again := ParseNotify(b.String())
		if len(again) != len(as) {
			t.Fatalf("%q: %q written back parses to %q", payload, as, again)
		}
		for i := range as {
			if again[i] != as[i] {
				t.Fatalf("%q: %q written back parses to %q", payload, as, again)
			}
		}
		for key, want := range last {
			if got, ok := as.Lookup(key); !ok || got != want {
				t.Fatalf("%q: Lookup(%q) = %q, %v; want the last, %q", payload, key, got, ok, want)
			}
		}
		if as.Ready() != (last["READY"] == "1") {
			t.Fatalf("%q: Ready() = %v with READY=%q last", payload, as.Ready(), last["READY"])
		}
	})
}
