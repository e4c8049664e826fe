package mirror

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/transport"
)

// This file is the relay: a gateway of a third region that carries legs
// whose direct link is down (routing.Table.RelayFor). It accepts a session
// from the legs' sending gateway (the origin), opens one of its own to the
// destination with a Hello naming the origin (protocol version 5), and
// forwards frames between the two unchanged (transport/PROTOCOL.md section
// 5.3). It writes nothing to its own cluster: progress, Resume and Ack are
// the destination's, end to end. The destination's side of the trust
// check is authorizeRelayed.

// relayMetrics are the relay's and the path switch's series.
type relayMetrics struct {
	switches *prometheus.CounterVec // leg, to ("direct" or "via REGION")
	relayed  *prometheus.GaugeVec   // leg: 1 while the (outbound) leg relays
	sessions *prometheus.GaugeVec   // origin: relayed sessions this gateway carries
	frames   *prometheus.CounterVec // origin, dir (down: towards the destination, up: towards the origin)
	refused  *prometheus.CounterVec // origin, reason
	probes   *prometheus.CounterVec // peer, outcome (answered, dropped, held)
}

func newRelayMetrics(reg prometheus.Registerer) *relayMetrics {
	m := &relayMetrics{
		switches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_leg_path_switches_total", Help: "Switches of an outbound leg's path: onto a relay when its direct link is down (to=\"via REGION\"), back when the link has been healthy for its hold-down (to=\"direct\").",
		}, []string{"leg", "to"}),
		relayed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meridian_leg_relayed", Help: "1 while an outbound leg travels through a relay region, 0 on its direct link.",
		}, []string{"leg"}),
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meridian_relay_sessions", Help: "Relayed sessions this gateway carries, by origin gateway.",
		}, []string{"origin"}),
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_relay_frames_total", Help: "Frames a relay forwarded, by origin gateway and direction (down: towards the destination; up: towards the origin).",
		}, []string{"origin", "dir"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_relay_failures_total", Help: "Relayed sessions that ended because the relay could not open or keep its session to the destination, by origin gateway and reason (dial, version, ended).",
		}, []string{"origin", "reason"}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_relay_probes_total", Help: "Probe sessions over a down direct link while its legs relay, by peer and outcome: answered (the link answers again), dropped (it failed during the hold-down), held (healthy for the hold-down: the legs move back).",
		}, []string{"peer", "outcome"}),
	}
	if reg != nil {
		for _, c := range []**prometheus.CounterVec{&m.switches, &m.frames, &m.refused, &m.probes} {
			register(reg, c)
		}
		for _, g := range []**prometheus.GaugeVec{&m.relayed, &m.sessions} {
			register(reg, g)
		}
	}
	return m
}

// relayPaths returns the paths this gateway relays a Hello's legs on, one
// per leg, when the Hello is a relayed session's upstream: it names no
// origin, and none of its legs is received here. ok is false for any other
// Hello (the usual checks apply). A Hello whose legs this gateway may not
// relay, or that mixes them with others, is refused with terr.
func (e *Engine) relayPaths(h *transport.Hello) (paths []*routing.Path, ok bool, terr *transport.Error) {
	if h.Origin != "" || len(h.Legs) == 0 {
		return nil, false, nil
	}
	for _, id := range h.Legs {
		if _, in := e.inLeg(id); in {
			return nil, false, nil
		}
	}
	refuse := func(reason, msg string) *transport.Error {
		e.m.relay.refused.WithLabelValues(h.Gateway, reason).Inc()
		e.log.Warn("refused relayed session", "origin", h.Gateway, "reason", reason, "err", msg)
		return &transport.Error{Code: transport.ErrCodeForbidden, Message: msg}
	}
	tbl := e.lookupTable.Load()
	origin, known := tbl.LookupGateway(h.Gateway)
	if !known || h.Region != origin.Region.Name {
		return nil, false, nil // authorize says why
	}
	for _, id := range h.Legs {
		p, ok := tbl.RelayFor(id, origin)
		if !ok {
			if len(paths) == 0 {
				return nil, false, nil // not a relay session at all: authorize refuses the legs
			}
			return nil, true, refuse("forbidden_leg", "gateway "+e.table.Gateway.Name+" relays no path for leg "+strconv.Quote(id)+" from gateway "+h.Gateway)
		}
		if len(paths) > 0 && p.Hops[1] != paths[0].Hops[1] {
			return nil, true, refuse("mixed", "a relayed session carries legs to one gateway; "+id+" goes to "+p.Hops[1].Name+", not "+paths[0].Hops[1].Name)
		}
		paths = append(paths, p)
	}
	if len(h.Receive) > 0 {
		return nil, true, refuse("relay_receive", "a relayed session carries legs one way; gateway "+h.Gateway+" asked to receive "+strconv.Itoa(len(h.Receive))+" legs")
	}
	if h.VersionMax < transport.VersionRelay {
		return nil, true, &transport.Error{Code: transport.ErrCodeVersion,
			Message: fmt.Sprintf("relaying needs protocol version %d; gateway %s offers up to %d", transport.VersionRelay, h.Gateway, h.VersionMax)}
	}
	return paths, true, nil
}

