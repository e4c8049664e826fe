// Package topology is the model of a Meridian deployment: regions, clusters,
// gateways, links and routes with their references resolved, built from a
// validated config.File. Live membership (hashicorp/memberlist) is package
// topology/membership; the model itself knows no wire formats and dials
// nothing.
package topology

import (
	"encoding/base64"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/topology/profile"
)

// DefaultHoldDown is a link's hold-down when links[].hold_down is not set.
const DefaultHoldDown = 30 * time.Second

// Topology is a resolved deployment. It is immutable once built.
type Topology struct {
	Regions  map[string]*Region
	Clusters map[string]*Cluster // by ref "region/cluster"
	Gateways map[string]*Gateway // by gateway name
	Links    []*Link
	Routes   []*Route
	// LinkTLS is the fleet's link certificate policy (the file's tls
	// block); nil when the file has none.
	LinkTLS *config.LinkTLS
	// GossipKeys are the AES keys of gossip on plain ports (the file's
	// gossip.keys, decoded), the first the primary.
	GossipKeys [][]byte
}

// Region is one site.
type Region struct {
	Name     string
	Clusters []*Cluster
	Gateways []*Gateway
}

// Cluster is a Kafka cluster (Kind "kafka") or an AMQP 1.0 broker (Kind
// "amqp", AMQP set) in a region.
type Cluster struct {
	Region    *Region
	Name      string
	Kind      string
	Bootstrap []string
	TLS       *config.TLS
	SASL      *config.SASL
	// AMQP is the broker of an amqp cluster, nil for kafka.
	AMQP *config.AMQPCluster
	// Path is where the file defines the cluster, for config.File.ErrorAt:
	// "regions[0].clusters[1]"; "" for clusters built in code.
	Path string
}

// Ref is the cluster's "region/cluster" name.
func (c *Cluster) Ref() string { return c.Region.Name + "/" + c.Name }

// Gateway is a meridian process.
type Gateway struct {
	Region    *Region
	Name      string
	Listen    string
	Advertise string        // address peers dial (Listen when not set)
	Admin     string        // admin listen address; "" = no admin server
	AdminAuth *config.Admin // admin API access settings; nil when Admin is ""
	TLS       *config.TLS
	// Gossip is the gateway's part in gossip (nil: not a member).
	Gossip *config.GatewayGossip
	// StateDir is the gateway's local state directory ("" = none).
	StateDir string
	// Path is where the file defines the gateway, for
	// config.File.ErrorAt: "regions[0].gateways[1]".
	Path string
}

// Link joins two regions. An end written "region/gateway" in the file pins
// the link to that gateway in its region (package routing says what that
// means for legs).
type Link struct {
	Name string
	A, B *Region
	// PinA and PinB are the gateways the ends are pinned to, in A and B;
	// nil means any gateway of the region.
	PinA, PinB *Gateway
	Transport  string
	// AMQP is the broker of a link whose Transport is "amqp" (nil
	// otherwise).
	AMQP        *config.AMQP
	Profile     string
	Compression string
	RateLimit   int64 // bits/s; 0 = unlimited
	Window      int64 // credit window in bytes; 0 = the receiving gateway's
	Passthrough bool  // forward Kafka record batches byte for byte
	// Cost weighs the link in relay paths (links[].cost, else the
	// profile's profile.DefaultCost); always at least 1.
	Cost int
	// HoldDown is how long the link must have been healthy before legs
	// relaying around it move back (links[].hold_down, else 30s).
	HoldDown time.Duration
	// Dial is the region whose gateways open the link's sessions (the
	// file's links[].dial, else the default rule: config.File.DialSide); one
	// session carries the legs of both directions. Nil means each
	// sending gateway dials its peer, as before version 4: amqp links
	// (both sides connect to the broker) and the local links routing
	// makes inside a region.
	Dial *Region
	// Path is where the file defines the link ("links[2]"); "" for the
	// local links routing makes inside a region.
	Path string
}

// Dials reports whether gateways of region r open the link's sessions
// towards gateways of the other end: r is the dialling side, or the link
// has none (Dial nil) and a sender dials.
func (l *Link) Dials(r *Region) bool { return l.Dial == nil || l.Dial == r }

