package gateway

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/topology/membership"
	"github.com/meridian-gw/meridian/topology/profile"
	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/quic"
)

// healthEvery is how often the gateway looks at its legs' health; it
// gossips a report when the health changed (healthChanged) or
// healthRefresh has passed since the last one. Every report costs its
// size times memberlist's retransmissions on every member, so on a thin
// link a report every 2 s would cost more than the target of 1 kbit/s per
// member.
const (
	healthEvery   = 2 * time.Second
	healthRefresh = 30 * time.Second
)

// leaveTimeout bounds the first phase of a leave: the leave is gossiped
// before the gateway drains.
const leaveTimeout = 5 * time.Second

// gossip is the gateway's membership: the fleet-wide pool over QUIC and,
// when the gateway sets gossip.region, its region's pool on a plain port
// encrypted with the topology's keys.
type gossip struct {
	fleet  *membership.Member
	tr     *quic.Gossip
	region *membership.Member // nil without gossip.region

	serverTLS, clientTLS *tls.Config
	started              atomic.Bool // set once the members exist
	stopOnce             sync.Once
}

// thinLink is the data rate below which a region's links are thin: its
// gateways gossip as leaves (membership.Options.Leaf).
const thinLink = 50_000_000

// thinRegion reports whether every link of region r is thin (below
// thinLink, from its profile and rate limit): a site on satellite or
// mobile links, whose gateways should not pass on others' gossip.
func thinRegion(topo *topology.Topology, r *topology.Region, load func(string) (*profile.Profile, error)) bool {
	n := 0
	for _, l := range topo.Links {
		if l.A != r && l.B != r {
			continue
		}
		n++
		if rate := l.DataRate(linkProfile(l, load)); rate == 0 || rate >= thinLink {
			return false
		}
	}
	return n > 0
}

// gossipAlive reports what the fleet's gossip knows of gateway name
// (mirror.Options.Alive): alive or suspect, or dead or left; known is
// false without gossip or before the gateway has heard of it.
func (g *Gateway) gossipAlive(name string) (alive, known bool) {
	gs := g.gossip
	if gs == nil || !gs.started.Load() || gs.fleet == nil {
		return false, false
	}
	for _, in := range gs.fleet.Members() {
		if in.Name == name {
			return in.State == membership.StateAlive || in.State == membership.StateSuspect, true
		}
	}
	return false, false
}

// Members lists the fleet pool's members as this gateway sees them (nil
// without gossip, or before it started).
func (g *Gateway) Members() []membership.Info {
	gs := g.gossip
	if gs == nil || !gs.started.Load() || gs.fleet == nil {
		return nil
	}
	return gs.fleet.Members()
}

// gossipAddr is the QUIC gossip listen address: Options.GossipAddr or the
// topology's.
func (g *Gateway) gossipAddr() string {
	if g.opts.GossipAddr != "" {
		return g.opts.GossipAddr
	}
	return g.table.Gateway.Gossip.Listen
}

// gossipAdvertise is the address gw's peers dial for its QUIC gossip.
func gossipAdvertise(gw *topology.Gateway) string {
	if gw.Gossip == nil {
		return ""
	}
	if gw.Gossip.Advertise != "" {
		return gw.Gossip.Advertise
	}
	return gw.Gossip.Listen
}

