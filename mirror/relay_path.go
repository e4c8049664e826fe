package mirror

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/topology/profile"
	"github.com/meridian-gw/meridian/transport"
)

// pathSwitch is an outbound peer's choice between its direct link and its
// relay path (routing.Peer.Relay). The direct link is declared down when
// a session or dial over it ends without an answer from the peer (the
// path went silent: an idle timeout, a handshake that timed out), as the
// sending gateway sees it; the next session then goes to the relay at
// once. While relayed, a probe keeps a session without legs open over the
// direct link; once one has stayed up for the link's hold-down
// (links[].hold_down), the relayed session drains and ends and the legs
// go back. Each switch is logged and counted
// (meridian_leg_path_switches_total{leg,to}).
//
// Goroutines: the probe runs while relayed; the outPeer's run owns the
// switch and stops it (stop waits for the probe) before it returns.
type pathSwitch struct {
	p     *outPeer
	paths []*routing.Path // the peer's relay paths, the cheapest first

	mu     sync.Mutex
	relay  *routing.Path // the relay path in use (or next to be), one of paths
	via    bool          // the legs go over relay
	downAt time.Time     // when the direct link was last declared down
	since  time.Time     // when the current path was chosen (zero: never switched)
	back   func()        // ends the relayed session being served; nil when none
	// reroute is how long after downAt the destination's first Resume
	// came over the relay, from when the legs flow again (0: none yet
	// since the link was last declared down).
	reroute  time.Duration
	switches int64
	cancel   context.CancelFunc // stops the probe; nil when none runs
	wg       sync.WaitGroup
}

func newPathSwitch(p *outPeer) *pathSwitch {
	if p.peer.Relay == nil || !p.peer.Dials {
		return nil
	}
	ps := &pathSwitch{p: p, paths: p.peer.RelayPaths, relay: p.peer.Relay}
	if len(ps.paths) == 0 {
		ps.paths = []*routing.Path{p.peer.Relay}
	}
	for _, l := range p.legs {
		p.e.m.relay.relayed.WithLabelValues(l.leg.ID).Set(0)
		p.e.m.relay.switches.WithLabelValues(l.leg.ID, "direct")
		for _, rp := range ps.paths {
			p.e.m.relay.switches.WithLabelValues(l.leg.ID, rp.String())
		}
	}
	return ps
}

// relayed reports whether the next session goes over the relay path.
// silent says the last dial or session over the direct link ended without
// an answer: that declares the link down and switches to the relay.
func (s *pathSwitch) relayed(ctx context.Context, silent bool) bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.via {
		return true
	}
	if !silent {
		return false
	}
	s.downAt, s.reroute, s.relay = time.Now(), 0, s.paths[0]
	s.switchLocked(true, "direct link declared down: no answer from "+s.p.peer.Gateway.Name)
	pctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	s.wg.Go(func() { s.probe(pctx) })
	return true
}

// switchLocked moves the legs onto the relay (via) or back, counting and
// logging it.
func (s *pathSwitch) switchLocked(via bool, why string) {
	s.via, s.since = via, time.Now()
	s.switches++
	to := "direct"
	if via {
		to = s.relay.String()
	}
	m := s.p.e.m.relay
	for _, l := range s.p.legs {
		m.switches.WithLabelValues(l.leg.ID, to).Inc()
		g := 0.0
		if via {
			g = 1
		}
		m.relayed.WithLabelValues(l.leg.ID).Set(g)
	}
	path := s.p.peer.Direct().Describe()
	if via {
		path = s.relay.Describe()
	}
	s.p.log.Warn("leg path switched", "to", to, "path", path, "why", why, "legs", len(s.p.legs))
}

// serving registers end as the way to end the relayed session now being
// served (nil when it has ended). It reports false when the legs went
// back while the session was being opened: the caller closes it unserved.
func (s *pathSwitch) serving(end func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if end != nil && !s.via {
		return false
	}
	s.back = end
	return true
}

func (s *pathSwitch) holdDown() time.Duration {
	if l := s.p.peer.Link; l != nil && l.HoldDown > 0 {
		return l.HoldDown
	}
	return 30 * time.Second
}

