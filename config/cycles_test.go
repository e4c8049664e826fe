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

// A cycle over clusters whose topics never meet (renames that the next
// route's include does not match, or disjoint topics) carries no record
// round it: no warning. Topics that meet, or a rename it cannot decide,
// keep it.
func TestCycleWarningsOnlyWhereTopicsMeet(t *testing.T) {
	r := func(name, from, to, include, rename string) Route {
		return Route{Name: name, From: from, To: []string{to}, Topics: TopicFilter{Include: []string{include}}, Rename: rename}
	}
	for _, tc := range []struct {
		name   string
		routes []Route
		warn   bool
	}{
		{"same topics", []Route{r("a", "hq/k", "dr/k", `^orders\.`, "{topic}"), r("b", "dr/k", "hq/k", `^orders\.`, "{topic}")}, true},
		{"renamed away", []Route{r("a", "hq/k", "dr/k", `^orders\.`, "hq.{topic}"), r("b", "dr/k", "hq/k", `^orders\.`, "dr.{topic}")}, false},
		{"renamed into the next include", []Route{r("a", "hq/k", "dr/k", `orders`, "hq.{topic}"), r("b", "dr/k", "hq/k", `orders`, "{topic}")}, true},
		{"disjoint topics (telemetry up, config down)", []Route{r("a", "ship/k", "hq/k", `^telemetry\.`, "ship.{topic}"), r("b", "hq/k", "ship/k", `^fleet-config$`, "{topic}")}, false},
		{"ring broken at one hop", []Route{r("a", "x/k", "y/k", `^t$`, "{topic}"), r("b", "y/k", "z/k", `^t$`, "{topic}"), r("c", "z/k", "x/k", `^u$`, "{topic}")}, false},
		{"capture-group rename: that hop undecided, the other empty", []Route{r("a", "hq/k", "dr/k", `^(orders)\.(.*)$`, "{1}-{2}"), r("b", "dr/k", "hq/k", `^zzz$`, "{topic}")}, false},
		{"capture-group rename: undecided, warned", []Route{r("a", "hq/k", "dr/k", `^(orders)\.(.*)$`, "{1}-{2}"), r("b", "dr/k", "hq/k", `-`, "{topic}")}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			cycleWarnings(&File{Routes: tc.routes}, func(path, format string, args ...any) {
				got = append(got, path+": "+fmt.Sprintf(format, args...))
			})
			if (len(got) > 0) != tc.warn {
				t.Errorf("warnings %q, want a cycle warning: %v", got, tc.warn)
			}
		})
	}
}