// Other is the link's end that is not r.
func (l *Link) Other(r *Region) *Region {
	if r == l.A {
		return l.B
	}
	return l.A
}

// Pin returns the gateway the link is pinned to in region r, or nil when
// any gateway of r carries it (or r is neither end).
func (l *Link) Pin(r *Region) *Gateway {
	switch r {
	case l.A:
		return l.PinA
	case l.B:
		return l.PinB
	}
	return nil
}

// DataRate is the rate in bit/s of the link's data direction (from the
// dialing side, the profile's up direction): the lower of its rate limit
// and p's up rate, counting only those that are set; 0 when neither is
// (unknown). p is the link's profile as resolved by the caller (the lab
// may substitute its own); nil when it is unknown. Gateway tuning, codec
// choice and batch sizing all use this one rule.
func (l *Link) DataRate(p *profile.Profile) int64 {
	var rate int64
	if l != nil {
		rate = l.RateLimit
	}
	if p != nil && p.Up.Rate > 0 && (rate <= 0 || p.Up.Rate < rate) {
		rate = p.Up.Rate
	}
	return max(rate, 0)
}

// DataRateFrom is DataRate for data sent by the dialling side (dialler
// true), and for data the listening side sends back over a duplex session
// the same rule with the profile's down direction.
func (l *Link) DataRateFrom(p *profile.Profile, dialler bool) int64 {
	if dialler {
		return l.DataRate(p)
	}
	var rate int64
	if l != nil {
		rate = l.RateLimit
	}
	if p != nil && p.Down.Rate > 0 && (rate <= 0 || p.Down.Rate < rate) {
		rate = p.Down.Rate
	}
	return max(rate, 0)
}

// Joins reports whether the link joins regions a and b (either way round).
func (l *Link) Joins(a, b string) bool {
	return (l.A.Name == a && l.B.Name == b) || (l.A.Name == b && l.B.Name == a)
}

// Route mirrors topics from one cluster to others.
type Route struct {
	Name     string
	From     *Cluster
	To       []*Cluster
	Include  []string
	Exclude  []string
	Rename   string
	StartAt  string
	Priority int
	Discover time.Duration
	// ShareTimeout is the session timeout of the group through which
	// the source region's gateways share the route (routes[].share_timeout).
	ShareTimeout time.Duration
	// MaxPartitions caps a destination topic's partition count as a sender
	// may ask it (routes[].max_partitions); 0 means config.DefaultMaxPartitions.
	MaxPartitions int32
	// GroupInclude and GroupExclude select the source consumer groups whose
	// offsets are synced to the destinations (no includes: none).
	GroupInclude, GroupExclude []string
	// Filter is the route's CEL filter over source records (routes[].filter;
	// "" = none). Package routing compiles it.
	Filter string
}

