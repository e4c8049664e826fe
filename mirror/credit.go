package mirror

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Batch size ramp of a session (see credit).
const (
	rampStart = 4 << 10
	rampMost  = 1 << 20
)

// credit schedules the batches of one session. It is
//
//   - the flow-control window: batches costing at most window bytes may be
//     sent and not yet acknowledged, a batch costing its raw size but at
//     least minBatchCost (batchCost; one batch larger than the whole window
//     may go when nothing else is in flight). The receiver enforces the
//     same rule (recvWindow);
//   - the link's rate cap, if any: a token bucket charged with each batch's
//     wire bytes once it is sent, which a batch waits on until it is out of
//     debt; and
//   - route priority: a batch waits while a batch of a higher-priority route
//     waits, and routes below the session's highest priority may fill only
//     half of the window, so a high-priority batch never queues behind a
//     low-priority backlog (the backlog stays in the source cluster);
//   - the batch size ramp: a session's batches start small and double with
//     each acknowledgement, up to the link's batch target. A new session's
//     QUIC connection is in slow start, and paced: about ten packets leave
//     at once and the rest of the first window over most of a round trip.
//     A first batch larger than that burst would complete at the
//     destination a round trip later (16 KiB batches measured 0.6 s later
//     at 600 ms RTT): after a blackout, the first records must land one
//     round trip after the session opens.
type credit struct {
	ramp atomic.Int64 // current batch size limit, raw bytes

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every release
	window   int64
	inflight int64
	next     uint64
	seqs     map[uint64]creditEntry

	top     int         // highest priority of the session's legs
	waiting map[int]int // waiters by priority

	rate   float64 // wire bytes per second; 0: no cap
	burst  float64
	tokens float64 // may go negative: debt
	filled time.Time
}

type creditEntry struct {
	leg  string
	size int64
}

// newCredit returns a session's scheduler: window bytes in flight, top the
// highest route priority among its legs, rateBits the link's cap in bit/s
// (0: none).
func newCredit(window int64, top int, rateBits int64) *credit {
	c := &credit{changed: make(chan struct{}), window: window, next: 1, seqs: map[uint64]creditEntry{},
		top: top, waiting: map[int]int{}}
	c.ramp.Store(rampStart)
	if rateBits > 0 {
		c.rate = float64(rateBits) / 8
		// A burst of 50 ms at the rate, at least 64 KiB: smooth enough for
		// the link's queue, coarse enough for whole batches.
		c.burst = max(c.rate/20, 64<<10)
		c.tokens, c.filled = c.burst, time.Now()
	}
	return c
}

// acquire waits for room for a batch costing size (batchCost) of a route
// of the given priority, and returns the batch's sequence.
func (c *credit) acquire(ctx context.Context, leg string, prio int, size int64) (uint64, error) {
	c.mu.Lock()
	c.waiting[prio]++
	c.releaseLocked() // lower priorities re-check
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.waiting[prio]--; c.waiting[prio] == 0 {
			delete(c.waiting, prio)
		}
		c.releaseLocked()
		c.mu.Unlock()
	}()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		c.mu.Lock()
		wait := c.blockedLocked(prio, size)
		if wait == 0 {
			seq := c.next
			c.next++
			c.inflight += size
			c.seqs[seq] = creditEntry{leg, size}
			c.mu.Unlock()
			return seq, nil
		}
		ch := c.changed
		c.mu.Unlock()
		var tick <-chan time.Time
		if wait > 0 { // out of tokens: the bucket refills in wait
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			tick = timer.C
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-ch:
		case <-tick:
		}
	}
}

// blockedLocked says whether a batch may go: 0 if so, -1 to wait for a
// change, or how long until the rate cap allows it.
func (c *credit) blockedLocked(prio int, size int64) time.Duration {
	for p := range c.waiting {
		if p > prio {
			return -1
		}
	}
	limit := c.window
	if prio < c.top {
		limit = c.window / 2
	}
	if c.inflight > 0 && c.inflight+size > limit {
		return -1
	}
	if c.rate > 0 {
		now := time.Now()
		c.tokens = min(c.burst, c.tokens+now.Sub(c.filled).Seconds()*c.rate)
		c.filled = now
		if c.tokens < 0 {
			return time.Duration(-c.tokens/c.rate*float64(time.Second)) + time.Millisecond
		}
	}
	return 0
}

// charge takes a sent batch's wire bytes from the rate cap's bucket.
func (c *credit) charge(wire int) {
	if c.rate == 0 {
		return
	}
	c.mu.Lock()
	c.tokens -= float64(wire)
	c.mu.Unlock()
}

func (c *credit) releaseLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// ack releases acknowledged batches; unknown sequences are ignored.
func (c *credit) ack(seqs []uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	known := false
	for _, s := range seqs {
		if e, ok := c.seqs[s]; ok {
			c.inflight -= e.size
			delete(c.seqs, s)
			known = true
		}
	}
	if r := c.ramp.Load(); known && r < rampMost {
		c.ramp.Store(min(2*r, rampMost))
	}
	c.releaseLocked()
}

// batchLimit is the largest batch to build now: target, or less while the
// session's ramp is below it.
func (c *credit) batchLimit(target int64) int64 { return min(target, c.ramp.Load()) }

// releaseLeg forgets every batch of leg in flight (after a Resume, the
// receiver drops them).
func (c *credit) releaseLeg(leg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for s, e := range c.seqs {
		if e.leg == leg {
			c.inflight -= e.size
			delete(c.seqs, s)
		}
	}
	c.releaseLocked()
}

func (c *credit) setWindow(w int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.window = w
	c.releaseLocked()
}

// wait blocks until nothing is in flight or ctx ends.
func (c *credit) drained(ctx context.Context) bool {
	for {
		c.mu.Lock()
		if c.inflight == 0 {
			c.mu.Unlock()
			return true
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return false
		case <-ch:
		}
	}
}