// startGossip binds the gossip sockets and starts the members (Bind calls
// it); seeds are joined by Run.
func (g *Gateway) startGossip() error {
	gw := g.table.Gateway
	if gw.Gossip == nil || g.gossip == nil || g.gossip.started.Load() {
		return nil
	}
	topo := g.opts.Topology
	dialOut := func(name string) bool {
		p := topo.Gateways[name]
		return p != nil && p.Gossip != nil && p.Gossip.DialOut
	}
	tr, err := quic.ListenGossip(g.gossipAddr(), quic.GossipOptions{
		ServerTLS: g.gossip.serverTLS, ClientTLS: g.gossip.clientTLS,
		Member:   func(name string) bool { p := topo.Gateways[name]; return p != nil && p.Gossip != nil },
		Dialable: func(name string) bool { return !dialOut(name) },
		Logger:   g.log,
	})
	if err != nil {
		return &SettingError{gw.Path + ".gossip.listen", fmt.Errorf("gateway %s: %w", gw.Name, err)}
	}
	meta := *g.memberMeta()
	meta.Incarnation = uint64(time.Now().UnixMilli())
	if gw.Gossip.DialOut {
		meta.Caps |= membership.CapDialOut
	}
	cfg := membership.FleetConfig(topo, g.opts.Profile)
	cfg.UDPBufferSize = 1100 // most packets fit a QUIC datagram
	host, port, err := advertiseOf(gossipAdvertise(gw), tr.Addr(), gw.Gossip.DialOut)
	if err != nil {
		tr.Shutdown()
		return &SettingError{gw.Path + ".gossip", err}
	}
	cfg.AdvertiseAddr, cfg.AdvertisePort = host, port
	if g.opts.GossipConfig != nil {
		g.opts.GossipConfig(cfg)
	}
	fleet, err := membership.New(membership.Options{
		Name: gw.Name, Meta: meta, Config: cfg, Transport: tr,
		Seeds: membership.Seeds(topo, gw.Name, nil, func(p *topology.Gateway) string { return g.peerGossipAddr(p) }),
		Reach: func(name string) bool {
			for _, p := range tr.Peers() {
				if p == name {
					return true
				}
			}
			return false
		},
		Allow:  func(name string) bool { p := topo.Gateways[name]; return p != nil && p.Gossip != nil },
		Leaf:   thinRegion(topo, gw.Region, g.opts.Profile),
		Logger: g.log.With("pool", "fleet"),
	})
	if err != nil {
		tr.Shutdown()
		return fmt.Errorf("gateway %s: gossip: %w", gw.Name, err)
	}
	g.gossip.fleet, g.gossip.tr = fleet, tr
	if gw.Gossip.Region != "" {
		addr := gw.Gossip.Region
		if g.opts.RegionGossipAddr != "" {
			addr = g.opts.RegionGossipAddr
		}
		rcfg := membership.LANConfig()
		ua, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			g.stopGossip()
			return &SettingError{gw.Path + ".gossip.region", err}
		}
		rcfg.BindAddr, rcfg.BindPort = ua.IP.String(), ua.Port
		if g.opts.GossipConfig != nil {
			g.opts.GossipConfig(rcfg)
		}
		region, err := membership.New(membership.Options{
			Name: gw.Name, Meta: meta, Config: rcfg, Keys: topo.GossipKeys,
			Seeds: membership.Seeds(topo, gw.Name,
				func(p *topology.Gateway) bool { return p.Region == gw.Region && p.Gossip != nil },
				func(p *topology.Gateway) string {
					if g.opts.PeerRegionGossipAddr != nil {
						return g.opts.PeerRegionGossipAddr(p.Name)
					}
					return p.Gossip.Region
				}),
			Allow: func(name string) bool {
				p := topo.Gateways[name]
				return p != nil && p.Region == gw.Region && p.Gossip != nil && p.Gossip.Region != ""
			},
			Logger: g.log.With("pool", "region"),
		})
		if err != nil {
			g.stopGossip()
			return &SettingError{gw.Path + ".gossip.region", fmt.Errorf("gateway %s: region gossip: %w", gw.Name, err)}
		}
		g.gossip.region = region
	}
	g.gossip.started.Store(true)
	return nil
}

// peerGossipAddr is the address a peer's QUIC gossip is dialled at.
func (g *Gateway) peerGossipAddr(p *topology.Gateway) string {
	a := gossipAdvertise(p)
	if g.opts.PeerGossipAddr != nil && a != "" {
		return g.opts.PeerGossipAddr(p.Name, a)
	}
	return a
}