// acceptRelay answers a relayed session's Hello (relayPaths): the relay's
// own window and batch limit, which the destination's Credit replaces
// once the relay has reached it. It has no side effect: the session to the
// destination opens only when the handshake has completed (relaySession).
func (e *Engine) acceptRelay(h *transport.Hello) (w *transport.Welcome, ok bool, err error) {
	_, ok, terr := e.relayPaths(h)
	if !ok {
		return nil, false, nil
	}
	if terr != nil {
		return nil, true, terr
	}
	return &transport.Welcome{Gateway: e.table.Gateway.Name, Region: e.table.Gateway.Region.Name,
		Window: e.opts.Window, MaxBatchBytes: e.opts.MaxBatchBytes}, true, nil
}

// authorizeRelayed checks a Hello that names an origin (a relay feeding
// the origin's legs): the origin must be a gateway of the topology, and
// for every leg the topology must have a path from the origin through the
// relay (peer, the Hello's certified gateway) to this gateway
// (routing.Table.RelayedBy). A peer is never trusted for more than its own
// legs and the relays the topology lets it carry.
func (e *Engine) authorizeRelayed(h *transport.Hello, peer *topology.Gateway, refuse func(code uint16, reason, msg string) *transport.Error) *transport.Error {
	origin, ok := e.lookupTable.Load().LookupGateway(h.Origin)
	if !ok {
		return refuse(transport.ErrCodeForbidden, "unknown_origin",
			"relay "+h.Gateway+" names origin "+strconv.Quote(h.Origin)+", which is not in the topology of gateway "+e.table.Gateway.Name)
	}
	for _, id := range h.Legs {
		l, ok := e.inLeg(id)
		if !ok {
			return refuse(transport.ErrCodeUnknownLeg, "unknown_leg",
				"leg "+id+" relayed by gateway "+h.Gateway+" is not routed to gateway "+e.table.Gateway.Name)
		}
		if !l.table.RelayedBy(id, origin, peer) {
			return refuse(transport.ErrCodeForbidden, "forbidden_relay",
				"gateway "+h.Gateway+" of region "+peer.Region.Name+" may not relay leg "+id+" for gateway "+h.Origin+
					": the topology has no path from "+h.Origin+" through "+h.Gateway+" to "+e.table.Gateway.Name)
		}
	}
	return nil
}

// relayDialTimeout bounds the relay's dial to the destination.
const relayDialTimeout = 30 * time.Second

