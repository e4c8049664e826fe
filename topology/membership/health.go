package membership

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"
)

// LegHealth is the health of one leg of a link, as the gateway that
// carries it measures it.
type LegHealth struct {
	Leg     string        // leg name (routing.Leg's), or the link name
	Peer    string        // gateway at the other end
	Up      bool          // its session is up
	RTT     time.Duration // smoothed round trip; gossiped in microseconds
	Loss    float64       // in [0, 1]; gossiped in units of 1/10,000
	Goodput int64         // bit/s delivered and acknowledged
	Backlog int64         // bytes waiting to be sent
}

// Health is one gateway's report on all its legs. Seq rises with every
// report of a gateway's process; with Incarnation it orders reports.
type Health struct {
	Gateway     string
	Incarnation uint64 // the gateway process's Meta.Incarnation
	Seq         uint64
	Legs        []LegHealth
}

// HealthMax is the largest encoded report: it must ride in one gossip
// packet beside memberlist's own messages.
const HealthMax = 1024

// healthMaxLegs bounds a decoded report's legs.
const healthMaxLegs = 64

const (
	msgHealth    byte = 'H' // user message kind
	healthFormat byte = 1
	legUp        byte = 1 << 0
)

// ErrHealth is wrapped by every DecodeHealth error.
var ErrHealth = errors.New("malformed health report")

// Append appends h's encoding:
//
//	kind 'H', format 1
//	gateway: uvarint length, bytes; incarnation, seq, leg count: uvarints
//	per leg: leg, peer (uvarint length, bytes), flags byte (bit 0: up),
//	rtt µs, loss in 1/10,000, goodput bit/s, backlog bytes: uvarints
func (h *Health) Append(dst []byte) []byte {
	dst = append(dst, msgHealth, healthFormat)
	dst = appendString(dst, h.Gateway)
	dst = binary.AppendUvarint(dst, h.Incarnation)
	dst = binary.AppendUvarint(dst, h.Seq)
	dst = binary.AppendUvarint(dst, uint64(len(h.Legs)))
	for _, l := range h.Legs {
		dst = appendString(dst, l.Leg)
		dst = appendString(dst, l.Peer)
		var f byte
		if l.Up {
			f |= legUp
		}
		dst = append(dst, f)
		dst = binary.AppendUvarint(dst, uint64(max(l.RTT, 0)/time.Microsecond))
		dst = binary.AppendUvarint(dst, uint64(min(max(l.Loss, 0), 1)*10000+0.5))
		dst = binary.AppendUvarint(dst, uint64(max(l.Goodput, 0)))
		dst = binary.AppendUvarint(dst, uint64(max(l.Backlog, 0)))
	}
	return dst
}

