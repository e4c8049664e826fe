package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/kraw"
	"github.com/meridian-gw/meridian/internal/kread"
	"github.com/meridian-gw/meridian/mirror/progress"
	"github.com/meridian-gw/meridian/routing/origin"
	"github.com/meridian-gw/meridian/transport"
)

// Loop prevention at the sender (docs/active-active.md). Two means, both
// applied before the link, both leaving the dropped records as gaps that
// progress moves past exactly as it does past filtered records
// (filter.go): nothing crosses the link for them, the batch of their
// partition still ends after them, and translation resolves a gap to the
// next mirrored record.
//
//   - Records sent as records carry the header meridian.origin (package
//     routing/origin): the clusters they have been written to. The sender
//     extends it with the leg's destination, and drops a record whose path
//     already holds the destination. A malformed header is replaced, as
//     for a record produced at the source, and counted.
//   - Kafka batches forwarded as they are (passthrough) carry no header
//     Meridian could add. Instead the sender recognises batches that
//     Meridian's own sinks wrote into the source cluster: a sink writes
//     with the transactional ID progress.TransactionalID(leg, shard), so
//     the sender asks the source cluster (DescribeTransactions) for the
//     producer IDs of the transactional IDs of the leg's LoopWriters (the
//     legs into its source that could carry a record from its
//     destination), and for IDs no longer current reads the progress
//     records their transactions wrote (writerIDs), and skips their
//     transactional batches as it skips aborted ones. The same rule applies to records that carry no origin
//     header (a passthrough sink wrote them) in record mode.

// loopCount tallies what one call of sendRecords or forward dropped as
// loops.
type loopCount struct {
	// records and bytes dropped: byHeader by the origin header, byWriter
	// by the producer ID of a Meridian sink; malformed headers replaced.
	byHeader, byWriter, bytes, malformed int64
}

// loopDropped adds c to the leg's stats and metrics.
func (o *outLeg) loopDropped(p *outPeer, c *loopCount) {
	if c.byHeader+c.byWriter+c.malformed == 0 {
		return
	}
	o.stats.loopsDropped(c.byHeader+c.byWriter, c.bytes, c.malformed)
	m, leg, route := p.e.m, o.leg.ID, o.leg.Route.Name
	if c.byHeader > 0 {
		m.loopDropped.WithLabelValues(leg, route, "origin-header").Add(float64(c.byHeader))
	}
	if c.byWriter > 0 {
		m.loopDropped.WithLabelValues(leg, route, "producer-id").Add(float64(c.byWriter))
	}
	if c.bytes > 0 {
		m.loopDroppedBytes.WithLabelValues(leg, route).Add(float64(c.bytes))
	}
	if c.malformed > 0 {
		m.originMalformed.WithLabelValues(leg, route).Add(float64(c.malformed))
		before := o.malformed.Add(c.malformed) - c.malformed
		if before == 0 || before/filterLogEvery != (before+c.malformed)/filterLogEvery {
			p.log.Warn("records carry a malformed "+origin.Header+" header: taken as produced at the source, the header replaced",
				"leg", leg, "records", c.malformed, "records_total", before+c.malformed)
		}
	}
}

// originScratch is a pipeline's space for new origin header values: a
// slab the records share, appended to and replaced when full, never
// overwritten (batches sent keep it alive until acknowledged).
type originScratch struct {
	slab []byte
	// The last producer ID asked about (writerCheck.ours) and the answer.
	pid               int64
	pidOurs, pidKnown bool
}

// originSlab is the size of a new slab of origin values.
const originSlab = 64 << 10

