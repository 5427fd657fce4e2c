package beacon

import (
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"path/filepath"
	"strings"
	"testing"
)

// TestReferenceIsIndependent: the reference query (the ref* functions and
// referenceQuery in reference_test.go) uses nothing of package beacon but
// the types Event, Params and Time and their fields, so that it cannot
// share a bug with the engine. Type-checked, not grepped: a call of
// Params.Window or Event.Tuple fails here, big.Int.Add does not.
func TestReferenceIsIndependent(t *testing.T) {
	fset := token.NewFileSet()
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	var ref *ast.File
	for _, n := range names {
		f, err := parser.ParseFile(fset, n, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		if f.Name.Name != "beacon" {
			continue // an external test package
		}
		files = append(files, f)
		if n == "reference_test.go" {
			ref = f
		}
	}
	if ref == nil {
		t.Fatal("reference_test.go not found")
	}
	info := &types.Info{Uses: map[*ast.Ident]types.Object{}}
	conf := types.Config{Importer: importer.ForCompiler(fset, "gc", nil)}
	if _, err := conf.Check("github.com/beaconhunt/beacon/pkg/beacon", fset, files, info); err != nil {
		t.Fatalf("type-checking the package: %v", err)
	}
	allowedType := map[string]bool{"Event": true, "Params": true, "Time": true}
	checked := 0
	for _, d := range ref.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Recv != nil || !(strings.HasPrefix(fn.Name.Name, "ref") || fn.Name.Name == "referenceQuery") {
			continue
		}
		checked++
		ast.Inspect(fn, func(n ast.Node) bool {
			id, ok := n.(*ast.Ident)
			if !ok {
				return true
			}
			obj := info.Uses[id]
			if obj == nil || obj.Pkg() == nil || obj.Pkg().Name() != "beacon" {
				return true
			}
			if fset.Position(obj.Pos()).Filename == "reference_test.go" {
				return true // the reference's own declarations
			}
			switch o := obj.(type) {
			case *types.TypeName:
				if allowedType[o.Name()] {
					return true
				}
			case *types.Var:
				if o.IsField() {
					return true // reading a field of Event or Params
				}
			}
			t.Errorf("%s: %s uses the engine's %s (%s)", fset.Position(id.Pos()), fn.Name.Name, obj.Name(),
				fset.Position(obj.Pos()))
			return true
		})
	}
	if checked < 10 {
		t.Fatalf("only %d reference functions found; did they move?", checked)
	}
}
