package quic

import (
	"math"
	"time"

	"github.com/meridian-gw/meridian/topology/profile"
)

// Link describes the network path under a session, for SessionForLink.
type Link struct {
	// RTT is the base round-trip time (propagation, no queueing).
	RTT time.Duration
	// Jitter is the delay variation to allow for on a round trip (the two
	// directions' jitter summed).
	Jitter time.Duration
	// QueueDelay is how much the bottleneck queue can add to the RTT when
	// full. Zero: nothing.
	QueueDelay time.Duration
	// Rate is the bottleneck rate in bit/s, the larger direction (receive
	// windows must cover whichever way data flows). Zero: unknown or
	// unlimited.
	Rate int64
	// DataRate is the rate in bit/s of the direction batches flow in
	// (dialer to listener), which striping must fill. Zero: Rate.
	DataRate int64
	// Loss is the random packet loss probability of the data direction.
	Loss float64
}

// LinkOf reads a Link from a link profile: batches flow up (dialer to
// listener). Scheduled events (blackouts, rain fades, handovers) are not
// part of the steady state and are ignored.
func LinkOf(p *profile.Profile) Link {
	qd := func(d profile.Params) time.Duration {
		if d.Rate <= 0 {
			return 0
		}
		return time.Duration(float64(d.QueueLimit(d.Rate)) * 8 / float64(d.Rate) * float64(time.Second))
	}
	return Link{
		RTT:        p.RTT(),
		Jitter:     p.Up.Jitter + p.Down.Jitter,
		QueueDelay: max(qd(p.Up), qd(p.Down)),
		Rate:       max(p.Up.Rate, p.Down.Rate),
		DataRate:   p.Up.Rate,
		Loss:       p.Up.MeanLoss(),
	}
}

// Tuning rules of SessionForLink; see its doc.
const (
	// DeadPathTimeout is the longest a dead path may go unnoticed: the QUIC
	// idle timeout of a tuned session (quic-go never uses less than three
	// probe timeouts, about 2 s on a 600 ms path).
	DeadPathTimeout = 5 * time.Second
	// minWindow is the smallest receive window SessionForLink sets.
	minWindow = 1 << 20
	// maxWindow is the largest receive window SessionForLink sets.
	maxWindow = 64 << 20
	// renoMSS is the payload of a full QUIC packet assumed by the NewReno
	// throughput estimate (quic-go starts at 1252 bytes and probes up).
	renoMSS = 1200
	// minLoss is the loss floor of the estimate: even a clean path drops
	// packets when the bottleneck queue overflows.
	minLoss = 0.001
	// stripeHeadroom multiplies the estimated stripe count into the
	// ceiling: adaptive growth stops below it when the rate stops rising.
	stripeHeadroom = 1.5
	// tunedLanes is the lanes per stripe of a striped tuned session: one
	// batch in flight per writer, and a stripe's congestion window holds
	// little more than a batch on a long lossy path.
	tunedLanes = 2
)

// SessionFor derives the tuning of a session over the link profile p; see
// SessionForLink. The caller sets Codec and Logger.
func SessionFor(p *profile.Profile) Session { return SessionForLink(LinkOf(p)) }

// SessionForLink derives a session's tuning from the link under it. With
// the largest RTT the path shows under load, maxRTT = RTT + Jitter +
// QueueDelay:
//
//   - Receive windows, per stream and per connection: 2 × Rate × maxRTT
//     (twice the bandwidth-delay product), rounded up to 64 KiB, between
//     1 MiB and 64 MiB; the initial window is the maximum (no auto-tuning
//     ramp). Rate unknown: the defaults (16 MiB, 64 MiB).
//   - MaxIdleTimeout: DeadPathTimeout (5 s), so a dead path is declared
//     within 5 s on every profile (quic-go stretches it to three probe
//     timeouts if that is longer, which a 600 ms path reaches only with
//     its queue full and a high RTT variance).
//   - KeepAlivePeriod: (5 s − maxRTT) / 4, rounded down to 100 ms, at least
//     200 ms: three keep-alives in a row (QUIC PINGs, sent when nothing was
//     received for the period; they never wait behind stream data) may be
//     lost, and the answer to the fourth still arrives within 5 s.
//   - HandshakeTimeout: 12 × maxRTT, at least DefaultHandshakeTimeout
//     (10 s), rounded up to the second: a handshake survives two lost
//     flights with quic-go's doubling probe timeouts, so a lossy 600 ms
//     link connects at the first try.
//   - Stripes: NewReno holds one connection near
//     1.22 × MSS / RTT / √loss (MSS 1200 bytes, loss at least 0.1%).
//     MaxStripes = ⌈1.5 × DataRate / that⌉, between 1 and MaxStripesLimit;
//     Stripes (the adaptive start) = MaxStripes / 8, at least 1, which
//     saves the first three doublings (each takes a few RTTs); PlaceAny;
//     2 lanes per stripe. A ceiling of 1 leaves striping off (and Lanes at
//     the default).
//
// Worked numbers for the embedded profiles are in the package doc.
func SessionForLink(l Link) Session {
	maxRTT := l.RTT + l.Jitter + l.QueueDelay
	s := Session{
		MaxIdleTimeout:   DeadPathTimeout,
		KeepAlivePeriod:  max((DeadPathTimeout-maxRTT)/4, 200*time.Millisecond).Truncate(100 * time.Millisecond),
		HandshakeTimeout: max(DefaultHandshakeTimeout, 12*maxRTT).Round(time.Second),
	}
	if s.HandshakeTimeout < 12*maxRTT {
		s.HandshakeTimeout += time.Second
	}
	if l.Rate > 0 {
		bdp := float64(l.Rate) / 8 * maxRTT.Seconds()
		w := uint64(math.Ceil(2*bdp/(64<<10))) * (64 << 10)
		w = min(max(w, minWindow), maxWindow)
		s.InitialStreamReceiveWindow, s.MaxStreamReceiveWindow = w, w
		s.InitialConnectionReceiveWindow, s.MaxConnectionReceiveWindow = w, w
	}
	dataRate := l.DataRate
	if dataRate == 0 {
		dataRate = l.Rate
	}
	if n := StripesFor(l.RTT+l.Jitter, dataRate, l.Loss); n > 1 {
		s.Stripes, s.MaxStripes, s.Placement, s.Lanes = max(1, n/8), n, PlaceAny, tunedLanes
	}
	return s
}

// StripesFor is the stripe ceiling SessionForLink sets for a path of the
// given RTT, data rate (bit/s) and loss: 1.5 times the NewReno connections
// needed to fill the rate, between 1 and MaxStripesLimit. A rate of zero
// (unknown) gives 1.
func StripesFor(rtt time.Duration, rate int64, loss float64) int {
	if rate <= 0 || rtt <= 0 {
		return 1
	}
	perConn := RenoRate(rtt, loss)
	n := int(math.Ceil(stripeHeadroom * float64(rate) / perConn))
	return min(max(n, 1), MaxStripesLimit)
}

// RenoRate estimates, in bit/s, what one NewReno connection sustains on a
// path with the given RTT and random loss (Mathis et al.:
// MSS/RTT × 1.22/√p, MSS 1200 bytes, p at least 0.1%).
func RenoRate(rtt time.Duration, loss float64) float64 {
	return 1.22 * renoMSS * 8 / rtt.Seconds() / math.Sqrt(max(loss, minLoss))
}