// headers returns r's headers for the link, with its origin header
// extended for the leg (src to dst), appended to rb.hdrs; ok false: the
// record must not be sent (a loop), counted in c. w recognises Meridian's
// sinks for records without the header (nil: not checked).
func (rb *recordBatcher) headers(ctx context.Context, r *kgo.Record, src, dst string, w *writerCheck, c *loopCount) (hdrs []transport.Header, ok bool, err error) {
	var ov []byte
	present := false
	for i := range r.Headers {
		if r.Headers[i].Key == origin.Header {
			ov, present = r.Headers[i].Value, true
			break
		}
	}
	if !present && w != nil && r.Attrs.IsTransactional() {
		// Records of a batch share their producer ID: the last answer
		// is kept (an answer never changes).
		s := &rb.org
		if !s.pidKnown || s.pid != r.ProducerID {
			ours, err := w.ours(ctx, r.ProducerID)
			if err != nil {
				return nil, false, err
			}
			s.pid, s.pidOurs, s.pidKnown = r.ProducerID, ours, true
		}
		if s.pidOurs {
			c.byWriter++
			c.bytes += int64(recordBytes(r))
			return nil, false, nil
		}
	}
	need := len(src) + len(dst) + 1
	if present {
		need += len(ov) + len(src) + 2
	}
	s := &rb.org
	if cap(s.slab)-len(s.slab) < need {
		s.slab = make([]byte, 0, max(need, originSlab))
	}
	val, verdict := origin.Next(s.slab, ov, present, src, dst)
	switch verdict {
	case origin.Loop:
		c.byHeader++
		c.bytes += int64(recordBytes(r))
		return nil, false, nil
	case origin.Malformed:
		c.malformed++
	}
	// need made room: val is in the slab, which moves past it.
	val = val[:len(val):len(val)]
	s.slab = s.slab[:len(s.slab)+len(val)]
	nh := len(r.Headers) + 1
	if present {
		nh--
	}
	if cap(rb.hdrs)-len(rb.hdrs) < nh {
		rb.hdrs = make([]transport.Header, 0, max(nh, 4096))
	}
	start := len(rb.hdrs)
	seen := false
	for _, h := range r.Headers {
		if h.Key == origin.Header {
			if !seen {
				rb.hdrs = append(rb.hdrs, transport.Header{Key: origin.Header, Value: val})
				seen = true
			}
			continue // of several, the first counts
		}
		rb.hdrs = append(rb.hdrs, transport.Header{Key: h.Key, Value: h.Value})
	}
	if !seen {
		rb.hdrs = append(rb.hdrs, transport.Header{Key: origin.Header, Value: val})
	}
	return rb.hdrs[start:len(rb.hdrs):len(rb.hdrs)], true, nil
}

