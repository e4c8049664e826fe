package config

import (
	"fmt"
	"strings"
	"testing"
)

func TestRouteCycles(t *testing.T) {
	route := func(from string, to ...string) Route {
		return Route{Name: from + ">" + strings.Join(to, ","), From: from, To: to}
	}
	for _, tc := range []struct {
		name   string
		routes []Route
		want   []string
	}{
		{"none", []Route{route("a/k", "b/k"), route("b/k", "c/k")}, nil},
		{"two", []Route{route("hq/k", "dr/k"), route("dr/k", "hq/k")}, []string{"dr/k hq/k"}},
		{"ring", []Route{route("a/k", "b/k"), route("b/k", "c/k"), route("c/k", "a/k")}, []string{"a/k b/k c/k"}},
		{"fan-out back", []Route{route("a/k", "b/k", "c/k"), route("b/k", "a/k"), route("c/k", "a/k")}, []string{"a/k b/k", "a/k c/k"}},
		{"same cluster", []Route{route("a/k", "a/k")}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cycles, more := routeCycles(&File{Routes: tc.routes})
			var got []string
			for _, c := range cycles {
				var hops []string
				for _, e := range c {
					hops = append(hops, e.from)
				}
				got = append(got, strings.Join(hops, " "))
			}
			if more || fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("cycles %q (more %v), want %q", got, more, tc.want)
			}
		})
	}
}

// A complete graph has more elementary cycles than are listed: the search
// stops at maxCycles and says so.
func TestRouteCyclesBounded(t *testing.T) {
	var routes []Route
	for i := range 12 {
		var to []string
		for j := range 12 {
			if i != j {
				to = append(to, fmt.Sprintf("r%d/k", j))
			}
		}
		routes = append(routes, Route{Name: fmt.Sprint(i), From: fmt.Sprintf("r%d/k", i), To: to})
	}
	cycles, more := routeCycles(&File{Routes: routes})
	if len(cycles) != maxCycles || !more {
		t.Errorf("%d cycles, more %v; want %d and more", len(cycles), more, maxCycles)
	}
}
