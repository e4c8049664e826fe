package membership

import (
	"math"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/topology/profile"
)

// Path is what the timings of a memberlist pool are derived from: the
// slowest path between two of its members.
type Path struct {
	RTT    time.Duration // base round trip (both directions' delay)
	Jitter time.Duration // one-way jitter, summed over the hops
	Loss   float64       // steady-state loss of one direction, in [0, 1]
	Hops   int           // links crossed; 0 = inside one region
}

// PathOf is the path over one link with profile p (nil: a LAN).
func PathOf(p *profile.Profile) Path {
	if p == nil {
		return Path{}
	}
	return Path{
		RTT:    p.RTT(),
		Jitter: max(p.Up.Jitter, p.Down.Jitter),
		Loss:   max(p.Up.MeanLoss(), p.Down.MeanLoss()),
		Hops:   1,
	}
}

// then is the path p followed by q.
func (p Path) then(q Path) Path {
	return Path{RTT: p.RTT + q.RTT, Jitter: p.Jitter + q.Jitter, Loss: 1 - (1-p.Loss)*(1-q.Loss), Hops: p.Hops + q.Hops}
}

// slowerThan orders paths by their worst round trip.
func (p Path) slowerThan(q Path) bool {
	return p.RTT+2*p.Jitter > q.RTT+2*q.Jitter || (p.RTT+2*p.Jitter == q.RTT+2*q.Jitter && p.Loss > q.Loss)
}

// WorstPath is the slowest of the fastest paths between any two regions of
// topo that a chain of links joins, the path every fleet-wide probe must
// fit: memberlist probes members at random, so any gateway may probe any
// other. Each link counts with its profile (load resolves a name; nil: the
// embedded profiles; an unknown profile counts as profile "wan"). Regions
// that no chain of links joins are left out (validation names them).
func WorstPath(topo *topology.Topology, load func(string) (*profile.Profile, error)) Path {
	if load == nil {
		load = profile.Load
	}
	var names []string
	idx := map[string]int{}
	for n := range topo.Regions {
		idx[n] = len(names)
		names = append(names, n)
	}
	n := len(names)
	// Floyd-Warshall over regions, ordered by slowerThan: n is small.
	d := make([][]*Path, n)
	for i := range d {
		d[i] = make([]*Path, n)
		d[i][i] = &Path{}
	}
	for _, l := range topo.Links {
		p, err := load(l.Profile)
		if err != nil {
			p, _ = profile.Load("wan")
		}
		lp := PathOf(p)
		a, b := idx[l.A.Name], idx[l.B.Name]
		if a == b {
			continue
		}
		if d[a][b] == nil || d[a][b].slowerThan(lp) {
			d[a][b], d[b][a] = &lp, &lp
		}
	}
	for k := range n {
		for i := range n {
			for j := range n {
				if d[i][k] == nil || d[k][j] == nil {
					continue
				}
				via := d[i][k].then(*d[k][j])
				if d[i][j] == nil || d[i][j].slowerThan(via) {
					d[i][j] = &via
				}
			}
		}
	}
	var worst Path
	for i := range n {
		for j := range n {
			if d[i][j] != nil && d[i][j].slowerThan(worst) {
				worst = *d[i][j]
			}
		}
	}
	return worst
}

// LANConfig is the configuration of a region's pool: memberlist's LAN
// defaults, which assume what a region is (one data centre, sub-millisecond
// round trips, no loss), probing twice as often (every 500 ms, a 250 ms
// timeout): a dead gateway is then declared dead in about 3 s instead of
// 5.5 s (TestDeadDetection), inside the 5 s a region's failover needs.
// Callers set Name, Transport and the delegates.
func LANConfig() *memberlist.Config {
	c := memberlist.DefaultLANConfig()
	c.ProbeInterval = 500 * time.Millisecond
	c.ProbeTimeout = 250 * time.Millisecond
	return c
}

// WANConfig derives the configuration of the fleet-wide pool from the
// slowest path p between two members. memberlist's DefaultWANConfig is the
// floor: every timing below only ever raises it.
//
//   - ProbeTimeout: 4 worst-case round trips (RTT plus jitter both ways)
//     and one more per percent of loss (rounded), so that an ack that
//     needs one QUIC retransmission still arrives.
//   - ProbeInterval: twice that (an indirect probe must end inside the
//     interval).
//   - SuspicionMult: 6, plus one per percent of loss (at most 12): a lossy
//     path loses more acks, and a suspect needs longer to refute.
//   - RetransmitMult: 4, plus one per two percent of loss (at most 8).
//   - GossipInterval: the round trip, so one round of gossip is in flight.
//   - TCPTimeout: 10 round trips (a QUIC handshake plus a push/pull under
//     loss).
//   - PushPullInterval and GossipToTheDeadTime: 50 probe timeouts.
//
// Callers set Name, Transport and the delegates.
func WANConfig(p Path) *memberlist.Config {
	c := memberlist.DefaultWANConfig()
	rtt := p.RTT + 2*p.Jitter
	pct := int(math.Round(p.Loss * 100))
	probe := 4*rtt + time.Duration(pct)*rtt
	c.ProbeTimeout = max(c.ProbeTimeout, probe)
	c.ProbeInterval = max(c.ProbeInterval, 2*probe)
	c.SuspicionMult = max(c.SuspicionMult, min(6+pct, 12))
	c.RetransmitMult = max(c.RetransmitMult, min(4+(pct+1)/2, 8))
	c.GossipInterval = max(c.GossipInterval, rtt)
	c.TCPTimeout = max(c.TCPTimeout, 10*rtt)
	c.PushPullInterval = max(c.PushPullInterval, 50*c.ProbeTimeout)
	c.GossipToTheDeadTime = max(c.GossipToTheDeadTime, 50*c.ProbeTimeout)
	return c
}

// FleetConfig is WANConfig for the slowest path of topo, or LANConfig when
// topo has one region.
func FleetConfig(topo *topology.Topology, load func(string) (*profile.Profile, error)) *memberlist.Config {
	if len(topo.Regions) <= 1 {
		return LANConfig()
	}
	return WANConfig(WorstPath(topo, load))
}
