package mirror

import (
	"fmt"
	"sync"
	"time"

	"github.com/meridian-gw/meridian/internal/kraw"
	"github.com/meridian-gw/meridian/transport"
)

// Continuity: a partition's batches continue one another. A batch with
// data starts exactly at the offset after what was sent (at first, the
// Resume's position); offsets the source explains without data (a
// compaction gap, aborted records, transaction markers, records retention
// deleted) are first covered by an empty batch that moves the position
// past them. The receiver refuses anything else (checkContinuity), so no
// bug on either side can skip records silently.

// sentPositions are, per partition of one pump, the source offset after
// what was sent; its pipelines share it (each partition has one writer).
type sentPositions struct {
	mu sync.Mutex
	m  map[tp]int64
}

func newSentPositions(rs *transport.Resume) *sentPositions {
	return &sentPositions{m: resumePositions(rs)}
}

// get returns the offset after what was sent of k (ok false: nothing was,
// and the receiver has no position for it).
func (s *sentPositions) get(k tp) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.m[k]
	return o, ok
}

func (s *sentPositions) set(k tp, next int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[k] = next
}

// SourceGap is a range of source offsets that retention deleted at the
// source before the mirror carried them: records lost.
type SourceGap struct {
	Topic     string    `json:"topic"`
	Partition int32     `json:"partition"`
	From      int64     `json:"from"` // first offset lost
	To        int64     `json:"to"`   // the source's log start: the first offset after the gap
	Records   int64     `json:"records"`
	At        time.Time `json:"at"`
}

// maxGapsShown is how many of the latest gaps a leg's status lists.
const maxGapsShown = 16

// continueAt is called before sending data of partition k whose first
// offset is first, fetched while the source's log started at logStart. If
// that does not continue what was sent, it accounts for the gap: records
// below logStart were deleted by retention before they were mirrored
// (counted, logged as an error, shown in status); the rest is compaction
// or aborted data. It returns the empty batch that moves the receiver's
// position to first, or nil when none is needed.
func (lr *legRunner) continueAt(pos *sentPositions, gen uint64, k tp, first, logStart, hwm int64) *transport.Batch {
	prev, ok := pos.get(k)
	if !ok || first <= prev {
		return nil
	}
	leg := lr.out.leg
	if logStart > prev {
		g := SourceGap{Topic: k.Topic, Partition: k.Partition, From: prev, To: min(logStart, first), At: time.Now()}
		g.Records = g.To - g.From
		lr.out.stats.sourceGap(g)
		lr.p.e.m.sourceGap.WithLabelValues(leg.ID).Add(float64(g.Records))
		lr.p.log.Error("source records deleted by retention before they were mirrored", "leg", leg.ID,
			"topic", k.Topic, "partition", k.Partition, "from", g.From, "to", g.To, "records_lost", g.Records)
		lr.out.stats.setErr(fmt.Errorf("%s/%d: %d records (offsets %d-%d) deleted at the source before they were mirrored",
			k.Topic, k.Partition, g.Records, g.From, g.To-1))
	}
	return &transport.Batch{Leg: leg.ID, Gen: gen, Topic: k.Topic, Partition: k.Partition, NextOffset: first, HighWatermark: hwm}
}

// firstOffset is the source offset of a batch's first record (ok false: it
// has none).
func firstOffset(b *transport.Batch) (int64, bool) {
	if b.Kafka != nil {
		var first int64
		found := false
		kraw.Split(b.Kafka, func(h kraw.Header, _ []byte) error {
			if !found {
				first, found = h.BaseOffset, true
			}
			return nil
		})
		return first, found
	}
	if len(b.Records) > 0 {
		return b.Records[0].Offset, true
	}
	return 0, false
}

// checkContinuity reports the first batch that does not continue its
// partition's committed progress (committed) or the batch before it: data
// must start at the partition's next offset, and no batch may move it
// backwards. Partitions without committed progress start anywhere.
func checkContinuity(batches []*transport.Batch, committed func(tp) (int64, bool)) error {
	next := map[tp]int64{}
	for _, b := range batches {
		k := tp{Topic: b.Topic, Partition: b.Partition}
		want, ok := next[k]
		if !ok {
			want, ok = committed(k)
		}
		if ok {
			if first, data := firstOffset(b); data && first != want {
				return fmt.Errorf("batch of %s/%d starts at source offset %d, not at the next offset %d: %d offsets no empty batch explained",
					b.Topic, b.Partition, first, want, first-want)
			}
			if b.NextOffset < want {
				return fmt.Errorf("batch of %s/%d moves the next source offset back from %d to %d", b.Topic, b.Partition, want, b.NextOffset)
			}
		}
		next[k] = b.NextOffset
	}
	return nil
}
