package core_test

import (
	"fmt"
	"go/ast"
	"go/token"
	"go/types"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/tools/go/packages"
)

const (
	module   = "github.com/dutchmaster/dutchmaster"
	corePath = module + "/actors/core"
)

// messagePrinters are the functions outside this package that may read a
// Note's Message: they print it (a log line, a journal line) and decide
// nothing by it.
var messagePrinters = []string{
	module + "/actors.LogNote",
	module + "/actors/observers/journal.EncodeDecision",
}

// TestNoteMessagesOnlyPrinted: outside this package, a Note's Message is
// read only by messagePrinters. What a program acts on is a typed fact
// (Ready, Refused, RolloutEnded, ...), so a log line may be reworded
// without breaking the control socket, systemd's readiness or a test.
// Every package of the module is type-checked, tests included.
func TestNoteMessagesOnlyPrinted(t *testing.T) {
	found, err := noteMessageReads(nil, "../../...")
	if err != nil {
		t.Fatal(err)
	}
	if len(found) > 0 {
		t.Fatalf("a Note's Message is read outside the printers; act on a typed fact (core.Ready, core.Refused, ...) instead:\n%s",
			strings.Join(found, "\n"))
	}
}

// TestNoteMessageReadFound: the check sees a read of a Note's Message,
// through a pointer too, in any function that is not one of the printers,
// even one named like a printer in another package.
func TestNoteMessageReadFound(t *testing.T) {
	dir, err := filepath.Abs("../observers/sdnotify")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "overlay_note_read.go")
	src := `package sdnotify

import "github.com/dutchmaster/dutchmaster/actors/core"

func readyByWording(d core.Decision) bool {
	n, ok := d.(core.Note)
	return ok && n.Message == "cluster ready"
}

func LogNote(n *core.Note) string { return n.Message }
`
	found, err := noteMessageReads(map[string][]byte{file: []byte(src)}, "../observers/sdnotify")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		file + ":7: " + module + "/actors/observers/sdnotify.readyByWording reads a Note's Message",
		file + ":10: " + module + "/actors/observers/sdnotify.LogNote reads a Note's Message",
	}
	if !slices.Equal(found, want) {
		t.Fatalf("found:\n%s\nwant:\n%s", strings.Join(found, "\n"), strings.Join(want, "\n"))
	}
}

// noteMessageReads type-checks the packages matched by patterns (with
// their tests; overlay adds or replaces files) and lists every selection
// of Note.Message outside this package and the printers.
func noteMessageReads(overlay map[string][]byte, patterns ...string) ([]string, error) {
	cfg := &packages.Config{
		Mode:    packages.NeedName | packages.NeedFiles | packages.NeedSyntax | packages.NeedTypes | packages.NeedTypesInfo,
		Tests:   true,
		Overlay: overlay,
	}
	pkgs, err := packages.Load(cfg, patterns...)
	if err != nil {
		return nil, err
	}
	var errs []string
	packages.Visit(pkgs, nil, func(p *packages.Package) {
		for _, e := range p.Errors {
			errs = append(errs, e.Error())
		}
	})
	if len(errs) > 0 {
		return nil, fmt.Errorf("the packages do not type-check:\n%s", strings.Join(errs, "\n"))
	}
	seen := map[string]bool{}
	var found []token.Position
	var text []string
	for _, p := range pkgs {
		path := strings.TrimSuffix(p.PkgPath, "_test")
		if path == corePath {
			continue
		}
		for _, f := range p.Syntax {
			for _, decl := range f.Decls {
				fn := funcName(p.PkgPath, decl)
				if slices.Contains(messagePrinters, fn) {
					continue
				}
				ast.Inspect(decl, func(n ast.Node) bool {
					sel, ok := n.(*ast.SelectorExpr)
					if !ok || !isNoteMessage(p.TypesInfo.Selections[sel]) {
						return true
					}
					pos := p.Fset.Position(sel.Sel.Pos())
					at := fmt.Sprintf("%s:%d: %s reads a Note's Message", pos.Filename, pos.Line, fn)
					if !seen[at] { // a package and its test variant share files
						seen[at] = true
						found, text = append(found, pos), append(text, at)
					}
					return true
				})
			}
		}
	}
	order := make([]int, len(found))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		if c := strings.Compare(found[a].Filename, found[b].Filename); c != 0 {
			return c
		}
		return found[a].Offset - found[b].Offset
	})
	out := make([]string, len(order))
	for i, j := range order {
		out[i] = text[j]
	}
	return out, nil
}

// funcName is a function's or method's qualified name, or the package's
// for other declarations (a read in a variable's initializer).
func funcName(pkg string, decl ast.Decl) string {
	fd, ok := decl.(*ast.FuncDecl)
	if !ok {
		return pkg
	}
	if fd.Recv != nil && len(fd.Recv.List) > 0 {
		return fmt.Sprintf("%s.%s.%s", pkg, types.ExprString(fd.Recv.List[0].Type), fd.Name.Name)
	}
	return pkg + "." + fd.Name.Name
}

// isNoteMessage says whether a selection is the Message field of
// core.Note, directly, through a pointer or through embedding.
func isNoteMessage(s *types.Selection) bool {
	if s == nil || s.Kind() != types.FieldVal {
		return false
	}
	field := s.Obj()
	if field.Name() != "Message" || field.Pkg() == nil || field.Pkg().Path() != corePath {
		return false
	}
	// Walk the selection's path to the struct that declares the field.
	recv := s.Recv()
	idx := s.Index()
	for i, j := range idx {
		if p, ok := recv.(*types.Pointer); ok {
			recv = p.Elem()
		}
		named, _ := types.Unalias(recv).(*types.Named)
		st, ok := recv.Underlying().(*types.Struct)
		if !ok {
			return false
		}
		if i == len(idx)-1 {
			return named != nil && named.Obj().Pkg() != nil && named.Obj().Pkg().Path() == corePath && named.Obj().Name() == "Note"
		}
		recv = st.Field(j).Type()
	}
	return false
}
