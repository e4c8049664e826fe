package mirror

import (
	"sync"
	"time"
)

// Penalties of a peer that broke the protocol: its sessions are refused
// for penaltyFirst after the first violation, twice as long after each
// further one up to penaltyMost, and its record is forgotten once it has
// been quiet (no violation) for penaltyForget.
const (
	penaltyFirst  = time.Second
	penaltyMost   = 64 * time.Second
	penaltyForget = 10 * time.Minute
)

// penalties remembers the peers that broke the protocol (by gateway name,
// which the transport has checked against the peer certificate) and
// refuses their sessions for a while, so that a misbehaving peer cannot
// redial into a flood as fast as it is cut off. It is safe for concurrent
// use.
type penalties struct {
	now   func() time.Time // nil: time.Now
	first time.Duration    // 0: penaltyFirst (Tuning.Penalty)

	mu    sync.Mutex
	peers map[string]*penalty
}

type penalty struct {
	strikes int       // violations since the peer was last forgotten
	last    time.Time // of the latest violation
	until   time.Time // sessions are refused until then
}

func (p *penalties) clock() time.Time {
	if p.now != nil {
		return p.now()
	}
	return time.Now()
}

// violated records a violation by peer and returns for how long its
// sessions are now refused.
func (p *penalties) violated(peer string) time.Duration {
	now := p.clock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.peers == nil {
		p.peers = map[string]*penalty{}
	}
	for name, pp := range p.peers { // forget the quiet ones: the map stays small
		if now.Sub(pp.last) >= penaltyForget {
			delete(p.peers, name)
		}
	}
	pp := p.peers[peer]
	if pp == nil {
		pp = &penalty{}
		p.peers[peer] = pp
	}
	first := p.first
	if first <= 0 {
		first = penaltyFirst
	}
	d := first << min(pp.strikes, 6) // 1 s … 64 s at the default
	d = min(d, first*(penaltyMost/penaltyFirst))
	pp.strikes++
	pp.last, pp.until = now, now.Add(d)
	return d
}

// refused reports whether peer's sessions are refused now, and for how
// much longer.
func (p *penalties) refused(peer string) (time.Duration, bool) {
	now := p.clock()
	p.mu.Lock()
	defer p.mu.Unlock()
	pp := p.peers[peer]
	if pp == nil {
		return 0, false
	}
	if now.Sub(pp.last) >= penaltyForget {
		delete(p.peers, peer)
		return 0, false
	}
	if left := pp.until.Sub(now); left > 0 {
		return left, true
	}
	return 0, false
}
