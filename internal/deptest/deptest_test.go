// Package deptest guards the import graph and package docs: the production
// packages never import the chaos lab, the testing package or any test
// helper package, and every package has exactly one package doc.
package deptest

import (
	"encoding/json"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

type pkg struct {
	ImportPath string
	Doc        string
	Name       string
	Deps       []string
	GoFiles    []string
	Dir        string
}

func list(t *testing.T, patterns ...string) []pkg {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-json=ImportPath,Doc,Name,Deps,GoFiles,Dir"}, patterns...)...)
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// The production path: what `meridian run` needs. None of it may pull in
// the lab, the testing package or test helpers.
var production = []string{
	"./config", "./topology", "./routing", "./transport", "./transport/quic", "./mirror/...",
	"./internal/gateway", "./internal/admin", "./internal/pki", "./internal/kafkaopt",
	"./topology/profile", "./topology/membership", "./internal/units",
}

func TestProductionImportsNoTestOrChaosCode(t *testing.T) {
	const mod = "github.com/meridian-gw/meridian/"
	for _, p := range list(t, production...) {
		for _, d := range p.Deps {
			thirdParty := strings.Contains(strings.SplitN(d, "/", 2)[0], ".")
			bad := d == "testing" || strings.HasPrefix(d, "testing/") || thirdParty && strings.HasSuffix(d, "test") ||
				strings.Contains(d, "/kfake") ||
				d == mod+"chaos" || strings.HasPrefix(d, mod+"chaos/")
			if bad {
				t.Errorf("%s imports %s", p.ImportPath, d)
			}
		}
	}
}

// Leaves of the model: the link profiles and the units grammar are data and
// parsing only, so config, topology and chaos can all import them.
func TestLeavesImportNoModel(t *testing.T) {
	const mod = "github.com/meridian-gw/meridian/"
	allowed := map[string][]string{
		mod + "topology/profile": {mod + "internal/units"},
		mod + "internal/units":   nil,
	}
	for _, p := range list(t, "./topology/profile", "./internal/units") {
		for _, d := range p.Deps {
			if strings.HasPrefix(d, mod) && !slices.Contains(allowed[p.ImportPath], d) {
				t.Errorf("%s imports %s; it must stay a leaf", p.ImportPath, d)
			}
		}
	}
}

func TestEveryPackageHasOneDoc(t *testing.T) {
	for _, p := range list(t, "./...") {
		if len(p.GoFiles) == 0 {
			continue // test-only package
		}
		if p.Name != "main" && strings.TrimSpace(p.Doc) == "" {
			t.Errorf("%s has no package doc", p.ImportPath)
		}
	}
	// At most one file per package starts with a package doc comment.
	out, err := exec.Command("sh", "-c", `cd ../.. && for d in $(go list -f '{{.Dir}}' ./...); do n=$(grep -l '^// Package ' $d/*.go 2>/dev/null | grep -v _test.go | wc -l); [ "$n" -gt 1 ] && echo "$d: $n"; done; true`).Output()
	if err != nil {
		t.Fatal(err)
	}
	if s := strings.TrimSpace(string(out)); s != "" {
		t.Errorf("packages with more than one package doc:\n%s", s)
	}
}

// The real-Kafka harness (internal/kafkatest) runs JVMs from a jar cache:
// test code, except where the CLI benchmarks MirrorMaker 2 and mirrors
// against real brokers (`meridian bench mm2`, `bench mirror --kafka real`,
// `demo --kafka real`). Those files of chaos/lab, which cmd/meridian
// already links for its kfake lab, may import it; no other non-test file
// may, and the binary must still not link the testing package (kafkatest
// takes its own TB interface for that reason).
func TestKafkatestOnlyInTestsAndBenchmarks(t *testing.T) {
	const mod = "github.com/meridian-gw/meridian/"
	allowed := map[string]bool{
		"chaos/lab/mm2bench.go":      true,
		"chaos/lab/mm2offsets.go":    true,
		"chaos/lab/realkafka.go":     true,
		"chaos/lab/mm2link_linux.go": true,
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range list(t, "./...") {
		if p.ImportPath == mod+"internal/kafkatest" {
			continue
		}
		for _, f := range p.GoFiles {
			path := filepath.Join(p.Dir, f)
			af, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range af.Imports {
				if ip, _ := strconv.Unquote(imp.Path.Value); ip == mod+"internal/kafkatest" {
					rel, _ := filepath.Rel(root, path)
					if !allowed[filepath.ToSlash(rel)] {
						t.Errorf("%s imports internal/kafkatest; only tests and the benchmark files of chaos/lab may", rel)
					}
				}
			}
		}
	}
	for _, p := range list(t, "./cmd/meridian") {
		for _, d := range p.Deps {
			if d == "testing" || strings.HasPrefix(d, "testing/") {
				t.Errorf("the meridian binary links %s", d)
			}
		}
	}
}