// probe keeps a session without legs open over the direct link, redialling
// (hedged) while the link is down, until one has stayed up for the
// hold-down (hold); then it ends the relayed session, which sends the legs
// back.
func (s *pathSwitch) probe(ctx context.Context) {
	p := s.p
	gw := p.e.table.Gateway
	hello := &transport.Hello{VersionMin: transport.VersionMin, VersionMax: transport.VersionMax, Gateway: gw.Name, Region: gw.Region.Name}
	for ctx.Err() == nil {
		// Hedged like a redial over a silent path (outPeer.dial): an
		// attempt starts every hedgeEvery, so the probe answers within
		// about a round trip of the link coming back.
		conn, err := p.dial(ctx, func() *transport.Hello { return hello }, true)
		if err != nil {
			p.log.Debug("direct link probe failed", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		p.log.Info("direct link answers again; waiting for its hold-down before moving the legs back", "hold_down", s.holdDown())
		probes := p.e.m.relay.probes
		probes.WithLabelValues(p.peer.Gateway.Name, "answered").Inc()
		if err := s.hold(ctx, conn); err != nil {
			conn.Close(nil)
			if ctx.Err() != nil {
				return
			}
			probes.WithLabelValues(p.peer.Gateway.Name, "dropped").Inc()
			p.log.Info("direct link probe failed before its hold-down", "err", err)
			continue
		}
		probes.WithLabelValues(p.peer.Gateway.Name, "held").Inc()
		conn.Close(nil)
		s.mu.Lock()
		s.switchLocked(false, "direct link healthy for its hold-down ("+s.holdDown().String()+")")
		if s.cancel != nil {
			s.cancel() // ctx is this probe's: it ends here
			s.cancel = nil
		}
		if s.back != nil {
			s.back() // the relayed session drains and ends; the next goes direct
			s.back = nil
		}
		s.mu.Unlock()
		return
	}
}

// hold returns nil once the probe session conn has stayed alive for the
// hold-down: it pings the peer every second and wants a frame back (a
// Pong, a Ping) within staleAfter throughout, so that a link that dies
// during the hold-down is caught before the session's idle timeout would
// end it; and once the hold-down has passed it pings again and wants a
// frame that arrived after that, so the link is known alive at its end.
func (s *pathSwitch) hold(ctx context.Context, conn transport.Conn) error {
	const tick, every = 100 * time.Millisecond, time.Second
	deadline := time.Now().Add(s.holdDown())
	last, heard, pinged := conn.Stats().FramesRecvd, time.Now(), time.Time{}
	var atDeadline int64 = -1 // FramesRecvd when the hold-down passed
	t := time.NewTicker(tick)
	defer t.Stop()
	var nonce uint64
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-conn.Done():
			return fmt.Errorf("probe session ended: %w", conn.Err())
		case now := <-t.C:
			st := conn.Stats()
			if st.FramesRecvd != last {
				last, heard = st.FramesRecvd, now
			}
			if stale := max(3*time.Second, 4*st.RTT); now.Sub(heard) > stale {
				return fmt.Errorf("nothing heard from the peer for %v", now.Sub(heard).Round(time.Millisecond))
			}
			if atDeadline >= 0 && last > atDeadline {
				return nil // alive all along, and answered after the hold-down
			}
			ping := now.Sub(pinged) >= every
			if atDeadline < 0 && !now.Before(deadline) {
				atDeadline, ping = last, true
			}
			if ping {
				nonce++
				pinged = now
				if err := conn.Send(ctx, &transport.Ping{Nonce: nonce, SentAt: now.UnixNano()}); err != nil {
					return fmt.Errorf("probe ping: %w", err)
				}
			}
		}
	}
}

