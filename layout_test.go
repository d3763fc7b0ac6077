package dutchmaster_test

import (
	"bufio"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// The package map in docs/architecture.md is the statement of which
// package may import which; this test reads it from there, so the page
// and the code cannot drift apart.
const (
	module     = "github.com/dutchmaster/dutchmaster"
	layoutDoc  = "docs/architecture.md"
	mapHeading = "## The package map"
)

// importRule is one row of the map: packages (exact, or a folder and all
// below it with "/...") and the module packages they may import.
type importRule struct {
	packages []string
	mayUse   []string
	only     bool // the row says "even indirectly": -deps is checked too
}

var backticked = regexp.MustCompile("`([^`]+)`")

func readImportRules(t *testing.T) []importRule {
	t.Helper()
	f, err := os.Open(layoutDoc)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rules []importRule
	inMap := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			inMap = line == mapHeading
			continue
		}
		if !inMap || !strings.HasPrefix(line, "| `") {
			continue
		}
		cols := strings.Split(line, "|")
		if len(cols) < 5 {
			t.Fatalf("%s: package map row without three columns: %s", layoutDoc, line)
		}
		r := importRule{only: strings.Contains(cols[3], "even indirectly")}
		for _, m := range backticked.FindAllStringSubmatch(cols[1], -1) {
			r.packages = append(r.packages, m[1])
		}
		for _, m := range backticked.FindAllStringSubmatch(cols[3], -1) {
			r.mayUse = append(r.mayUse, m[1])
		}
		rules = append(rules, r)
	}
	if len(rules) == 0 {
		t.Fatalf("%s: no package map under %q", layoutDoc, mapHeading)
	}
	return rules
}

// matches reports how specifically pattern names pkg: 0 not at all; an
// exact name beats a folder pattern, a deeper folder a shallower one.
func matches(pattern, pkg string) int {
	if pattern == pkg {
		return 1000
	}
	if dir, ok := strings.CutSuffix(pattern, "/..."); ok && (pkg == dir || strings.HasPrefix(pkg, dir+"/")) {
		return 1 + strings.Count(dir, "/")
	}
	return 0
}

func ruleFor(rules []importRule, pkg string) (importRule, bool) {
	best, score := importRule{}, 0
	for _, r := range rules {
		for _, p := range r.packages {
			if s := matches(p, pkg); s > score {
				best, score = r, s
			}
		}
	}
	return best, score > 0
}

// goList returns, for each package of the module (tests left out), the
// module packages it imports, as paths relative to the module ("." for
// the root).
func goList(t *testing.T, deps bool, pkgs ...string) map[string][]string {
	t.Helper()
	args := []string{"list", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}"}
	if deps {
		args = []string{"list", "-deps", "-f", "{{.ImportPath}}"}
	}
	out, err := exec.Command("go", append(args, pkgs...)...).Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	rel := func(p string) (string, bool) {
		if p == module {
			return ".", true
		}
		r, ok := strings.CutPrefix(p, module+"/")
		return r, ok
	}
	graph := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if deps {
			if r, ok := rel(f[0]); ok {
				graph[r] = nil
			}
			continue
		}
		pkg, _ := rel(f[0])
		graph[pkg] = []string{}
		for _, imp := range f[1:] {
			if r, ok := rel(imp); ok {
				graph[pkg] = append(graph[pkg], r)
			}
		}
	}
	return graph
}

// TestImportRules: every package of the module has a row in the package
// map, and imports only what its row allows.
func TestImportRules(t *testing.T) {
	rules := readImportRules(t)
	for pkg, imports := range goList(t, false, "./...") {
		r, ok := ruleFor(rules, pkg)
		if !ok {
			t.Errorf("%s has no row in the package map of %s", pkg, layoutDoc)
			continue
		}
		for _, imp := range imports {
			if !allowed(r, imp) {
				t.Errorf("%s imports %s; the package map allows only %v", pkg, imp, r.mayUse)
			}
		}
		if !r.only {
			continue
		}
		for dep := range goList(t, true, "./"+pkg) {
			if dep != pkg && !allowed(r, dep) {
				t.Errorf("%s links %s (indirectly); the package map allows only %v", pkg, dep, r.mayUse)
			}
		}
	}
}

func allowed(r importRule, imp string) bool {
	for _, p := range r.mayUse {
		if matches(p, imp) > 0 {
			return true
		}
	}
	return false
}

// TestImportRulesMatch: the map's patterns behave as the page says.
func TestImportRulesMatch(t *testing.T) {
	rules := []importRule{
		{packages: []string{"sockets/..."}, mayUse: []string{"sockets/..."}},
		{packages: []string{"sockets/worker"}, mayUse: []string{"sockets/wire"}},
	}
	for pkg, want := range map[string]string{"sockets": "sockets/...", "sockets/nodecluster": "sockets/...", "sockets/worker": "sockets/wire"} {
		r, ok := ruleFor(rules, pkg)
		if !ok || r.mayUse[0] != want {
			t.Errorf("%s: rule %v, want the one allowing %s", pkg, r, want)
		}
	}
	if _, ok := ruleFor(rules, "socketsx"); ok {
		t.Error("sockets/... matched socketsx")
	}
}
