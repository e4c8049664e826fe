package mirror

import (
	"context"
	"sync"
	"time"

	"github.com/meridian-gw/meridian/topology"
)

// Standby receivers. A peer's legs go to one gateway of the destination
// region at a time: the peer (routing.Peer.Gateway), or, when it does not
// answer or gossip has it dead, the first of its standbys
// (routing.Peer.Standby) that may be tried. Every gateway of the
// destination region that receives a leg writes it with the same
// transactional IDs (per leg and shard), so the gateway that takes the
// leg over fences the producers of the one before: a receiver that was
// paused and wakes up fails its commit (PRODUCER_FENCED) and nothing of
// it lands, while the new receiver resumes the senders from what is
// committed.
//
// Senders converge on one receiver, because they order the candidates
// the same way (file order) and, with gossip, share one view of who is
// alive: a gateway is skipped while gossip has it dead or left, or for
// standbyRetry after a dial or session to it failed. When gossip says
// the preferred gateway is alive again, a sender on a standby ends that
// session (standbyBack) so that the legs return to it: two receivers
// writing one leg would fence each other's transactions in turn.
type receiverChoice struct {
	p   *outPeer
	all []*topology.Gateway // the peer first, then its standbys

	mu       sync.Mutex
	cur      int
	failedAt []time.Time // per candidate: the last failure (zero: none since a success)
	switches int64
}

// standbyRetry is how long a receiver that failed is skipped.
const standbyRetry = 10 * time.Second

func newReceiverChoice(p *outPeer) *receiverChoice {
	if len(p.peer.Standby) == 0 || !p.peer.Dials {
		return nil
	}
	all := append([]*topology.Gateway{p.peer.Gateway}, p.peer.Standby...)
	return &receiverChoice{p: p, all: all, failedAt: make([]time.Time, len(all))}
}

// target is the gateway the next session goes to (the peer when c is nil).
func (c *receiverChoice) target() *topology.Gateway {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.all[c.cur]
}

// eligibleLocked reports whether candidate i may be tried now.
func (c *receiverChoice) eligibleLocked(i int, now time.Time) bool {
	if alive, known := c.p.e.alive(c.all[i].Name); known && !alive {
		return false
	}
	return c.failedAt[i].IsZero() || now.Sub(c.failedAt[i]) >= standbyRetry
}

// pick chooses the gateway for the next session after the last one to
// the current target failed (failed) or not, and returns it.
func (c *receiverChoice) pick(failed bool) *topology.Gateway {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if failed {
		c.failedAt[c.cur] = now
	}
	next := -1
	for i := range c.all {
		if c.eligibleLocked(i, now) {
			next = i
			break
		}
	}
	if next < 0 {
		// Nobody may be tried: the one that failed longest ago.
		next = 0
		for i := range c.all {
			if c.failedAt[i].Before(c.failedAt[next]) {
				next = i
			}
		}
	}
	if next != c.cur {
		c.switches++
		c.p.log.Warn("legs switch receiving gateway", "from", c.all[c.cur].Name, "to", c.all[next].Name,
			"failed", failed, "legs", len(c.p.legs))
		for _, l := range c.p.legs {
			c.p.e.m.receiverSwitches.WithLabelValues(l.leg.ID, c.all[next].Name).Inc()
		}
		c.cur = next
	}
	return c.all[c.cur]
}

// ok records that a session to the current target opened.
func (c *receiverChoice) ok() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failedAt[c.cur] = time.Time{}
}

// preferredBack reports whether the session to the current target should
// end so the legs go back to a gateway earlier in the order: gossip has
// it alive and it has not failed for standbyRetry.
func (c *receiverChoice) preferredBack() bool {
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	for i := range c.cur {
		if alive, known := c.p.e.alive(c.all[i].Name); known && alive && c.eligibleLocked(i, now) {
			return true
		}
	}
	return false
}

// allFailed reports whether every candidate failed within standbyRetry
// (true when c is nil: the peer alone).
func (c *receiverChoice) allFailed() bool {
	if c == nil {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	for i := range c.all {
		if c.failedAt[i].IsZero() || now.Sub(c.failedAt[i]) >= standbyRetry {
			return false
		}
	}
	return true
}

// onStandby reports whether the legs go to a standby now.
func (c *receiverChoice) onStandby() bool {
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur > 0
}

// watchBack ends the session (end) when the legs should go back to an
// earlier receiver (preferredBack), looking every second until ctx ends.
func (c *receiverChoice) watchBack(ctx context.Context, end func()) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if c.preferredBack() {
				c.p.log.Info("preferred receiving gateway is alive again: ending the session to the standby", "standby", c.target().Name)
				end()
				return
			}
		}
	}
}

// dialTarget is the gateway the peer's next session goes to.
func (p *outPeer) dialTarget() *topology.Gateway {
	if t := p.recv.target(); t != nil {
		return t
	}
	return p.peer.Gateway
}

// alive reports what gossip knows of gateway name (Options.Alive).
func (e *Engine) alive(name string) (alive, known bool) {
	if e.opts.Alive == nil {
		return false, false
	}
	return e.opts.Alive(name)
}