// stop ends the probe and waits for it.
func (s *pathSwitch) stop() {
	if s == nil {
		return
	}
	s.mu.Lock()
	if s.cancel != nil {
		s.cancel()
		s.cancel = nil
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// status is the current path ("direct" or "via REGION"), when it was
// chosen (zero when never switched), the switches, and how long the last
// reroute took after the link was declared down (0: none).
func (s *pathSwitch) status() (path string, since time.Time, switches int64, reroute time.Duration) {
	if s == nil {
		return "direct", time.Time{}, 0, 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	path = "direct"
	if s.via {
		path = s.relay.String()
	}
	return path, s.since, s.switches, s.reroute
}

// relayFailed moves to the next relay path (round robin, the cheapest
// first) after a dial or session over the current one failed: the
// cheapest healthy path wins, as the sender sees its paths.
func (s *pathSwitch) relayFailed(err error) {
	if s == nil || err == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.via || len(s.paths) < 2 {
		return
	}
	i := slices.Index(s.paths, s.relay)
	s.relay = s.paths[(i+1)%len(s.paths)]
	s.switchLocked(true, "relay path failed: "+err.Error())
}

// current is the relay path to dial.
func (s *pathSwitch) current() *routing.Path {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.relay
}

// resumed notes the first Resume over the relay since the direct link was
// declared down: the reroute is complete.
func (s *pathSwitch) resumed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.via || s.reroute != 0 {
		return
	}
	s.reroute = time.Since(s.downAt)
	s.p.log.Info("leg rerouted", "after_declared_down", s.reroute.Round(time.Millisecond), "path", s.relay.Describe())
}

// relayConn is a session over the relay path: it tells the switch when
// the destination's first Resume arrives.
type relayConn struct {
	transport.Conn
	s    *pathSwitch
	path *routing.Path // the relay path it was opened on
}

func (c relayConn) Recv(ctx context.Context) (transport.Frame, error) {
	f, err := c.Conn.Recv(ctx)
	if _, ok := f.(*transport.Resume); ok {
		c.s.resumed()
	}
	return f, err
}

// relayHello is the Hello of a session over the relay path: the peer's
// legs, nothing to receive (a relayed session is one way), and at least
// protocol version 5, which a relay needs to name the origin downstream.
func (p *outPeer) relayHello(legs []string) *transport.Hello {
	gw := p.e.table.Gateway
	return &transport.Hello{VersionMin: transport.VersionRelay, VersionMax: transport.VersionMax,
		Gateway: gw.Name, Region: gw.Region.Name, Legs: legs}
}

// dialRelay opens a session to the relay path's first hop.
func (p *outPeer) dialRelay(ctx context.Context, legs []string) (transport.Conn, error) {
	path := p.path.current()
	limit := dialLimit
	if len(p.path.paths) > 1 {
		// Another path waits: give this one a few round trips of its
		// first link, not the whole dial limit, so that a dead cheapest
		// relay costs seconds (a handshake takes two round trips).
		limit = max(3*time.Second, 6*p.linkRTT(path.Links[0]))
	}
	dctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	conn, err := p.dialPeer(dctx, path.Hops[0], p.relayHello(legs))
	if err != nil {
		return nil, err
	}
	return relayConn{conn, p.path, path}, nil
}

// pathStatus fills an outbound leg's path fields.
func (p *outPeer) pathStatus(ls *LegStatus) {
	path, since, switches, reroute := p.path.status()
	ls.Path, ls.PathSwitches, ls.RerouteSeconds = path, switches, reroute.Seconds()
	if !since.IsZero() {
		ls.PathSince = since.UTC().Format(time.RFC3339)
	}
}

// path is how the session's legs reach this gateway: "via REGION" when a
// relay feeds them (its Hello names an origin), else "direct".
func (s *inSession) path(tbl *routing.Table) string {
	h := s.conn.Hello()
	if h.Origin == "" {
		return "direct"
	}
	if g, ok := tbl.LookupGateway(h.Gateway); ok {
		return "via " + g.Region.Name
	}
	return "via " + h.Region
}

// rateLimit is the rate cap (bit/s, 0 none) of a session's link: the
// peer's link, or on the relay path the lowest cap set on its links.
func (p *outPeer) rateLimit(conn transport.Conn) int64 {
	if rc, ok := conn.(relayConn); ok {
		var rate int64
		for _, l := range rc.path.Links {
			if l.RateLimit > 0 && (rate == 0 || l.RateLimit < rate) {
				rate = l.RateLimit
			}
		}
		return rate
	}
	if p.peer.Link != nil {
		return p.peer.Link.RateLimit
	}
	return 0
}

// linkRTT is the round trip of link l's profile, plus jitter (0 when it is
// unknown).
func (p *outPeer) linkRTT(l *topology.Link) time.Duration {
	load := p.e.opts.Profile
	if load == nil {
		load = profile.Load
	}
	prof, err := load(l.Profile)
	if err != nil || prof == nil {
		return 0
	}
	return prof.RTT() + prof.Up.Jitter + prof.Down.Jitter
}
