package quic

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/meridian-gw/meridian/transport"
)

// Sequenced lanes (binding meridian/1+stripes) carry each batch after a
// uvarint sequence number that counts the batches of its (leg, topic,
// partition) in this session and direction, from 0. The sender numbers a
// partition's batches in the order Send was called for them; the receiver
// hands them to Recv in that order whatever stripe and lane each one took.

// partKey names a source partition of a leg.
type partKey struct {
	leg, topic string
	part       int32
}

func keyOf(b *transport.Batch) partKey { return partKey{b.Leg, b.Topic, b.Partition} }

const (
	// maxSeqParts caps the partitions a peer may send sequenced batches for
	// in one session, so that it cannot grow the receiver's table without
	// bound.
	maxSeqParts = 1 << 18
	// maxReorderBytes bounds the reorder buffer when the credit window is
	// unlimited (Welcome.Window <= 0) or unknown (batches from a listener to
	// its dialer): raw bytes of batches received and not yet taken by Recv.
	maxReorderBytes = 256 << 20
	// maxEncoders caps the encoders of a PlaceAny session (batches encode
	// in parallel in the callers of Send).
	maxEncoders = 4
)

// sendParts hands out each partition's next sequence number. A partition's
// Sends are serialized by its slot (sem), which is held from numbering to
// queueing: a number is used only if its batch was queued, so that a Send
// that fails (context ended, batch too big) leaves no gap the receiver
// would wait for forever.
type sendParts struct {
	mu sync.Mutex
	m  map[partKey]*sendPart
}

type sendPart struct {
	sem  chan struct{}
	next uint64
}

func (p *sendParts) acquire(ctx context.Context, done <-chan struct{}, k partKey) (*sendPart, error) {
	p.mu.Lock()
	sp := p.m[k]
	if sp == nil {
		if p.m == nil {
			p.m = make(map[partKey]*sendPart)
		}
		sp = &sendPart{sem: make(chan struct{}, 1)}
		p.m[k] = sp
	}
	p.mu.Unlock()
	select {
	case sp.sem <- struct{}{}:
		return sp, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-done:
		return nil, errEnding
	}
}

func (sp *sendPart) release() { <-sp.sem }

// count is the number of partitions sent so far.
func (p *sendParts) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.m)
}

// errEnding is returned internally when the session ends under a caller;
// Send replaces it with Err().
var errEnding = fmt.Errorf("session ending")

// sendSequenced sends a batch of a striped session.
func (c *Conn) sendSequenced(ctx context.Context, b *transport.Batch) error {
	sp, err := c.parts.acquire(ctx, c.ctx.Done(), keyOf(b))
	if err == errEnding {
		return c.Err()
	}
	if err != nil {
		return err
	}
	defer sp.release()
	if c.anyPlace {
		err = c.sendAny(ctx, b, sp.next)
	} else {
		var s *sender
		if s, err = c.pinnedLane(b); err == nil {
			err = s.send(ctx, b, sp.next, true)
		}
	}
	if err == nil {
		sp.next++
	}
	return err
}

// pinnedLane is the lane of a batch under PlacePinned: a jump hash of its
// partition picks the stripe (so adding a stripe moves about 1/n of the
// partitions), FNV-1a modulo Lanes the lane on it.
func (c *Conn) pinnedLane(b *transport.Batch) (*sender, error) {
	c.lanesMu.Lock()
	defer c.lanesMu.Unlock()
	if c.lanesClosed {
		if err := c.Err(); err != nil {
			return nil, err
		}
		return nil, transport.ErrClosed
	}
	h := partHash(b)
	// Only a dialer opens lanes on stripes other than the first.
	n := 1
	if c.client {
		n = len(c.stripes)
	}
	i := int(h % uint64(c.cfg.lanes))
	if j := jumpHash(h, n); j > 0 {
		return c.stripes[j].lanes[i], nil
	}
	return c.laneLocked(i)
}

// jumpHash is Lamping and Veach's jump consistent hash: a bucket in [0, n)
// that changes for only about 1/(n+1) of the keys when n grows by one.
func jumpHash(key uint64, n int) int {
	var b, j int64 = -1, 0
	for j < int64(n) {
		b = j
		key = key*2862933555777941757 + 1
		j = int64(float64(b+1) * (float64(int64(1)<<31) / float64((key>>33)+1)))
	}
	return int(b)
}

// sendAny encodes a batch with its sequence number and queues it for the
// first free writer of any stripe (PlaceAny).
func (c *Conn) sendAny(ctx context.Context, b *transport.Batch, seq uint64) error {
	enc, err := c.encoder(ctx)
	if err != nil {
		return err
	}
	var buf []byte
	select {
	case buf = <-c.dataFree:
	default:
	}
	buf = binary.AppendUvarint(buf[:0], seq)
	start := len(buf)
	buf, raw, err := enc.AppendBatch(buf, b)
	c.encs <- enc // never blocks: at most cap(c.encs) encoders exist
	if err == nil && c.maxBatch > 0 && int64(raw) > c.maxBatch {
		err = fmt.Errorf("%d raw bytes exceed the peer's MaxBatchBytes of %d", raw, c.maxBatch)
	}
	if err != nil {
		return fmt.Errorf("send batch %s/%d seq %d: %w", b.Topic, b.Partition, b.Seq, err)
	}
	select {
	case c.dataQ <- buf:
	default:
		c.sendWaits.Add(1)
		select {
		case c.dataQ <- buf:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.ctx.Done():
			return c.Err()
		}
	}
	c.framesSent.Add(1)
	c.wireBytes.Add(int64(len(buf)))
	c.rawBytes.Add(int64(raw))
	b.WireSize = len(buf) - start
	return nil
}

