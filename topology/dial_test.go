package topology_test

import (
	"testing"

	"github.com/meridian-gw/meridian/topology/topologytest"
)

// TestDefaultDial: who opens a link's sessions when the file sets no dial
// (the spoke, not the hub; on a tie the only sending side, else the first
// region of between), and an explicit dial wins.
func TestDefaultDial(t *testing.T) {
	region := topologytest.Region
	route := func(name, from, to string) string {
		return "  - {name: " + name + ", from: " + from + "/kafka, to: [" + to + "/kafka], topics: {include: ['.*']}}\n"
	}
	tests := []struct {
		name    string
		regions []string
		links   string
		routes  string
		want    map[string]string // link name → dialling region
	}{
		{"tie, one way: the sender", []string{region("a", 17700, "a"), region("b", 17710, "a")},
			"  - {between: [b, a]}\n", route("r", "a", "b"), map[string]string{"b--a": "a"}},
		{"tie, both ways: the first of between", []string{region("a", 17700, "a"), region("b", 17710, "a")},
			"  - {between: [b, a]}\n", route("r", "a", "b") + route("s", "b", "a"), map[string]string{"b--a": "b"}},
		{"hub: the spokes dial, whichever way legs flow",
			[]string{region("hq", 17700, "a"), region("v7", 17710, "a"), region("v9", 17720, "a")},
			"  - {between: [hq, v7]}\n  - {between: [hq, v9]}\n", route("cfg", "hq", "v7") + route("up", "v9", "hq"),
			map[string]string{"hq--v7": "v7", "hq--v9": "v9"}},
		{"explicit dial wins", []string{region("hq", 17700, "a"), region("v7", 17710, "a"), region("v9", 17720, "a")},
			"  - {between: [hq, v7], dial: hq}\n  - {between: [hq, v9]}\n", route("cfg", "hq", "v7"),
			map[string]string{"hq--v7": "hq", "hq--v9": "v9"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			topo := topologytest.Parse(t, topologytest.Shape(tt.regions, tt.links, tt.routes))
			for _, l := range topo.Links {
				if l.Dial == nil || l.Dial.Name != tt.want[l.Name] {
					t.Errorf("link %s: dialled by %v, want %s", l.Name, l.Dial, tt.want[l.Name])
				}
			}
		})
	}
}
