package config

import (
	"fmt"
	"slices"
	"strings"

	"github.com/meridian-gw/meridian/routing/topicset"
)

// Route cycles. The routes make a directed graph over clusters (an edge
// from a route's from to each of its to). A cycle in it (hq -> dr -> hq,
// or a ring a -> b -> c -> a) is legitimate, active-active replication,
// so validate reports it as a warning, not a problem: which routes form
// it and how records are kept from coming back (docs/active-active.md).

// maxCycles bounds the cycles reported; cycleSteps bounds the search.
const (
	maxCycles  = 32
	cycleSteps = 1 << 16
)

// routeEdge is one route's edge in the graph.
type routeEdge struct {
	route    int // index in File.Routes
	from, to string
}

// routeCycles returns the graph's elementary cycles, each as its edges in
// order from the smallest cluster reference, each once (at most maxCycles;
// more reports whether the search stopped early).
func routeCycles(f *File) (cycles [][]routeEdge, more bool) {
	out := map[string][]routeEdge{}
	var nodes []string
	add := func(n string) {
		if !slices.Contains(nodes, n) {
			nodes = append(nodes, n)
		}
	}
	for i, r := range f.Routes {
		for _, to := range r.To {
			if to == r.From || r.From == "" || to == "" {
				continue
			}
			add(r.From)
			add(to)
			out[r.From] = append(out[r.From], routeEdge{route: i, from: r.From, to: to})
		}
	}
	slices.Sort(nodes)
	steps := 0
	// Johnson-style without the blocking sets: from each start s, a depth
	// first search through nodes after s; graphs here are small, and
	// steps bounds the rest.
	for si, s := range nodes {
		var path []routeEdge
		onPath := map[string]bool{s: true}
		var dfs func(n string) bool
		dfs = func(n string) bool {
			for _, e := range out[n] {
				if steps++; steps > cycleSteps {
					more = true
					return false
				}
				if e.to == s {
					if len(cycles) == maxCycles {
						more = true
						return false
					}
					cycles = append(cycles, append(append([]routeEdge(nil), path...), e))
					continue
				}
				if onPath[e.to] || slices.Index(nodes, e.to) < si {
					continue
				}
				onPath[e.to] = true
				path = append(path, e)
				if !dfs(e.to) {
					return false
				}
				path = path[:len(path)-1]
				onPath[e.to] = false
			}
			return true
		}
		if !dfs(s) {
			break
		}
	}
	return cycles, more
}

// cycleTopicSteps bounds the topic-set searches of cycleCarries, for all
// cycles of a file together; what runs out of it is warned about.
const cycleTopicSteps = 1 << 18

// cycleCarries reports whether records can go round cycle c: false only
// when, for some route of it, no destination topic it writes (rename
// applied) is a topic the next route of the cycle reads, decided exactly
// by routing/topicset. A hop it cannot decide (a rename with capture
// groups or a repeated {topic}, an invalid pattern, a search over budget)
// counts as carrying. Filters are not considered.
func cycleCarries(f *File, c []routeEdge, budget *topicset.Budget) bool {
	for i, e := range c {
		r, next := f.Routes[e.route], f.Routes[c[(i+1)%len(c)].route]
		region, cluster, ok := SplitRef(r.From)
		if !ok {
			continue
		}
		prefix, suffix, ok := splitRename(r.Rename, region, cluster)
		if !ok {
			continue
		}
		src, err := topicset.New(r.Topics.Include, r.Topics.Exclude, "", "")
		if err != nil {
			continue
		}
		out, err := src.Renamed(prefix, suffix)
		if err != nil {
			continue
		}
		in, err := topicset.New(next.Topics.Include, next.Topics.Exclude, "", "")
		if err != nil {
			continue
		}
		if _, common, err := topicset.Common(out, in, budget); err == nil && !common {
			return false
		}
	}
	return true
}

// cycleWarnings warns at the first route of each route cycle whose
// topics can carry records round it.
func cycleWarnings(f *File, warn func(path, format string, args ...any)) {
	region := func(ref string) string { r, _, _ := strings.Cut(ref, "/"); return r }
	cycles, more := routeCycles(f)
	budget := topicset.Budget{Steps: cycleTopicSteps}
	for _, c := range cycles {
		if !cycleCarries(f, c, &budget) {
			continue // no record can go round: nothing to prevent
		}
		// Told from the route first in the file.
		first := 0
		for i, e := range c {
			if e.route < c[first].route {
				first = i
			}
		}
		c = append(c[first:len(c):len(c)], c[:first]...)
		var hops, names []string
		var pass []string
		hops = append(hops, c[0].from)
		for _, e := range c {
			hops = append(hops, e.to)
			if n := fmt.Sprintf("%q", f.Routes[e.route].Name); !slices.Contains(names, n) {
				names = append(names, n)
			}
			a, b := region(e.from), region(e.to)
			for _, l := range f.Links {
				if len(l.Between) != 2 || a == b {
					continue
				}
				if x, y := region(l.Between[0]), region(l.Between[1]); (x == a && y == b || x == b && y == a) && l.Passthrough {
					if n := fmt.Sprintf("%q", l.Name); !slices.Contains(pass, n) {
						pass = append(pass, n)
					}
					break
				}
			}
		}
		how := "the sending gateways add the meridian.origin header (the clusters each record was written to) and drop a record whose path holds the destination"
		if len(pass) > 0 {
			how += fmt.Sprintf("; passthrough (link %s) carries no header: its senders skip the batches Meridian's own sinks wrote into the source from a cluster of the cycle (their producer IDs)", strings.Join(pass, ", "))
			if len(c) > 2 {
				how += ", so a record written by a passthrough leg of the cycle goes no further round it"
			}
		}
		warn(fmt.Sprintf("routes[%d]", c[0].route), "route cycle %s (routes %s): active-active; no record is written back into a cluster it has been written to: %s",
			strings.Join(hops, " -> "), strings.Join(names, ", "), how)
	}
	if more {
		warn("routes", "more route cycles than the %d listed (the search stops there)", len(cycles))
	}
}