// New resolves a validated file. It returns an error only for references that
// validation should already have caught.
func New(f *config.File) (*Topology, error) {
	t := &Topology{
		Regions:  map[string]*Region{},
		Clusters: map[string]*Cluster{},
		Gateways: map[string]*Gateway{},
		LinkTLS:  f.TLS,
	}
	if f.Gossip != nil {
		for i, k := range f.Gossip.Keys {
			b, err := base64.StdEncoding.DecodeString(k.Reveal())
			if err != nil {
				return nil, fmt.Errorf("gossip.keys[%d]: not base64", i)
			}
			t.GossipKeys = append(t.GossipKeys, b)
		}
	}
	for i, r := range f.Regions {
		reg := &Region{Name: r.Name}
		t.Regions[r.Name] = reg
		for k, c := range r.Clusters {
			cl := &Cluster{Region: reg, Name: c.Name, Kind: c.Kind, Bootstrap: c.Bootstrap, TLS: c.TLS, SASL: c.SASL, AMQP: c.AMQP,
				Path: fmt.Sprintf("regions[%d].clusters[%d]", i, k)}
			reg.Clusters = append(reg.Clusters, cl)
			t.Clusters[cl.Ref()] = cl
		}
		for j, g := range r.Gateways {
			gw := &Gateway{Region: reg, Name: g.Name, Listen: g.Listen, Advertise: g.Advertise, TLS: g.TLS, Gossip: g.Gossip, StateDir: g.StateDir,
				Path: fmt.Sprintf("regions[%d].gateways[%d]", i, j)}
			if g.Admin != nil {
				gw.Admin, gw.AdminAuth = g.Admin.Listen, g.Admin
			}
			if gw.Advertise == "" {
				gw.Advertise = gw.Listen
			}
			reg.Gateways = append(reg.Gateways, gw)
			t.Gateways[gw.Name] = gw
		}
	}
	// end resolves a link end: a region, or a region/gateway pin.
	end := func(ref string) (*Region, *Gateway, error) {
		name, gw, pinned := strings.Cut(ref, "/")
		r, ok := t.Regions[name]
		if !ok {
			return nil, nil, fmt.Errorf("unknown region %q", name)
		}
		if !pinned {
			return r, nil, nil
		}
		g, ok := t.Gateways[gw]
		if !ok || g.Region != r {
			return nil, nil, fmt.Errorf("region %q has no gateway %q", name, gw)
		}
		return r, g, nil
	}
	for i, l := range f.Links {
		if len(l.Between) != 2 {
			return nil, fmt.Errorf("link %q: want two ends, got %d", l.Name, len(l.Between))
		}
		a, pa, err := end(l.Between[0])
		if err != nil {
			return nil, fmt.Errorf("link %q: %w", l.Name, err)
		}
		b, pb, err := end(l.Between[1])
		if err != nil {
			return nil, fmt.Errorf("link %q: %w", l.Name, err)
		}
		t.Links = append(t.Links, &Link{Name: l.Name, A: a, B: b, PinA: pa, PinB: pb, Transport: l.Transport, AMQP: l.AMQP, Profile: l.Profile,
			Compression: l.Compression, RateLimit: int64(l.RateLimit), Window: int64(l.Window), Passthrough: l.Passthrough,
			Cost: l.Cost, HoldDown: l.HoldDown, Path: fmt.Sprintf("links[%d]", i)})
		if ln := t.Links[len(t.Links)-1]; ln.Cost <= 0 {
			ln.Cost = profile.DefaultCost(ln.Profile)
		}
		if ln := t.Links[len(t.Links)-1]; ln.HoldDown <= 0 {
			ln.HoldDown = DefaultHoldDown
		}
	}
	for _, r := range f.Routes {
		from, ok := t.Clusters[r.From]
		if !ok {
			return nil, fmt.Errorf("route %q: unknown cluster %q", r.Name, r.From)
		}
		rt := &Route{Name: r.Name, From: from, Include: r.Topics.Include, Exclude: r.Topics.Exclude,
			Rename: r.Rename, StartAt: r.StartAt, Priority: r.Priority, Discover: r.Discover, ShareTimeout: r.ShareTimeout,
			MaxPartitions: r.MaxPartitions, Filter: r.Filter}
		if r.Groups != nil {
			rt.GroupInclude, rt.GroupExclude = r.Groups.Include, r.Groups.Exclude
		}
		for _, to := range r.To {
			c, ok := t.Clusters[to]
			if !ok {
				return nil, fmt.Errorf("route %q: unknown cluster %q", r.Name, to)
			}
			rt.To = append(rt.To, c)
		}
		t.Routes = append(t.Routes, rt)
	}
	sort.SliceStable(t.Routes, func(i, j int) bool { return t.Routes[i].Priority > t.Routes[j].Priority })
	for i, l := range t.Links {
		switch name := f.DialSide(i); name {
		case "": // amqp: both sides connect to the broker, nobody dials the other
		case l.A.Name:
			l.Dial = l.A
		case l.B.Name:
			l.Dial = l.B
		default:
			return nil, fmt.Errorf("link %q: dial: %q is neither of its regions", l.Name, name)
		}
	}
	return t, nil
}

// LinkBetween returns the first link (in file order) joining regions a
// and b, or nil.
func (t *Topology) LinkBetween(a, b string) *Link {
	if ls := t.LinksBetween(a, b); len(ls) > 0 {
		return ls[0]
	}
	return nil
}

// LinksBetween returns every link joining regions a and b, in file order.
func (t *Topology) LinksBetween(a, b string) []*Link {
	var out []*Link
	for _, l := range t.Links {
		if l.Joins(a, b) {
			out = append(out, l)
		}
	}
	return out
}
