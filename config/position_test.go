package config

import (
	"os"
	"strings"
	"testing"
)

func TestErrorAt(t *testing.T) {
	f := parseTestFile(t, "testdata/good/full.yaml")
	tests := []struct {
		path, want string
	}{
		// A written setting: at its value.
		{"regions[0].gateways[0].tls.cert_file", "full.yaml:41:22: regions[0].gateways[0].tls.cert_file: boom"},
		// Not written (admin of east-b): at the nearest written parent.
		{"regions[0].gateways[1].admin", "full.yaml:43:9: regions[0].gateways[1].admin: boom"},
		{"", "full.yaml:2:1: boom"},
	}
	for _, tt := range tests {
		if got := f.ErrorAt(tt.path, "%s", "boom").Error(); got != tt.want {
			t.Errorf("ErrorAt(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
	var built File
	if got, want := built.ErrorAt("links[0]", "x").Error(), ":1:1: links[0]: x"; got != want {
		t.Errorf("ErrorAt on a File built in code = %q, want %q", got, want)
	}
}

func TestWarnings(t *testing.T) {
	f := parseTestFile(t, "testdata/good/full.yaml")
	var got []string
	for _, w := range f.Warnings() {
		got = append(got, w.Error())
	}
	want := []string{
		"full.yaml:6:5: gossip.keys: no gateway gossips on a plain port (gateways[].gossip.region), so the keys are checked but unused: QUIC gossip is protected by the link certificates",
		`full.yaml:89:13: routes[0].filter: passthrough (link "east.east-a--west") does not apply to this route: a filtered leg decodes its source batches to evaluate the filter and sends records`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if ws := parseTestFile(t, "testdata/good/minimal.yaml").Warnings(); len(ws) != 0 {
		t.Errorf("minimal.yaml warnings: %v", ws)
	}
}

func TestErrorsSort(t *testing.T) {
	es := Errors{{File: "b", Line: 1, Col: 1}, {File: "a", Line: 2, Col: 1}, {File: "a", Line: 1, Col: 5}, {File: "a", Line: 2, Col: 1}}
	got := es.Sort()
	if len(got) != 3 || got[0].Line != 1 || got[0].File != "a" || got[1].Line != 2 || got[2].File != "b" {
		t.Errorf("Sort = %v", got)
	}
}

// A null filter is no filter; an empty string is a mistake.
func TestNullFilter(t *testing.T) {
	data, err := os.ReadFile("testdata/bad/bad-filter-type.yaml")
	if err != nil {
		t.Fatal(err)
	}
	fixed := strings.Replace(strings.Replace(string(data), "filter: value.engine.rpm", "filter: value.engine.rpm > 1", 1), `filter: ""`, "filter:", 1)
	f, errs := parse("null.yaml", []byte(fixed), lookupTestEnv)
	if len(errs) > 0 || f.Routes[1].Filter != "" {
		t.Errorf("a null filter: %v", errs)
	}
}

// TestFilterPositions places a problem at a character of a filter
// written in each YAML scalar style.
func TestFilterPositions(t *testing.T) {
	const head = "version: 1\nregions: []\nroutes:\n  - name: r\n"
	tests := []struct {
		name, filter string
		line, col    int // of the expression's character
		want         pos
	}{
		{"plain", "    filter: key == 1 && topc", 1, 13, pos{5, 25}},
		{"single", "    filter: 'headers[''a''] == topc'", 1, 17, pos{5, 32}},
		{"double", `    filter: "headers[\"a\"] == \u0074opc"`, 1, 17, pos{5, 32}},
		{"double-folded", "    filter: \"key == 1 &&\n      topc\"", 1, 13, pos{6, 7}},
		{"plain-folded", "    filter: key == 1\n      && topc", 1, 13, pos{6, 10}},
		{"literal", "    filter: |\n      key == 1 &&\n        topc\n", 2, 3, pos{7, 9}},
		{"folded", "    filter: >-\n      key == 1 &&\n      topc\n", 1, 13, pos{7, 7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDecoder("f.yaml")
			root, ok := d.parseYAML([]byte(head + tt.filter + "\n"))
			if !ok {
				t.Fatalf("parse: %v", d.errs)
			}
			d.expandEnv(root, func(string) (string, bool) { return "", false })
			var f File
			d.decodeFile(root, &f)
			got, ok := d.exprs.at("routes[0].filter", tt.line, tt.col)
			if !ok || got != tt.want {
				t.Errorf("value %q: character %d:%d at %v (%v), want %v", f.Routes[0].Filter, tt.line, tt.col, got, ok, tt.want)
			}
		})
	}
}
