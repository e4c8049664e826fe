package routing

import (
	"cmp"
	"slices"
	"strconv"
	"strings"

	"github.com/meridian-gw/meridian/topology"
)

// Path is how a leg's batches reach their destination region: over
// Links[0] alone (direct), or through a relay region, one link per hop.
// Hops[i] is the gateway that the sessions of Links[i] go to: for a relay
// path Hops[0] is the relay gateway and Hops[1] the destination's.
type Path struct {
	Regions []*topology.Region  // source, then each hop's region
	Links   []*topology.Link    // one per hop
	Hops    []*topology.Gateway // the gateway each hop is dialled at
	Cost    int                 // the sum of the links' costs
}

// Via is the relay region, or nil for a direct path.
func (p *Path) Via() *topology.Region {
	if p == nil || len(p.Regions) < 3 {
		return nil
	}
	return p.Regions[1]
}

// String is "direct" or "via REGION".
func (p *Path) String() string {
	if v := p.Via(); v != nil {
		return "via " + v.Name
	}
	return "direct"
}

// Describe is the path hop by hop, for logs and golden files:
// "v7 -[v7--dr]-> dr-a -[dr--hq]-> hq-a (cost 110)".
func (p *Path) Describe() string {
	var b strings.Builder
	b.WriteString(p.Regions[0].Name)
	for i, l := range p.Links {
		b.WriteString(" -[" + l.Name + "]-> " + p.Hops[i].Name)
	}
	b.WriteString(" (cost ")
	b.WriteString(strconv.Itoa(p.Cost))
	b.WriteString(")")
	return b.String()
}

// relayPath is the path that gateway g of region src takes to dst through
// region via, or nil when there is none. Every hop must be one its
// upstream side can open: the link's sending end carried by the upstream
// gateway (pins honoured, as for direct legs) and dialled from that side
// (topology.Link.Dials), because a relay opens its session towards the
// destination on demand and a site behind NAT can only dial out. Both
// links must be quic (an amqp link has no gateway to dial), and the
// destination's gateway must be one that receives legs from src (a
// carrier of a direct link between src and dst), or it would refuse the
// leg.
func relayPath(topo *topology.Topology, src, dst, via *topology.Region, g *topology.Gateway) *Path {
	if via == src || via == dst || g.Region != src || len(via.Gateways) == 0 {
		return nil
	}
	hop := func(from, to *topology.Region, sender *topology.Gateway) (*topology.Link, *topology.Gateway) {
		l := carrier(topo.LinksBetween(from.Name, to.Name), from, sender)
		if l == nil || l.Transport != "quic" || !l.Dials(from) {
			return nil, nil
		}
		return l, nextHop(l, to)
	}
	l1, relay := hop(src, via, g)
	if l1 == nil {
		return nil
	}
	l2, last := hop(via, dst, relay)
	if l2 == nil || carrier(topo.LinksBetween(src.Name, dst.Name), dst, last) == nil {
		return nil
	}
	return &Path{Regions: []*topology.Region{src, via, dst}, Links: []*topology.Link{l1, l2},
		Hops: []*topology.Gateway{relay, last}, Cost: l1.Cost + l2.Cost}
}

// relayPathsFrom are the relay paths from gateway g of src to dst, the
// cheapest first (ties go to the relay region whose first link comes
// first in the file); nil when there is none.
func relayPathsFrom(topo *topology.Topology, src, dst *topology.Region, g *topology.Gateway) []*Path {
	var paths []*Path
	seen := map[*topology.Region]bool{}
	for _, l := range topo.Links {
		for _, via := range []*topology.Region{l.A, l.B} {
			if seen[via] {
				continue
			}
			seen[via] = true
			if p := relayPath(topo, src, dst, via, g); p != nil {
				paths = append(paths, p)
			}
		}
	}
	slices.SortStableFunc(paths, func(a, b *Path) int { return cmp.Compare(a.Cost, b.Cost) })
	return paths
}

// RelayFor is how this gateway relays leg id for origin, the gateway of
// the leg's source region that sent it here: the path origin takes
// through this gateway, or false when the topology has none (the leg is
// unknown, origin may not send it, or no path from origin's region to the
// leg's destination passes through this gateway). A relay accepts a
// session for such legs only, and opens its own towards Path.Hops[1].
func (t *Table) RelayFor(id string, origin *topology.Gateway) (*Path, bool) {
	l := t.legs[id]
	if l == nil || origin == nil || !l.SentBy(origin) {
		return nil, false
	}
	p := relayPath(t.topo, l.From.Region, l.To.Region, t.Gateway.Region, origin)
	if p == nil || p.Hops[0] != t.Gateway {
		return nil, false
	}
	return p, true
}

// RelayedBy reports whether this gateway takes inbound leg id from relay
// on behalf of origin: origin may send the leg, and the topology has a
// path from origin through relay to this gateway. A peer is never trusted
// for more than its own legs and the relays the topology lets it carry.
func (t *Table) RelayedBy(id string, origin, relay *topology.Gateway) bool {
	l := t.in[id]
	if l == nil || origin == nil || relay == nil || !l.SentBy(origin) {
		return false
	}
	p := relayPath(t.topo, l.From.Region, l.To.Region, relay.Region, origin)
	return p != nil && p.Hops[0] == relay && p.Hops[1] == t.Gateway
}

// relayPeers lists the peers gateway gw dials only to relay: the first
// hops of its peers' relay paths, and the destinations of the legs it
// relays for others (one per gateway, in the order found), leaving out
// those already in out; and whether gw relays any leg.
func relayPeers(topo *topology.Topology, gw *topology.Gateway, out []*Peer, legs map[string]*Leg) (peers []*Peer, relaying bool) {
	have := map[*topology.Gateway]bool{}
	for _, p := range out {
		if p.Dials {
			have[p.Gateway] = true
		}
	}
	add := func(g *topology.Gateway, l *topology.Link) {
		if !have[g] {
			have[g] = true
			peers = append(peers, &Peer{Gateway: g, Link: l, Dials: true})
		}
	}
	for _, p := range out {
		for _, rp := range p.RelayPaths {
			add(rp.Hops[0], rp.Links[0])
		}
	}
	for _, rt := range topo.Routes {
		for _, to := range rt.To {
			l := legs[rt.Name+":"+to.Ref()]
			if l == nil {
				continue
			}
			for _, og := range l.From.Region.Gateways {
				if p := relayPath(topo, l.From.Region, l.To.Region, gw.Region, og); p != nil && p.Hops[0] == gw {
					add(p.Hops[1], p.Links[1])
					relaying = true
				}
			}
		}
	}
	return peers, relaying
}
