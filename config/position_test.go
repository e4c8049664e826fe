package config

import (
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