// advertiseOf is the IP and port the member advertises (memberlist gossips
// IP addresses): adv's host, resolved if it is a name, or the bound
// address when adv's host is unspecified; a port of 0 takes the bound one.
// A gateway that only dials out is never dialled, so an address that does
// not resolve is advertised as the bound one (even unspecified).
func advertiseOf(adv string, bound *net.UDPAddr, dialOut bool) (string, int, error) {
	host, ps, err := net.SplitHostPort(adv)
	if err != nil {
		return "", 0, fmt.Errorf("gossip address %q: %w", adv, err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil {
		return "", 0, fmt.Errorf("gossip address %q: %w", adv, err)
	}
	if port == 0 {
		port = bound.Port
	}
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		return ip.String(), port, nil
	}
	if host != "" && net.ParseIP(host) == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ips, err := net.DefaultResolver.LookupIP(ctx, "ip", host)
		if err == nil && len(ips) > 0 {
			ip := ips[0]
			for _, x := range ips { // IPv4 first, as peers most likely reach it
				if x.To4() != nil {
					ip = x
					break
				}
			}
			return ip.String(), port, nil
		}
		if !dialOut {
			return "", 0, fmt.Errorf("gossip address %q: %w", adv, err)
		}
	}
	if bound.IP.IsUnspecified() && !dialOut {
		return "", 0, fmt.Errorf("gossip address %q: set gossip.advertise to an address peers can reach", adv)
	}
	return bound.IP.String(), port, nil
}

// members lists every member of every pool, for /v1/members.
func (g *Gateway) members() []*membership.Member {
	if g.gossip == nil || !g.gossip.started.Load() {
		return nil
	}
	ms := []*membership.Member{g.gossip.fleet}
	if g.gossip.region != nil {
		ms = append(ms, g.gossip.region)
	}
	return ms
}

