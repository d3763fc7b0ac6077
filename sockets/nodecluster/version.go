package nodecluster

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// TestedMajors are the Node.js major versions whose cluster protocol
// dutchmaster is tested against (an integration test per major, with the
// real node). The protocol is internal to Node: other majors run, with a
// warning in the master's log.
var TestedMajors = []int{20}

// Version is a Node.js version, as `node --version` prints it (v20.20.2).
type Version struct {
	Major, Minor, Patch int
}

// ParseVersion reads the output of `node --version`.
func ParseVersion(s string) (Version, error) {
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, "v")
	parts := strings.SplitN(rest, ".", 3)
	if !ok || len(parts) != 3 {
		return Version{}, fmt.Errorf("%q is not a Node.js version (want vMAJOR.MINOR.PATCH)", s)
	}
	var n [3]int
	for i, p := range parts {
		// A pre-release or build suffix (v21.0.0-pre) belongs to the patch.
		if i == 2 {
			p, _, _ = strings.Cut(p, "-")
		}
		x, err := strconv.Atoi(p)
		if err != nil || x < 0 {
			return Version{}, fmt.Errorf("%q is not a Node.js version (want vMAJOR.MINOR.PATCH)", s)
		}
		n[i] = x
	}
	return Version{Major: n[0], Minor: n[1], Patch: n[2]}, nil
}

func (v Version) String() string { return fmt.Sprintf("v%d.%d.%d", v.Major, v.Minor, v.Patch) }

// Tested reports whether v's major is one of TestedMajors.
func (v Version) Tested() bool { return slices.Contains(TestedMajors, v.Major) }
