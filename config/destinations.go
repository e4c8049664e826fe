package config

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/meridian-gw/meridian/routing/topicset"
)

// The destination searches of one file may take destBudgetBase steps plus
// one per destBudgetPerStep bytes of the file in all: a step allocates up
// to about a kilobyte, which keeps validation's allocations in proportion
// to the file's size (FuzzParse holds it to that). A typical pair of
// routes takes some tens of steps.
const (
	destBudgetBase    = 10000
	destBudgetPerStep = 1
)

// destLeg is one route towards one destination cluster, as destinations
// sees it: the destination topics it can write.
type destLeg struct {
	route          int
	to             int // index in routes[route].to
	set            *topicset.Set
	prefix, suffix string
}

// destinations computes, for every route, the destination topics its
// include and exclude patterns and its rename can produce, and reports:
//
//   - two routes that can write the same topic at the same cluster,
//     unless both say merge: true (fan-in from different sources would
//     interleave them, and the same source would be written twice);
//   - renames that make names Kafka refuses: longer than 249 characters.
//
// The sets are decided exactly (package routing/topicset) for renames with
// one {topic}; renames with capture groups or a repeated {topic} are not
// compared. Routes whose patterns or rename have problems of their own
// are skipped: those are reported already.
func (v *validator) destinations() {
	// The searches of one file share a budget (a state costs some hundred
	// bytes): a small file cannot make validation run long or allocate
	// much. What runs out of it is not reported.
	v.budget = topicset.Budget{Steps: destBudgetBase + v.size/destBudgetPerStep}
	byDest := map[string][]destLeg{}
	var order []string
	for i, r := range v.f.Routes {
		rp := fmt.Sprintf("routes[%d]", i)
		if !v.routeSettled(r) {
			continue
		}
		fromRegion, fromCluster, _ := SplitRef(r.From)
		prefix, suffix, ok := splitRename(r.Rename, fromRegion, fromCluster)
		if !ok {
			continue
		}
		src, err := topicset.New(r.Topics.Include, r.Topics.Exclude, "", "")
		if err != nil {
			continue
		}
		if lit := len(prefix) + len(suffix); lit > 0 {
			v.renameLength(rp, r, src, lit)
		}
		set, err := src.Renamed(prefix, suffix)
		if err != nil {
			continue
		}
		for j, to := range r.To {
			if _, seen := byDest[to]; !seen {
				order = append(order, to)
			}
			byDest[to] = append(byDest[to], destLeg{route: i, to: j, set: set, prefix: prefix, suffix: suffix})
		}
	}
	for _, dest := range order {
		legs := byDest[dest]
		for b := 1; b < len(legs); b++ {
			for a := range b {
				v.collision(dest, legs[a], legs[b])
			}
		}
	}
}

// routeSettled reports whether a route's references, patterns and rename
// are valid, so that its destinations can be computed.
func (v *validator) routeSettled(r Route) bool {
	if r.From == "" || len(r.Topics.Include) == 0 {
		return false
	}
	if _, _, ok := SplitRef(r.From); !ok {
		return false
	}
	for _, p := range append(append([]string(nil), r.Topics.Include...), r.Topics.Exclude...) {
		if p == "" {
			return false
		}
		if _, err := regexp.Compile(p); err != nil {
			return false
		}
	}
	return len(renameProblems(r.Rename, r.Topics.Include)) == 0
}

// splitRename returns the literal text around the one {topic} of a
// rename, with {source_region} and {source_cluster} filled in; ok is false
// for a rename that uses capture groups or {topic} more than once.
func splitRename(t, region, cluster string) (prefix, suffix string, ok bool) {
	t = strings.NewReplacer("{source_region}", region, "{source_cluster}", cluster).Replace(t)
	if strings.Count(t, "{topic}") != 1 {
		return "", "", false
	}
	prefix, suffix, _ = strings.Cut(t, "{topic}")
	if strings.ContainsAny(prefix+suffix, "{}") || len(suffix) > 63 {
		return "", "", false
	}
	return prefix, suffix, true
}

// renameLength rejects a rename that makes a topic the route matches
// longer than Kafka allows. Patterns that match names of any length (a
// loop such as .*) are not rejected: the topics that become too long are
// refused one by one at the destination (quarantined, in status).
func (v *validator) renameLength(rp string, r Route, src *topicset.Set, lit int) {
	short, ok, err := src.Shortest(&v.budget)
	if err != nil || !ok {
		return
	}
	if len(short)+lit > topicset.MaxLen {
		v.errorf(rp+".rename", "%q makes every destination topic name longer than Kafka's %d characters: the shortest topic the include patterns match has %d, renamed %d",
			r.Rename, topicset.MaxLen, len(short), len(short)+lit)
		return
	}
	n, bounded, err := src.Longest(&v.budget)
	if err == nil && bounded && n+lit > topicset.MaxLen {
		v.errorf(rp+".rename", "%q makes destination topic names of up to %d characters, longer than Kafka's %d: the include patterns match topics of up to %d characters and the rename adds %d",
			r.Rename, n+lit, topicset.MaxLen, n, lit)
	}
}

// collision reports two legs that can write the same destination topic.
func (v *validator) collision(dest string, a, b destLeg) {
	ra, rb := v.f.Routes[a.route], v.f.Routes[b.route]
	if a.route == b.route || ra.Merge && rb.Merge {
		return
	}
	// Literal prefixes (or suffixes) that differ where both have text
	// cannot make the same name: the usual fan-in ({source_region}.{topic})
	// needs no search.
	if !strings.HasPrefix(a.prefix, b.prefix) && !strings.HasPrefix(b.prefix, a.prefix) ||
		!strings.HasSuffix(a.suffix, b.suffix) && !strings.HasSuffix(b.suffix, a.suffix) {
		return
	}
	name, ok, err := topicset.Common(a.set, b.set, &v.budget)
	if err != nil || !ok {
		return
	}
	srcA := name[len(a.prefix) : len(name)-len(a.suffix)]
	srcB := name[len(b.prefix) : len(name)-len(b.suffix)]
	path := fmt.Sprintf("routes[%d].to[%d]", b.route, b.to)
	first := fmt.Sprintf("routes[%d] (%q, line %d)", a.route, ra.Name, v.at(fmt.Sprintf("routes[%d]", a.route)).line)
	if ra.From == rb.From && srcA == srcB {
		v.errorf(path, "route %q and %s both mirror %s topic %q into topic %q at %s: each record would be written twice; narrow their topics, or set merge: true on both",
			rb.Name, first, ra.From, srcA, name, dest)
		return
	}
	v.errorf(path, "route %q and %s can both write topic %q at %s (from %s topic %q and from %s topic %q); rename one (e.g. rename: \"{source_region}.{topic}\"), or set merge: true on both to mix them in one topic",
		rb.Name, first, name, dest, rb.From, srcB, ra.From, srcA)
}