// runGossip joins the seeds and gossips the legs' health every
// healthEvery until ctx ends. Run owns it.
func (g *Gateway) runGossip(ctx context.Context) {
	ms := g.members()
	if len(ms) == 0 {
		return
	}
	for _, m := range ms {
		m.Start()
	}
	var last map[string]int64
	lastAt := time.Now()
	var published []membership.LegHealth
	var publishedAt time.Time
	t := time.NewTicker(healthEvery)
	defer t.Stop()
	for {
		legs, raw := g.legHealth(last, time.Since(lastAt))
		last, lastAt = raw, time.Now()
		if publishedAt.IsZero() || time.Since(publishedAt) >= healthRefresh || healthChanged(published, legs) {
			published, publishedAt = legs, time.Now()
			for _, m := range ms {
				if err := m.PublishHealth(legs); err != nil {
					g.log.Warn("health not gossiped", "err", err)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// healthChanged reports whether cur differs from what was last gossiped
// (prev) enough to gossip again: a leg added, removed, up or down or on
// another peer, or its round trip, goodput or backlog off by more than
// half (and more than a floor, so that noise near zero stays quiet).
// Goodput measured over healthEvery swings by a quarter on a steady
// stream; a report for each swing would be most of gossip's traffic.
func healthChanged(prev, cur []membership.LegHealth) bool {
	if len(prev) != len(cur) {
		return true
	}
	moved := func(a, b, floor int64) bool {
		d := a - b
		if d < 0 {
			d = -d
		}
		return d > floor && 2*d >= max(a, b)
	}
	for i := range cur {
		p, c := &prev[i], &cur[i]
		switch {
		case p.Leg != c.Leg, p.Peer != c.Peer, p.Up != c.Up,
			moved(int64(p.RTT), int64(c.RTT), int64(50*time.Millisecond)),
			moved(p.Goodput, c.Goodput, 128_000),
			moved(p.Backlog, c.Backlog, 1000):
			return true
		}
	}
	return false
}

// legHealth is the health of every leg from the engine's status; goodput
// is the raw bytes acknowledged since last (by leg), over elapsed.
func (g *Gateway) legHealth(last map[string]int64, elapsed time.Duration) ([]membership.LegHealth, map[string]int64) {
	st := g.now().eng.Status()
	rtt := map[string]time.Duration{}
	for _, p := range st.Peers {
		rtt[p.Gateway] = time.Duration(p.RTTMillis * float64(time.Millisecond))
	}
	raw := map[string]int64{}
	var out []membership.LegHealth
	for _, l := range st.Legs {
		raw[l.Leg] = l.RawBytes
		lh := membership.LegHealth{Leg: l.Leg, Peer: l.Peer, Up: l.Connected, RTT: rtt[l.Peer], Backlog: max(l.LagRecords, 0)}
		if prev, ok := last[l.Leg]; ok && elapsed > 0 && l.RawBytes >= prev {
			lh.Goodput = int64(float64(l.RawBytes-prev) * 8 / elapsed.Seconds())
		}
		if len(out) < 64 {
			out = append(out, lh)
		}
	}
	return out, raw
}

// leaveGossip is the first phase of a two-phase leave: peers are told the
// gateway leaves before it drains, so they see "left", not "dead".
func (g *Gateway) leaveGossip() {
	var wg sync.WaitGroup
	for _, m := range g.members() {
		wg.Go(func() {
			if err := m.Leave(leaveTimeout); err != nil {
				g.log.Warn("gossip leave", "err", err)
			}
		})
	}
	wg.Wait()
}

// stopGossip shuts the members and transports down; idempotent.
func (g *Gateway) stopGossip() {
	if g.gossip == nil {
		return
	}
	g.gossip.stopOnce.Do(func() {
		if g.gossip.region != nil {
			_ = g.gossip.region.Shutdown()
		}
		if g.gossip.fleet != nil {
			_ = g.gossip.fleet.Shutdown() // closes tr too
		} else if g.gossip.tr != nil {
			_ = g.gossip.tr.Shutdown()
		}
	})
}

// MemberJSON is one member in GET /v1/members.
type MemberJSON struct {
	Name        string    `json:"name"`
	Region      string    `json:"region"`
	Pool        string    `json:"pool"` // fleet (QUIC) or region (plain port)
	State       string    `json:"state"`
	Since       time.Time `json:"since,omitzero"`
	ProtoMin    uint16    `json:"protocol_min"`
	ProtoMax    uint16    `json:"protocol_max"`
	Caps        string    `json:"capabilities"`
	Incarnation uint64    `json:"incarnation"`
	Addr        string    `json:"address"`
	Reach       string    `json:"reach,omitempty"` // self, direct, gossip
	RTTMillis   float64   `json:"rtt_ms,omitempty"`
	BadMeta     string    `json:"bad_metadata,omitempty"`
	// Compatible: its protocol range overlaps this gateway's, so links
	// between them can agree a version. An incompatible member gets no
	// legs.
	Compatible bool `json:"compatible"`
}

// MembersJSON is the body of GET /v1/members.
type MembersJSON struct {
	Gateway string                       `json:"gateway"`
	Members []MemberJSON                 `json:"members"`
	Health  map[string]membership.Report `json:"health,omitempty"`
}

func (g *Gateway) membersJSON() any {
	out := MembersJSON{Gateway: g.table.Gateway.Name, Members: []MemberJSON{}}
	for i, m := range g.members() {
		pool := "fleet"
		if i > 0 {
			pool = "region"
		}
		for _, in := range m.Members() {
			out.Members = append(out.Members, MemberJSON{
				Name: in.Name, Region: in.Meta.Region, Pool: pool, State: in.State.String(), Since: in.Since,
				ProtoMin: in.Meta.ProtoMin, ProtoMax: in.Meta.ProtoMax, Caps: in.Meta.Caps.String(),
				Incarnation: in.Meta.Incarnation, Addr: in.Addr, Reach: in.Reach,
				RTTMillis: float64(in.RTT) / float64(time.Millisecond), BadMeta: in.BadMeta,
				Compatible: in.BadMeta == "" && in.Meta.ProtoMin <= transport.VersionMax && in.Meta.ProtoMax >= transport.VersionMin,
			})
		}
		if i == 0 {
			out.Health = m.Health()
		}
	}
	return out
}

// keysRequest is the JSON body of POST /v1/gossip/keys.
type keysRequest struct {
	Op          string `json:"op"`          // list, install, use, remove
	Key         string `json:"key"`         // install: base64 AES key
	Fingerprint string `json:"fingerprint"` // use, remove
}

// serveGossipKeys changes the region pool's keyring at run time.
func (g *Gateway) serveGossipKeys(w http.ResponseWriter, r *http.Request) {
	var req keysRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeJSONError(w, http.StatusBadRequest, "bad request: "+err.Error())
		return
	}
	var m *membership.Member
	if ms := g.members(); len(ms) > 1 {
		m = ms[1]
	}
	if m == nil {
		writeJSONError(w, http.StatusConflict, "this gateway has no gossip on a plain port (gossip.region), so no keyring: QUIC gossip uses the link certificates")
		return
	}
	var err error
	switch req.Op {
	case "list":
	case "install":
		var key []byte
		if key, err = base64.StdEncoding.DecodeString(req.Key); err != nil {
			err = errors.New("key is not valid base64")
		} else {
			err = m.InstallKey(key)
		}
	case "use":
		err = m.UseKey(req.Fingerprint)
	case "remove":
		err = m.RemoveKey(req.Fingerprint)
	default:
		err = fmt.Errorf("unknown op %q; use list, install, use or remove", req.Op)
	}
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error())
		return
	}
	keys, err := m.Keys()
	if err != nil {
		writeJSONError(w, http.StatusConflict, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"gateway": g.table.Gateway.Name, "keys": keys})
}

func writeJSONError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": msg})
}

// gossipCollector exports the gossip metrics at scrape time.
type gossipCollector struct{ g *Gateway }

var (
	descMembers    = prometheus.NewDesc("meridian_gossip_members", "Members by pool and state, as this gateway sees them.", []string{"pool", "state"}, nil)
	descBytesSent  = prometheus.NewDesc("meridian_gossip_bytes_sent_total", "QUIC gossip bytes sent, by peer gateway.", []string{"peer"}, nil)
	descBytesRecv  = prometheus.NewDesc("meridian_gossip_bytes_received_total", "QUIC gossip bytes received, by peer gateway.", []string{"peer"}, nil)
	descProbeRTT   = prometheus.NewDesc("meridian_gossip_probe_rtt_seconds", "Round trip of the last probe answered, by pool and member.", []string{"pool", "peer"}, nil)
	descSuspicions = prometheus.NewDesc("meridian_gossip_suspicions_total", "Suspicions this gateway raised about members, and refuted about itself.", []string{"pool", "kind"}, nil)
	descDropped    = prometheus.NewDesc("meridian_gossip_dropped_total", "Gossip dropped: undecryptable or bad checksum, bad health reports, nodes that are not gateways of the topology (not_a_member), peers refused by the QUIC transport (refused).", []string{"pool", "reason"}, nil)
)

func (c gossipCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMembers, descBytesSent, descBytesRecv, descProbeRTT, descSuspicions, descDropped} {
		ch <- d
	}
}