// recordBytes is a record's key, value and header bytes.
func recordBytes(r *kgo.Record) int {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// writerIDs are the producer IDs of a leg's LoopWriters' sinks on the
// leg's source cluster, learnt from it and kept for the life of the
// engine (a producer ID, once seen, stays recognised even after its
// transactional ID got another).
//
// Two sources: DescribeTransactions names the IDs current now; the
// progress topic at the source (progress.Topic, written in every
// transaction of a sink, keyed by its leg) names past ones too, for as
// long as the topic keeps their records: a sink's producer ID changes
// when its epoch runs out (every 32,766 transactions with the KIP-890
// transaction protocol), and a sender that meets batches of a retired ID
// (a backlog read after a restart) finds it there. The topic is read
// incrementally, only when an ID is not current.
type writerIDs struct {
	txnIDs []string        // of the LoopWriters' shards; empty: nothing to check
	legs   map[string]bool // the LoopWriters

	mu      sync.Mutex
	known   map[int64]bool
	others  map[int64]bool  // transactional producer IDs that are not theirs
	scanned map[int32]int64 // progress topic partition → next offset to read

	scanMu sync.Mutex // one progress scan at a time; taken before mu
}

// maxOthers bounds the producer IDs remembered as not Meridian's.
const maxOthers = 1 << 14

func newWriterIDs(legs []string) *writerIDs {
	w := &writerIDs{known: map[int64]bool{}, others: map[int64]bool{}, scanned: map[int32]int64{}, legs: map[string]bool{}}
	for _, l := range legs {
		w.legs[l] = true
		for i := range progress.Shards {
			w.txnIDs = append(w.txnIDs, progress.TransactionalID(l, i))
		}
	}
	return w
}

// writerCheck is a pump's view of writerIDs, with the source cluster's
// admin client and options.
type writerCheck struct {
	w    *writerIDs
	adm  *kadm.Client
	opts []kgo.Opt
}

// check returns the pump's writerCheck (nil when the leg is on no cycle).
func (w *writerIDs) check(adm *kadm.Client, opts []kgo.Opt) *writerCheck {
	if w == nil || len(w.txnIDs) == 0 {
		return nil
	}
	return &writerCheck{w, adm, opts}
}

// ours reports whether producer ID pid is one of the writers'. An ID not
// seen before makes it ask the source cluster: a sink's batch exists only
// after its InitProducerID, so the answer names the ID if it is theirs.
func (c *writerCheck) ours(ctx context.Context, pid int64) (bool, error) {
	w := c.w
	w.mu.Lock()
	known, other := w.known[pid], w.others[pid]
	w.mu.Unlock()
	if known || other {
		return known, nil
	}
	described, err := c.adm.DescribeTransactions(ctx, w.txnIDs...)
	if err != nil {
		return false, fmt.Errorf("describe the transactions of Meridian's sinks at the source (loop prevention): %w", err)
	}
	// A transactional ID never used is not found; any other refusal (no
	// DESCRIBE on the transactional IDs) leaves the answer unknown: the
	// batch must not go as if it were not theirs.
	for _, d := range described {
		if d.Err != nil && !errors.Is(d.Err, kerr.TransactionalIDNotFound) {
			return false, fmt.Errorf("describe transaction %q at the source (loop prevention): %w", d.TxnID, d.Err)
		}
	}
	w.mu.Lock()
	for _, d := range described {
		if d.Err == nil && d.ProducerID >= 0 {
			w.known[d.ProducerID] = true
		}
	}
	known = w.known[pid]
	w.mu.Unlock()
	if known {
		return true, nil
	}
	// Not a current ID of theirs: perhaps a past one.
	if err := c.scanProgress(ctx); err != nil {
		return false, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.known[pid] {
		return true, nil
	}
	if len(w.others) >= maxOthers {
		clear(w.others)
	}
	w.others[pid] = true
	return false, nil
}

// scanProgress reads what the source's progress topic gained since the
// last scan and learns the producer IDs of the transactions that wrote
// the LoopWriters' progress records. A source without the topic has no
// Meridian sink writing there yet.
func (c *writerCheck) scanProgress(ctx context.Context) error {
	w := c.w
	w.scanMu.Lock()
	defer w.scanMu.Unlock()
	w.mu.Lock()
	from := maps.Clone(w.scanned)
	w.mu.Unlock()
	// Nothing committed since the last scan (the common case when other
	// transactional producers come and go): no new client, no read.
	stable, err := c.adm.ListCommittedOffsets(ctx, progress.Topic)
	if err == nil {
		err = stable.Error()
	}
	if errors.Is(err, kerr.UnknownTopicOrPartition) {
		return nil // no Meridian sink writes there yet
	}
	if err != nil {
		return fmt.Errorf("list %s offsets at the source (loop prevention): %w", progress.Topic, err)
	}
	fresh := false
	stable.Each(func(o kadm.ListedOffset) {
		if o.Offset > from[o.Partition] {
			fresh = true
		}
	})
	if !fresh {
		return nil
	}
	found := map[int64]bool{}
	err = kread.EachFrom(ctx, c.opts, []string{progress.Topic}, map[string]map[int32]int64{progress.Topic: from}, func(r *kgo.Record) {
		from[r.Partition] = max(from[r.Partition], r.Offset+1)
		if !r.Attrs.IsTransactional() || found[r.ProducerID] {
			return
		}
		if leg, _, ok := bytes.Cut(r.Key, []byte{0}); ok && w.legs[string(leg)] {
			found[r.ProducerID] = true
		}
	})
	if errors.Is(err, kerr.UnknownTopicOrPartition) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("read %s at the source (loop prevention): %w", progress.Topic, err)
	}
	// The read reached at least the stable offsets listed before it
	// (past any trailing transaction marker).
	stable.Each(func(o kadm.ListedOffset) { from[o.Partition] = max(from[o.Partition], o.Offset) })
	w.mu.Lock()
	defer w.mu.Unlock()
	w.scanned = from
	for id := range found {
		w.known[id] = true
	}
	return nil
}

// skipWriters marks the transactional data batches of pf that the leg's
// writers wrote as skipped (forward then only moves the position past
// them), counting them in c.
func (c *writerCheck) skipWriters(ctx context.Context, pf *kraw.PartitionFetch, lc *loopCount) error {
	if c == nil {
		return nil
	}
	for i := range pf.Batches {
		fb := &pf.Batches[i]
		h := &fb.Header
		if fb.Skip || h.Magic < 2 || !h.Transactional() || h.Control() {
			continue
		}
		ours, err := c.ours(ctx, h.ProducerID)
		if err != nil {
			return err
		}
		if ours {
			fb.Skip = true
			lc.byWriter += int64(h.Records)
			lc.bytes += int64(len(fb.Bytes))
		}
	}
	return nil
}
