// Package routing compiles a topology into the forwarding table of one
// gateway: which route legs it sends (their source cluster is in its region),
// which it receives (their destination cluster is in its region), the topic
// filters and rename of each leg, and the peer gateway each outbound leg goes
// to. It does no I/O.
//
// A leg is one (route, destination cluster) pair: a route to two clusters has
// two legs, each with its own progress at its own destination.
package routing

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/meridian-gw/meridian/topology"
)

// Leg is one route towards one destination cluster.
type Leg struct {
	ID       string // "route:region/cluster" (the destination), unique in a topology
	Route    *topology.Route
	From, To *topology.Cluster
	Link     *topology.Link

	include, exclude           []*regexp.Regexp
	groupInclude, groupExclude []*regexp.Regexp
}

// SyncsGroups reports whether the leg syncs any consumer group's offsets.
func (l *Leg) SyncsGroups() bool { return len(l.groupInclude) > 0 }

// MatchGroup reports whether a source consumer group's offsets are synced.
func (l *Leg) MatchGroup(group string) bool { return matchAny(l.groupInclude, l.groupExclude, group) }

func matchAny(include, exclude []*regexp.Regexp, s string) bool {
	in := false
	for _, re := range include {
		if re.MatchString(s) {
			in = true
			break
		}
	}
	if !in {
		return false
	}
	for _, re := range exclude {
		if re.MatchString(s) {
			return false
		}
	}
	return true
}

// Match reports whether a source topic belongs to the leg. Internal topics
// (names starting with "__") never do.
func (l *Leg) Match(topic string) bool {
	if strings.HasPrefix(topic, "__") {
		return false
	}
	return matchAny(l.include, l.exclude, topic)
}

// DestTopic is the destination topic name of a source topic.
func (l *Leg) DestTopic(topic string) string {
	r := strings.NewReplacer("{topic}", topic, "{source_region}", l.From.Region.Name, "{source_cluster}", l.From.Name)
	return r.Replace(l.Route.Rename)
}

// StartAtLatest reports whether partitions with no committed progress start at
// the end of the source partition rather than its beginning.
func (l *Leg) StartAtLatest() bool { return l.Route.StartAt == "latest" }

// Discover is the topic discovery interval.
func (l *Leg) Discover() time.Duration {
	if l.Route.Discover > 0 {
		return l.Route.Discover
	}
	return 2 * time.Second
}

// Peer is a remote gateway this gateway sends legs to.
type Peer struct {
	Gateway *topology.Gateway
	Link    *topology.Link
	Legs    []*Leg
}

// Table is one gateway's forwarding table.
type Table struct {
	Gateway *topology.Gateway
	Out     []*Peer // legs this gateway reads and sends, grouped by peer
	In      []*Leg  // legs this gateway receives and writes
	legs    map[string]*Leg
}

// InLeg returns the inbound leg with the given ID.
func (t *Table) InLeg(id string) (*Leg, bool) {
	l, ok := t.legs[id]
	return l, ok && l.To.Region == t.Gateway.Region
}

// Compile builds the table of gateway name. A leg whose source and
// destination are in the same region is both sent and received by that
// region's first gateway, over a local link (no compression).
func Compile(topo *topology.Topology, gateway string) (*Table, error) {
	gw, ok := topo.Gateways[gateway]
	if !ok {
		return nil, fmt.Errorf("unknown gateway %q", gateway)
	}
	t := &Table{Gateway: gw, legs: map[string]*Leg{}}
	peers := map[string]*Peer{}
	for _, rt := range topo.Routes {
		for _, to := range rt.To {
			leg, err := newLeg(topo, rt, to)
			if err != nil {
				return nil, err
			}
			t.legs[leg.ID] = leg
			if to.Region == gw.Region {
				t.In = append(t.In, leg)
			}
			if rt.From.Region == gw.Region {
				// Next hop: the first gateway of the destination region. Live
				// membership picks among several in a later version.
				if len(to.Region.Gateways) == 0 {
					return nil, fmt.Errorf("route %q: region %q has no gateway", rt.Name, to.Region.Name)
				}
				dst := to.Region.Gateways[0]
				p := peers[dst.Name]
				if p == nil {
					p = &Peer{Gateway: dst, Link: leg.Link}
					peers[dst.Name] = p
					t.Out = append(t.Out, p)
				}
				p.Legs = append(p.Legs, leg)
			}
		}
	}
	return t, nil
}

func newLeg(topo *topology.Topology, rt *topology.Route, to *topology.Cluster) (*Leg, error) {
	link := topo.LinkBetween(rt.From.Region.Name, to.Region.Name)
	if link == nil && to.Region == rt.From.Region {
		link = &topology.Link{Name: "local:" + to.Region.Name, A: to.Region, B: to.Region, Transport: "quic", Profile: "lan", Compression: "none"}
	}
	if link == nil {
		return nil, fmt.Errorf("route %q: no link between regions %q and %q", rt.Name, rt.From.Region.Name, to.Region.Name)
	}
	leg := &Leg{ID: rt.Name + ":" + to.Ref(), Route: rt, From: rt.From, To: to, Link: link}
	for _, set := range []struct {
		what string
		src  []string
		dst  *[]*regexp.Regexp
	}{
		{"include", rt.Include, &leg.include}, {"exclude", rt.Exclude, &leg.exclude},
		{"groups.include", rt.GroupInclude, &leg.groupInclude}, {"groups.exclude", rt.GroupExclude, &leg.groupExclude},
	} {
		for _, s := range set.src {
			re, err := regexp.Compile(s)
			if err != nil {
				return nil, fmt.Errorf("route %q: %s %q: %w", rt.Name, set.what, s, err)
			}
			*set.dst = append(*set.dst, re)
		}
	}
	return leg, nil
}