// encoder returns an idle encoder, making one if fewer than maxEncoders
// exist, else waiting for one.
func (c *Conn) encoder(ctx context.Context) (*transport.Encoder, error) {
	select {
	case e := <-c.encs:
		return e, nil
	default:
	}
	if c.encsMade.Add(1) <= maxEncoders {
		e, err := c.newEncoder()
		if err != nil {
			c.encsMade.Add(-1)
			return nil, err
		}
		return e, nil
	}
	c.encsMade.Add(-1)
	select {
	case e := <-c.encs:
		return e, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.ctx.Done():
		return nil, c.Err()
	}
}

// reorder is the receive side of sequenced lanes: it hands each
// partition's batches to Recv in sequence order, holding those that arrive
// early.
//
// Its memory is bounded by the credit window: a batch held here has not
// reached Recv, so it cannot have been acknowledged, and the peer keeps at
// most the window unacknowledged (plus one batch larger than the window).
// Holding more than that is the peer's protocol violation and ends the
// session. Readers never wait for space here: a reader that waited for a
// gap to fill could hold the very batch (behind it on its lane) that fills
// another reader's gap.
type reorder struct {
	mu       sync.Mutex
	parts    map[partKey]*recvPart
	held     int64 // raw bytes received and not yet taken by Recv
	limit    int64
	maxBatch int64
}

type recvPart struct {
	next       uint64
	pending    map[uint64]heldBatch
	delivering bool // a reader is handing this partition's batches to Recv
}

type heldBatch struct {
	b   *transport.Batch
	raw int64
}

// init sets the bound from the credit window this side granted (window;
// <= 0: unlimited or unknown) and the largest batch it accepts.
func (r *reorder) init(maxBatch int, window int64) {
	r.maxBatch = int64(maxBatch)
	r.limit = reorderLimit(window, r.maxBatch)
}

func reorderLimit(window, maxBatch int64) int64 {
	if window <= 0 {
		return maxReorderBytes
	}
	return window + 2*maxBatch
}

// credit raises the bound for a new credit window granted to the peer. It
// never lowers it: batches sent under the old window may still arrive.
func (r *reorder) credit(window int64) {
	r.mu.Lock()
	r.limit = max(r.limit, reorderLimit(window, r.maxBatch))
	r.mu.Unlock()
}

// push takes batch b (raw: its RawSize) with sequence number seq. If it is its partition's next
// and no other reader is delivering that partition, push delivers it, then
// any held batches that follow, through deliver (which blocks while Recv's
// queue is full and returns false once the session stops reading).
// Otherwise it holds b and returns. An error is the peer's protocol
// violation.
func (r *reorder) push(b *transport.Batch, seq uint64, raw int64, deliver func(*transport.Batch) bool) error {
	k := keyOf(b)
	r.mu.Lock()
	p := r.parts[k]
	if p == nil {
		if len(r.parts) >= maxSeqParts {
			r.mu.Unlock()
			return fmt.Errorf("sequenced batches for more than %d partitions", maxSeqParts)
		}
		if r.parts == nil {
			r.parts = make(map[partKey]*recvPart)
		}
		p = &recvPart{}
		r.parts[k] = p
	}
	if _, dup := p.pending[seq]; dup || seq < p.next {
		next := p.next
		r.mu.Unlock()
		return fmt.Errorf("batch %s/%s/%d sequence %d received twice (next expected %d)", k.leg, k.topic, k.part, seq, next)
	}
	if r.held+raw > r.limit && r.held > 0 {
		held, limit := r.held, r.limit
		r.mu.Unlock()
		return fmt.Errorf("reorder buffer would hold %d bytes, over its bound of %d (credit window plus two batches): the peer sends beyond its credit", held+raw, limit)
	}
	r.held += raw
	if seq != p.next || p.delivering {
		if p.pending == nil {
			p.pending = make(map[uint64]heldBatch)
		}
		p.pending[seq] = heldBatch{b, raw}
		r.mu.Unlock()
		return nil
	}
	p.delivering = true
	p.next++
	cur := heldBatch{b, raw}
	for {
		r.mu.Unlock()
		ok := deliver(cur.b)
		r.mu.Lock()
		r.held -= cur.raw
		if !ok {
			p.delivering = false
			r.mu.Unlock()
			return nil
		}
		next, found := p.pending[p.next]
		if !found {
			if len(p.pending) == 0 {
				p.pending = nil
			}
			p.delivering = false
			r.mu.Unlock()
			return nil
		}
		delete(p.pending, p.next)
		p.next++
		cur = next
	}
}

// discard drops what is held once the session has ended.
func (r *reorder) discard() {
	r.mu.Lock()
	r.parts, r.held = nil, 0
	r.mu.Unlock()
}

// heldBytes reports the raw bytes held (for tests and stats).
func (r *reorder) heldBytes() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.held
}
