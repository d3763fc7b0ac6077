package nodecluster

import "testing"

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		out    string
		want   Version
		tested bool
	}{
		{"v20.20.2\n", Version{20, 20, 2}, true},
		{"v22.1.0", Version{22, 1, 0}, false},
		{"v21.0.0-pre", Version{21, 0, 0}, false},
		{"v18.19.1", Version{18, 19, 1}, false},
	} {
		v, err := ParseVersion(tc.out)
		if err != nil || v != tc.want || v.Tested() != tc.tested {
			t.Errorf("ParseVersion(%q) = %v (tested %v), %v; want %v (tested %v)", tc.out, v, v.Tested(), err, tc.want, tc.tested)
		}
	}
	for _, bad := range []string{"", "20.1.0", "1.1.0", "vx.1.0", "v20.1", "Bun 1.1.0"} {
		if v, err := ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q) = %v, want an error", bad, v)
		}
	}
	if s := (Version{20, 20, 2}).String(); s != "v20.20.2" {
		t.Errorf("String() = %q", s)
	}
}
