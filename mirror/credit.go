package mirror

import (
	"context"
	"sync"
)

// credit is the sender's flow-control window for one session: at most window
// raw batch bytes may be sent and not yet acknowledged. One batch larger than
// the whole window may go when nothing else is in flight.
type credit struct {
	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every release
	window   int64
	inflight int64
	next     uint64
	seqs     map[uint64]creditEntry
}

type creditEntry struct {
	leg  string
	size int64
}

func newCredit(window int64) *credit {
	return &credit{changed: make(chan struct{}), window: window, next: 1, seqs: map[uint64]creditEntry{}}
}

// acquire waits for room for size bytes and returns the batch's sequence.
func (c *credit) acquire(ctx context.Context, leg string, size int64) (uint64, error) {
	for {
		c.mu.Lock()
		if c.inflight == 0 || c.inflight+size <= c.window {
			seq := c.next
			c.next++
			c.inflight += size
			c.seqs[seq] = creditEntry{leg, size}
			c.mu.Unlock()
			return seq, nil
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-ch:
		}
	}
}

func (c *credit) releaseLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// ack releases acknowledged batches; unknown sequences are ignored.
func (c *credit) ack(seqs []uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range seqs {
		if e, ok := c.seqs[s]; ok {
			c.inflight -= e.size
			delete(c.seqs, s)
		}
	}
	c.releaseLocked()
}

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
