// Package routing compiles a topology into the forwarding table of one
// gateway: which route legs it sends (their source cluster is in its region),
// which it receives (their destination cluster is in its region), the topic
// filters and rename of each leg, and the peer gateway each outbound leg goes
// to. It does no I/O.
//
// # Filters
//
// A route's filter (routes[].filter) is a CEL expression over each source
// record, compiled and type-checked once per route by package
// routing/filter and shared by the route's legs (Leg.Filter); the sending
// gateway evaluates it before the link (docs/filters.md). CEL was chosen
// over github.com/expr-lang/expr by measurement on the workload
// (`headers["severity"] in ["alarm", "critical"] && value.engine.rpm >
// 3000`, JSON decoded once per record), on one core of a shared 2-core
// AMD EPYC, Go 1.26, medians of 3, records/s and allocations per record:
//
//	cd routing/filter/langbench && go test -run '^$' -bench . -benchmem -cpu 1 -count 3
//
//	                          CEL (lazy value)   expr
//	issue filter, match       115k, 36           155k, 38
//	issue filter, no match    299k, 21           139k, 37
//	header only, match        1.45M, 4           1.81M, 5
//	header only, no match     0.98M, 4           0.71M, 5
//
// The languages are close on equal work; CEL's activation lets a value be
// read only when evaluation reaches it, and lets headers and JSON be our
// own types read in place. This package's filters (routing/filter
// BenchmarkMatch, medians of 5):
//
//	go test -run '^$' -bench Match -benchmem -cpu 1 -count 5 ./routing/filter/
//
//	issue filter 808k/s matching (7 allocs), 1.27M/s not matching (6);
//	header only 4.84M/s matching, 5.24M/s not (4 allocs, 80 B).
//
// # Loops
//
// Routes may form cycles over clusters (active-active). Package
// routing/origin holds the provenance header meridian.origin and the rule
// a sender applies to each record (never into a cluster on its path).
// For what carries no header (passthrough batches), Leg.LoopWriters lists
// the legs into the leg's source whose own source the leg's destination
// reaches over the routes: the batches their sinks wrote are not sent on
// (docs/active-active.md).
//
// # Destination topics
//
// DestTopic renames with {topic}, {source_region}, {source_cluster} and
// the capture groups of the include pattern that matched. Package
// routing/topicset decides, for validation, whether two routes can write
// the same destination topic and how long renamed names get.
//
// A leg is one (route, destination cluster) pair: a route to two clusters has
// two legs, each with its own progress at its own destination.
//
// # Links, pins and next hops
//
// A leg from region S to another region D travels over a link joining S and
// D. A link end written "region/gateway" pins the link to that gateway in its
// region; an end written "region" lets any gateway of the region carry it.
//
//   - Sending: a gateway g of S sends the leg over the first link (in file
//     order) between S and D whose S end is pinned to g, else over the first
//     one whose S end is not pinned. When every such link is pinned to
//     another gateway of S, g does not send the leg: a pinned sending end
//     means only that gateway sends the link's legs.
//   - Next hop: the D end's pinned gateway, or else the first gateway of D
//     (live membership will choose among several in a later version).
//   - Receiving: a gateway h of D receives the leg when a link between S and
//     D has its D end pinned to h or not pinned. Gateways of D that are not
//     the next hop are ready for the leg, but nothing is sent to them yet.
//
// # Who dials
//
// A link's sessions are opened by the gateways of its dial side
// (topology.Link.Dial); one session carries legs both ways. A Peer says
// whether this gateway dials it (Peer.Dials): when it does not, the peer
// dials and the Peer's legs travel back over the peer's sessions. A
// gateway of the dial side that receives legs over the link dials every
// gateway of the other side that sends it one (Peer.Receive), asking for
// them. amqp links and local links have no dial side: each sender dials.
//
// A leg whose source and destination share a region (a local leg) needs no
// link: every gateway of the region sends it to the region's first gateway
// over a local link (profile lan, no compression), and every gateway of the
// region receives it.
//
// # Relay paths
//
// Each peer this gateway dials has, besides its direct path (Peer.Direct),
// its relay paths (Peer.RelayPaths, relay.go), the cheapest first
// (Peer.Relay): paths to the peer's region through one other region R, a
// path costing the sum of its links' costs (links[].cost, else the
// profile's default). A hop must be
// one its upstream side can open: the link from the source to R is
// carried by this gateway (pins as above) and dialled from the source;
// the link from R to the destination is carried by the relay (the first
// link's R pin, or R's first gateway) and dialled from R, because the
// relay opens its session to the destination on demand; the destination
// gateway (that link's pin, or the first gateway) receives the leg; both
// links are quic. Ties go to the region whose first link comes first in
// the file. Table.RelayFor tells a relay which legs it may carry for which
// gateway and where to; Table.RelayedBy tells a destination whether to
// take a leg from a relay on behalf of an origin; Table.Relays are the
// peers a gateway dials only to relay. When the mirror uses a relay path,
// and how it moves back, is docs/relays.md.
package routing

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-gw/meridian/routing/filter"
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
	// Filter selects the records the leg sends (nil: all). The sending
	// gateway evaluates it before the link; the records it drops still
	// advance the leg's progress.
	Filter *filter.Filter

	// LoopWriters are the IDs of the legs whose Meridian writers could
	// carry a record from this leg's destination into its source: the
	// legs into From whose source is To or reachable from To over the
	// routes (LoopWriters). A sender that cannot read a record's path
	// (passthrough batches, records without the origin header) does not
	// send back what their transactional producers wrote. Empty when the
	// leg is on no route cycle.
	LoopWriters []string

	// Senders are the gateways of the source region that send the leg
	// (SentBy), in file order. With two or more the leg is shared
	// (Shared): they split its source partitions through a consumer
	// group on the source cluster.
	Senders []*topology.Gateway

	// sendLinks are the links between the source and destination regions
	// (nil for a local leg): who may send the leg follows from their
	// sending ends, as in Compile (SentBy).
	sendLinks []*topology.Link
}