// Encode returns h's encoding, or an error when it is over HealthMax
// bytes or has more than 64 legs.
func (h *Health) Encode() ([]byte, error) {
	if len(h.Legs) > healthMaxLegs {
		return nil, fmt.Errorf("health report of %s: %d legs, at most %d", h.Gateway, len(h.Legs), healthMaxLegs)
	}
	b := h.Append(nil)
	if len(b) > HealthMax {
		return nil, fmt.Errorf("health report of %s: %d bytes, at most %d", h.Gateway, len(b), HealthMax)
	}
	return b, nil
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// DecodeHealth decodes a report. It refuses input over HealthMax bytes,
// more than 64 legs, names over 128 bytes and a loss over 100%, and
// allocates no more than the names' bytes and the legs the input can
// hold.
func DecodeHealth(b []byte) (Health, error) {
	var h Health
	if len(b) > HealthMax {
		return h, fmt.Errorf("%w: %d bytes, more than %d", ErrHealth, len(b), HealthMax)
	}
	if len(b) < 2 || b[0] != msgHealth || b[1] < healthFormat {
		return h, fmt.Errorf("%w: bad header", ErrHealth)
	}
	r := metaReader{b: b[2:], base: ErrHealth}
	h.Gateway = r.name("gateway")
	h.Incarnation = r.uvarint("incarnation")
	h.Seq = r.uvarint("seq")
	n := r.uvarint("leg count")
	// A leg takes at least 8 bytes, so a count the input cannot hold is
	// refused before anything is allocated for it.
	if r.err == nil && (n > healthMaxLegs || n > uint64(len(r.b)/8)) {
		r.fail("%d legs in %d bytes", n, len(r.b))
	}
	if r.err != nil {
		return Health{}, r.err
	}
	if n > 0 {
		h.Legs = make([]LegHealth, 0, n)
	}
	for range n {
		var l LegHealth
		l.Leg = r.name("leg")
		l.Peer = r.name("peer")
		if r.err == nil {
			if len(r.b) == 0 {
				r.fail("truncated leg")
			} else {
				l.Up = r.b[0]&legUp != 0
				r.b = r.b[1:]
			}
		}
		rtt := r.uvarint("rtt")
		loss := r.uvarint("loss")
		good := r.uvarint("goodput")
		back := r.uvarint("backlog")
		if r.err != nil {
			return Health{}, r.err
		}
		if loss > 10000 || rtt > uint64(time.Hour/time.Microsecond) || good > 1<<62 || back > 1<<62 {
			return Health{}, fmt.Errorf("%w: leg %s: value out of range", ErrHealth, l.Leg)
		}
		l.RTT = time.Duration(rtt) * time.Microsecond
		l.Loss = float64(loss) / 10000
		l.Goodput, l.Backlog = int64(good), int64(back)
		h.Legs = append(h.Legs, l)
	}
	return h, nil
}

// newer reports whether h should replace old.
func (h *Health) newer(old *Health) bool {
	return old == nil || h.Incarnation > old.Incarnation || (h.Incarnation == old.Incarnation && h.Seq > old.Seq)
}

// healthBroadcast is one report in the broadcast queue; a newer report of
// the same gateway replaces it.
type healthBroadcast struct {
	gateway string
	msg     []byte
}

func (b *healthBroadcast) Name() string { return "health/" + b.gateway }

func (b *healthBroadcast) Invalidates(o memberlist.Broadcast) bool {
	ob, ok := o.(*healthBroadcast)
	return ok && ob.gateway == b.gateway
}

func (b *healthBroadcast) Message() []byte { return b.msg }
func (b *healthBroadcast) Finished()       {}

// healthEntry is the latest report of one gateway.
type healthEntry struct {
	h    Health
	msg  []byte
	when time.Time // when this member got it
}

// Report is a gateway's latest health report and when this member got it.
type Report struct {
	Health
	Received time.Time
}

// PublishHealth gossips this gateway's health to every member: it
// replaces the previous report in the broadcast queue and in push/pull.
// Call it every few seconds and when a leg goes up or down.
func (m *Member) PublishHealth(legs []LegHealth) error {
	m.mu.Lock()
	m.seq++
	h := Health{Gateway: m.opts.Name, Incarnation: m.meta.Incarnation, Seq: m.seq, Legs: append([]LegHealth(nil), legs...)}
	b, err := h.Encode()
	if err != nil {
		m.mu.Unlock()
		return err
	}
	m.health[m.opts.Name] = &healthEntry{h: h, msg: b, when: time.Now()}
	m.mu.Unlock()
	m.queue.QueueBroadcast(&healthBroadcast{gateway: h.Gateway, msg: b})
	return nil
}

// takeHealth keeps a received report if it is newer than the one held,
// and gossips it on when forward is set.
func (m *Member) takeHealth(b []byte, forward bool) {
	if len(b) == 0 || b[0] != msgHealth {
		m.badHealth.Add(1)
		return
	}
	h, err := DecodeHealth(b)
	if err != nil {
		m.badHealth.Add(1)
		m.log.Debug("health report dropped", "err", err)
		return
	}
	if h.Gateway == m.opts.Name {
		return
	}
	m.mu.Lock()
	old := m.health[h.Gateway]
	if old != nil && !h.newer(&old.h) {
		m.mu.Unlock()
		return
	}
	msg := append([]byte(nil), b...)
	m.health[h.Gateway] = &healthEntry{h: h, msg: msg, when: time.Now()}
	m.mu.Unlock()
	if forward {
		m.queue.QueueBroadcast(&healthBroadcast{gateway: h.Gateway, msg: msg})
	}
}

// Health returns the latest report of every gateway heard from, this
// member's own included, by gateway name.
func (m *Member) Health() map[string]Report {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]Report, len(m.health))
	for n, e := range m.health {
		h := e.h
		h.Legs = append([]LegHealth(nil), h.Legs...)
		out[n] = Report{Health: h, Received: e.when}
	}
	return out
}
