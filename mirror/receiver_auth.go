package mirror

import (
	"strconv"

	"github.com/meridian-gw/meridian/transport"
)

// authorize checks a session's Hello: the peer (Hello.Gateway, which the
// transport has checked against the certificate's name) must be a gateway
// of the topology, and every leg it claims must be routed to this gateway
// and have its source in the peer's region (routing.Leg.SentBy). A refusal
// is counted in meridian_link_sessions_refused_total{peer,reason} and
// logged; it is an error the transport sends back to the peer.
func (e *Engine) authorize(h *transport.Hello) *transport.Error {
	refuse := func(code uint16, reason, msg string) *transport.Error {
		e.m.refused.WithLabelValues(h.Gateway, reason).Inc()
		e.log.Warn("refused link session", "peer", h.Gateway, "reason", reason, "err", msg)
		return &transport.Error{Code: code, Message: msg}
	}
	peer, ok := e.lookupTable.Load().LookupGateway(h.Gateway)
	if !ok {
		return refuse(transport.ErrCodeForbidden, "unknown_gateway",
			"gateway "+strconv.Quote(h.Gateway)+" is not in the topology of gateway "+e.table.Gateway.Name)
	}
	if h.Region != peer.Region.Name {
		return refuse(transport.ErrCodeForbidden, "wrong_region",
			"gateway "+h.Gateway+" is of region "+peer.Region.Name+", not "+strconv.Quote(h.Region))
	}
	if h.Origin != "" {
		return e.authorizeRelayed(h, peer, refuse) // relay.go
	}
	for _, id := range h.Legs {
		l, ok := e.inLeg(id)
		if !ok {
			return refuse(transport.ErrCodeUnknownLeg, "unknown_leg",
				"leg "+id+" from gateway "+h.Gateway+" is not routed to gateway "+e.table.Gateway.Name)
		}
		lp, _ := l.table.LookupGateway(h.Gateway) // nil (refused) if the leg's table has no such gateway
		if !l.leg.SentBy(lp) {
			return refuse(transport.ErrCodeForbidden, "forbidden_leg",
				"gateway "+h.Gateway+" of region "+peer.Region.Name+" may not feed leg "+id+
					" (its source is in region "+l.leg.From.Region.Name+")")
		}
	}
	return nil
}