// relaySession serves a relayed session's upstream (relayPaths said so):
// once its handshake has completed it dials the destination's gateway
// with a Hello naming the origin and forwards frames both ways until
// either session ends, then ends the other. It returns when both have
// ended and its goroutines are done.
func (e *Engine) relaySession(ctx context.Context, up transport.Conn, paths []*routing.Path) {
	h, w := up.Hello(), up.Welcome()
	log := e.log.With("origin", h.Gateway, "to", paths[0].Hops[1].Name)
	if c, ok := up.(confirmer); ok {
		if t, ok := up.(transport.Tentative); ok && t.Tentative() {
			select { // a replayed 0-RTT Hello never makes the relay dial
			case <-c.Confirmed():
			case <-up.Done():
				return
			case <-ctx.Done():
				up.Close(nil)
				return
			}
		}
	}
	if w.Version < transport.VersionRelay {
		e.m.relay.refused.WithLabelValues(h.Gateway, "version").Inc()
		up.Close(&transport.Error{Code: transport.ErrCodeVersion, Message: fmt.Sprintf("relaying needs protocol version %d; the session speaks %d", transport.VersionRelay, w.Version)})
		return
	}
	gw := e.table.Gateway
	if e.opts.Dial == nil {
		up.Close(&transport.Error{Code: transport.ErrCodeInternal, Message: "relay " + gw.Name + " dials no peers"})
		return
	}
	dh := &transport.Hello{VersionMin: w.Version, VersionMax: w.Version, Gateway: gw.Name, Region: gw.Region.Name,
		Legs: h.Legs, Codecs: h.Codecs, Origin: h.Gateway, Shared: h.Shared}
	dctx, cancel := context.WithTimeout(ctx, relayDialTimeout)
	down, err := e.dial(dctx, paths[0].Hops[1], dh)
	cancel()
	if err != nil {
		e.m.relay.refused.WithLabelValues(h.Gateway, "dial").Inc()
		log.Warn("relay could not reach the destination", "err", err)
		var terr *transport.Error
		if !errors.As(err, &terr) {
			terr = &transport.Error{Code: transport.ErrCodeInternal, Message: "relay " + gw.Name + " could not reach " + paths[0].Hops[1].Name + ": " + err.Error()}
		}
		up.Close(terr)
		return
	}
	e.m.relay.sessions.WithLabelValues(h.Gateway).Inc()
	defer e.m.relay.sessions.WithLabelValues(h.Gateway).Dec()
	log.Info("relaying", "legs", h.Legs, "path", paths[0].Describe(), "version", w.Version)
	// The destination's window replaces the relay's own at once, before
	// its first Resume lets the origin send.
	if dw := down.Welcome(); dw.Window != w.Window {
		if err := up.Send(ctx, &transport.Credit{Window: dw.Window}); err != nil {
			down.Close(nil)
			up.Close(nil)
			return
		}
	}
	if dw := down.Welcome(); dw.MaxBatchBytes > 0 && dw.MaxBatchBytes < w.MaxBatchBytes {
		log.Warn("destination takes smaller batches than this relay granted; a larger batch ends the relayed session",
			"relay_max_batch_bytes", w.MaxBatchBytes, "destination_max_batch_bytes", dw.MaxBatchBytes)
	}
	type end struct {
		from transport.Conn // the session whose Recv or Send ended
		err  error
	}
	var wg sync.WaitGroup
	ends := make(chan end, 2)
	pipe := func(from, to transport.Conn, dir string, pass func(transport.Frame) bool) {
		n := e.m.relay.frames.WithLabelValues(h.Gateway, dir)
		for {
			f, err := from.Recv(ctx)
			if err != nil {
				ends <- end{from, err}
				return
			}
			switch f := f.(type) {
			case *transport.Error:
				ends <- end{from, f}
				return
			case *transport.Goaway:
				ends <- end{from, nil}
				return
			}
			if !pass(f) {
				// Named as the other side's end, so that the violator gets the Error.
				ends <- end{to, &transport.Error{Code: transport.ErrCodeProtocol, Message: fmt.Sprintf("relay %s: a %T may not travel %s", gw.Name, f, dir)}}
				return
			}
			if err := to.Send(ctx, f); err != nil {
				ends <- end{to, err}
				return
			}
			n.Inc()
		}
	}
	wg.Go(func() {
		pipe(up, down, "down", func(f transport.Frame) bool {
			switch f.(type) {
			case *transport.Topic, *transport.Batch, *transport.Groups, *transport.Claim:
				return true
			}
			return false
		})
	})
	wg.Go(func() {
		pipe(down, up, "up", func(f transport.Frame) bool {
			switch f.(type) {
			case *transport.Resume, *transport.Ack, *transport.Credit, *transport.TopicReady, *transport.Fenced:
				return true
			}
			return false
		})
	})
	// Either end ends both: an Error frame from one side, or a protocol
	// violation seen by the relay, goes on to the other.
	var first end
	select {
	case first = <-ends:
	case <-ctx.Done():
	}
	other := up
	if first.from == up {
		other = down
	}
	var terr *transport.Error
	if errors.As(first.err, &terr) {
		other.Close(terr)
	} else if first.err != nil && ctx.Err() == nil {
		e.m.relay.refused.WithLabelValues(h.Gateway, "ended").Inc()
	}
	up.Close(nil)
	down.Close(nil)
	wg.Wait()
	log.Info("relayed session ended", "err", first.err)
}

// offender is the gateway a session's protocol violations are held
// against (refused for a while by Accept): the origin of a relayed
// session, whose frames the relay forwards unchanged, else the peer. A
// relay is not refused for what it carried for another gateway.
func offender(h *transport.Hello) string {
	if h.Origin != "" {
		return h.Origin
	}
	return h.Gateway
}