// Shared reports whether several gateways send the leg, sharing its
// source partitions through the consumer group ShareGroup: a Kafka
// source only (an AMQP source's addresses are competing consumers
// already).
func (l *Leg) Shared() bool { return len(l.Senders) > 1 && l.From.Kind != "amqp" }

// ShareGroup is the consumer group on the source cluster through which
// the leg's senders share its partitions.
func (l *Leg) ShareGroup() string { return "meridian.share." + l.ID }

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

// DestTopic is the destination topic name of a source topic: the route's
// rename template with {topic}, {source_region}, {source_cluster} and the
// capture groups ({1}, {name}) of the first include pattern that matches
// the topic (a group that took no part in the match is empty).
func (l *Leg) DestTopic(topic string) string {
	if !strings.Contains(l.Route.Rename, "{") {
		return l.Route.Rename
	}
	var m []string
	var re *regexp.Regexp
	var b strings.Builder
	t := l.Route.Rename
	for {
		i := strings.IndexByte(t, '{')
		j := strings.IndexByte(t[max(i, 0):], '}')
		if i < 0 || j < 0 {
			b.WriteString(t)
			return b.String()
		}
		b.WriteString(t[:i])
		ph := t[i+1 : i+j]
		t = t[i+j+1:]
		switch ph {
		case "topic":
			b.WriteString(topic)
		case "source_region":
			b.WriteString(l.From.Region.Name)
		case "source_cluster":
			b.WriteString(l.From.Name)
		default:
			if re == nil {
				for _, inc := range l.include {
					if m = inc.FindStringSubmatch(topic); m != nil {
						re = inc
						break
					}
				}
			}
			if re == nil {
				continue
			}
			g, err := strconv.Atoi(ph)
			if err != nil {
				g = re.SubexpIndex(ph)
			}
			if g > 0 && g < len(m) {
				b.WriteString(m[g])
			}
		}
	}
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

// SentBy reports whether gateway g may feed the leg: it must be a gateway
// of the leg's source region that sends it, so when the links' sending
// ends are pinned to one gateway of the region, only that gateway (the
// rule of Compile). Any gateway of the region sends a local leg. A
// receiver refuses a session whose Hello claims a leg its gateway may not
// feed.
func (l *Leg) SentBy(g *topology.Gateway) bool {
	if g == nil || g.Region != l.From.Region {
		return false
	}
	return l.sendLinks == nil || carrier(l.sendLinks, g.Region, g) != nil
}

// MaxPartitions is the most partitions a sender may ask a destination topic
// of the leg to have (routes[].max_partitions; 1024 when not set).
func (l *Leg) MaxPartitions() int32 {
	if l.Route.MaxPartitions > 0 {
		return l.Route.MaxPartitions
	}
	return 1024
}

// Peer is a remote gateway this gateway sends legs to, or dials to
// receive legs from.
type Peer struct {
	Gateway *topology.Gateway
	Link    *topology.Link
	Legs    []*Leg // the legs this gateway sends to Gateway
	// Dials is whether this gateway opens the sessions to Gateway (the
	// link's dial side, topology.Link.Dials). When false, Gateway dials
	// and Legs travel back over its sessions.
	Dials bool
	// Receive are the legs Gateway sends to this gateway over Link, which
	// this gateway asks for in its Hello when it dials (Dials is true).
	// They are also in Table.In.
	Receive []*Leg
	// Relay is the cheapest path around Link when it is down, through
	// another region (relay.go); nil when there is none, or when this
	// gateway does not dial the peer (its legs then wait for the peer).
	// RelayPaths are all such paths, Relay first, the cheapest first: the
	// sender tries the next when one fails.
	Relay      *Path
	RelayPaths []*Path
	// Standby are the other gateways of Gateway's region that receive
	// the peer's legs over Link, in file order: when Gateway does not
	// answer (or gossip has it dead), the legs go to the first of them
	// that does, and back once Gateway is alive again. Empty when Link
	// pins the receiving end, or this gateway does not dial.
	Standby []*topology.Gateway
}

// Direct is the peer's direct path: over Link to Gateway.
func (p *Peer) Direct() *Path {
	src := p.Gateway.Region
	if p.Link != nil {
		src = p.Link.Other(p.Gateway.Region)
	}
	cost := 0
	if p.Link != nil {
		cost = p.Link.Cost
	}
	return &Path{Regions: []*topology.Region{src, p.Gateway.Region}, Links: []*topology.Link{p.Link},
		Hops: []*topology.Gateway{p.Gateway}, Cost: cost}
}

// SendsLeg reports whether the peer's legs (what this gateway sends it)
// include the leg with the given ID.
func (p *Peer) SendsLeg(id string) bool {
	for _, l := range p.Legs {
		if l.ID == id {
			return true
		}
	}
	return false
}

// Table is one gateway's forwarding table.
type Table struct {
	Gateway *topology.Gateway
	// Out are the legs this gateway reads and sends, grouped by peer, and
	// the peers it dials only to receive legs from (Peer.Receive).
	Out []*Peer
	In  []*Leg // legs this gateway receives and writes
	in  map[string]*Leg
	// Relays are the peers this gateway dials only to relay legs: the
	// first hops of its peers' relay paths, and the destinations of legs
	// it relays for other regions (RelayFor). Not in Out.
	Relays []*Peer
	// Relaying is whether this gateway relays legs for other regions
	// (RelayFor): it then accepts sessions from their senders.
	Relaying bool

	topo *topology.Topology
	legs map[string]*Leg // every leg of the topology between two regions, by ID (From, To and who sends it only)

	gateways map[string]*topology.Gateway // every gateway of the topology, by name
}

// LookupGateway returns the topology's gateway named name (with its
// region), or false when the topology has none of that name.
func (t *Table) LookupGateway(name string) (*topology.Gateway, bool) {
	g, ok := t.gateways[name]
	return g, ok
}

// InLeg returns the inbound leg with the given ID.
func (t *Table) InLeg(id string) (*Leg, bool) {
	l, ok := t.in[id]
	return l, ok
}

// Compile builds the table of gateway name, following the rules in the
// package doc.
func Compile(topo *topology.Topology, gateway string) (*Table, error) {
	gw, ok := topo.Gateways[gateway]
	if !ok {
		return nil, fmt.Errorf("unknown gateway %q", gateway)
	}
	t := &Table{Gateway: gw, in: map[string]*Leg{}, gateways: topo.Gateways, topo: topo, legs: map[string]*Leg{}}
	peers := map[string]*Peer{}
	filters := map[*topology.Route]*filter.Filter{}
	writers := loopWriters(topo)
	for _, rt := range topo.Routes {
		for _, to := range rt.To {
			src, dst := rt.From.Region, to.Region
			if len(dst.Gateways) == 0 {
				return nil, fmt.Errorf("route %q: region %q has no gateway", rt.Name, dst.Name)
			}
			links := topo.LinksBetween(src.Name, dst.Name)
			if len(links) == 0 && src != dst {
				return nil, fmt.Errorf("route %q: no link between regions %q and %q", rt.Name, src.Name, dst.Name)
			}
			if src != dst {
				id := rt.Name + ":" + to.Ref()
				t.legs[id] = &Leg{ID: id, Route: rt, From: rt.From, To: to, Link: links[0], sendLinks: links}
			}
			var send, recv *topology.Link
			hop := dst.Gateways[0]
			if src == dst {
				local := localLink(dst)
				send, recv = local, local
			} else {
				send = carrier(links, src, gw)
				recv = carrier(links, dst, gw)
				if send != nil {
					if pin := send.Pin(dst); pin != nil {
						hop = pin
					}
				}
			}
			if gw.Region == src && send != nil {
				leg, err := newLeg(rt, to, send, filters)
				if err != nil {
					return nil, err
				}
				leg.LoopWriters = writers(leg)
				leg.Senders = senders(links, src)
				p := peers[hop.Name]
				if p == nil {
					p = &Peer{Gateway: hop, Link: send, Dials: send.Dials(src)}
					peers[hop.Name] = p
					t.Out = append(t.Out, p)
				}
				if len(p.Legs) == 0 && src != dst && p.Dials {
					// The first leg sent to the peer (which may exist
					// already to receive legs from it): its relay paths
					// and standby receivers.
					if p.RelayPaths = relayPathsFrom(topo, src, dst, gw); len(p.RelayPaths) > 0 {
						p.Relay = p.RelayPaths[0]
					}
					if send.Pin(dst) == nil {
						for _, g := range dst.Gateways {
							if g != hop && carrier(links, dst, g) == send {
								p.Standby = append(p.Standby, g)
							}
						}
					}
				}
				p.Legs = append(p.Legs, leg)
				if src == dst {
					// A local leg is also received here: one Leg in both.
					t.In = append(t.In, leg)
					t.in[leg.ID] = leg
					continue
				}
			}
			if gw.Region == dst && recv != nil {
				leg, err := newLeg(rt, to, recv, filters)
				if err != nil {
					return nil, err
				}
				leg.sendLinks = links
				leg.Senders = senders(links, src)
				t.In = append(t.In, leg)
				t.in[leg.ID] = leg
				// Links this side dials carry the leg back on the sessions
				// gw opens: dial every gateway of the source that sends
				// the leg to gw, asking for it.
				for _, sg := range src.Gateways {
					l := carrier(links, src, sg)
					if l == nil || l.Dial != dst || nextHop(l, dst) != gw {
						continue
					}
					p := peers[sg.Name]
					if p == nil {
						p = &Peer{Gateway: sg, Link: l, Dials: true}
						peers[sg.Name] = p
						t.Out = append(t.Out, p)
					}
					p.Receive = append(p.Receive, leg)
				}
			}
		}
	}
	t.Relays, t.Relaying = relayPeers(topo, gw, t.Out, t.legs)
	return t, nil
}

// loopWriters returns a function that lists a leg's LoopWriters: with
// the route graph over clusters (an edge per route and destination), the
// legs M into the leg's source whose own source the leg's destination
// reaches (itself included). A batch M's sink wrote may hold a record
// that was at the destination before: forwarding it there could close a
// loop.
func loopWriters(topo *topology.Topology) func(*Leg) []string {
	next := map[*topology.Cluster][]*topology.Cluster{}
	for _, rt := range topo.Routes {
		next[rt.From] = append(next[rt.From], rt.To...)
	}
	// The clusters each cluster reaches (itself included), found once per
	// cluster asked about.
	reach := map[*topology.Cluster]map[*topology.Cluster]bool{}
	reaches := func(from, to *topology.Cluster) bool {
		seen := reach[from]
		if seen == nil {
			seen = map[*topology.Cluster]bool{from: true}
			queue := []*topology.Cluster{from}
			for len(queue) > 0 {
				c := queue[0]
				queue = queue[1:]
				for _, n := range next[c] {
					if !seen[n] {
						seen[n] = true
						queue = append(queue, n)
					}
				}
			}
			reach[from] = seen
		}
		return seen[to]
	}
	return func(l *Leg) []string {
		var ids []string
		for _, rt := range topo.Routes {
			for _, to := range rt.To {
				if to == l.From && reaches(l.To, rt.From) {
					ids = append(ids, rt.Name+":"+to.Ref())
				}
			}
		}
		return ids
	}
}

// carrier is the link that gateway g carries in region r among links (all
// joining r and the same other region): the first pinned to g, else the
// first not pinned in r; nil if g carries none (or is not in r).
func carrier(links []*topology.Link, r *topology.Region, g *topology.Gateway) *topology.Link {
	if g.Region != r {
		return nil
	}
	var open *topology.Link
	for _, l := range links {
		switch l.Pin(r) {
		case g:
			return l
		case nil:
			if open == nil {
				open = l
			}
		}
	}
	return open
}

// senders are the gateways of src that send a leg over links (all joining
// src and the leg's destination region; none: a local leg, which every
// gateway of the region sends).
func senders(links []*topology.Link, src *topology.Region) []*topology.Gateway {
	var out []*topology.Gateway
	for _, g := range src.Gateways {
		if len(links) == 0 || carrier(links, src, g) != nil {
			out = append(out, g)
		}
	}
	return out
}

// nextHop is the gateway of region dst that receives what link l carries
// there: its pin, or dst's first gateway.
func nextHop(l *topology.Link, dst *topology.Region) *topology.Gateway {
	if pin := l.Pin(dst); pin != nil {
		return pin
	}
	return dst.Gateways[0]
}

func localLink(r *topology.Region) *topology.Link {
	return &topology.Link{Name: "local:" + r.Name, A: r, B: r, Transport: "quic", Profile: "lan", Compression: "none"}
}

// newLeg builds the leg of rt to to over link. filters holds the routes'
// compiled filters: one per route, shared by its legs.
func newLeg(rt *topology.Route, to *topology.Cluster, link *topology.Link, filters map[*topology.Route]*filter.Filter) (*Leg, error) {
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
	if rt.Filter != "" {
		f := filters[rt]
		if f == nil {
			var err error
			if f, err = filter.Compile(rt.Filter); err != nil {
				return nil, fmt.Errorf("route %q: filter: %w", rt.Name, err)
			}
			filters[rt] = f
		}
		leg.Filter = f
	}
	return leg, nil
}