func (c gossipCollector) Collect(ch chan<- prometheus.Metric) {
	for i, m := range c.g.members() {
		pool := "fleet"
		if i > 0 {
			pool = "region"
		}
		counts := map[membership.State]int{}
		for _, in := range m.Members() {
			counts[in.State]++
			if in.RTT > 0 {
				ch <- prometheus.MustNewConstMetric(descProbeRTT, prometheus.GaugeValue, in.RTT.Seconds(), pool, in.Name)
			}
		}
		for _, s := range []membership.State{membership.StateAlive, membership.StateSuspect, membership.StateDead, membership.StateLeft} {
			ch <- prometheus.MustNewConstMetric(descMembers, prometheus.GaugeValue, float64(counts[s]), pool, s.String())
		}
		k := m.Counters()
		ch <- prometheus.MustNewConstMetric(descSuspicions, prometheus.CounterValue, float64(k.SuspicionsRaised), pool, "raised")
		ch <- prometheus.MustNewConstMetric(descSuspicions, prometheus.CounterValue, float64(k.SuspicionsRefuted), pool, "refuted")
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(k.Dropped), pool, "undecryptable")
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(k.BadHealth), pool, "bad_health")
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(k.Refused), pool, "not_a_member")
	}
	if g := c.g.gossip; g != nil && g.started.Load() && g.tr != nil {
		st := g.tr.Stats()
		for p, n := range st.BytesSent {
			ch <- prometheus.MustNewConstMetric(descBytesSent, prometheus.CounterValue, float64(n), p)
		}
		for p, n := range st.BytesReceived {
			ch <- prometheus.MustNewConstMetric(descBytesRecv, prometheus.CounterValue, float64(n), p)
		}
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(st.Refused), "fleet", "refused")
	}
}
