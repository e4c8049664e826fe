package mirror

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/kraw"
	"github.com/meridian-gw/meridian/transport"
)

// rawItem is one Kafka batch writeRaw produces: a source batch as it came
// (srcs nil: n records from src), or one built from records (their source
// offsets in srcs).
type rawItem struct {
	b         *transport.Batch
	part, idx int // in the PartitionBatches list, and in its Batches
	src       int64
	srcs      []int64
	n         int64
	ts        int64
}

// writeRaw writes the batches of a passthrough leg as Kafka record batches
// through s.raw, in the open transaction: source batches as they came, and
// records (batches that were not forwarded raw, or raw ones the
// destination refused before, decoded) in batches built here. Records the
// destination will never accept go to the dead-letter topic through the
// client, as on other legs. It returns the spans in source order.
func (s *sink) writeRaw(ctx context.Context, batches []*transport.Batch, topics map[string]*destTopic, res *txnResult, perr *produceErr) ([]span, error) {
	w := &rawWriter{s: s, ctx: ctx, res: res, perr: perr, partOf: map[tp]int{}, groups: map[tp]*rawBuilder{}}
	// Kafka takes one batch per partition in a produce request, so a
	// transaction costs as many produce round trips as its partition with
	// the most batches. When those round trips are slow (acks=all on a
	// busy cluster), runs of small batches are merged into bigger ones.
	counts := map[tp]int{}
	for _, b := range batches {
		if b.Kafka != nil {
			kraw.Split(b.Kafka, func(kraw.Header, []byte) error { counts[tp{Topic: b.Topic, Partition: b.Partition}]++; return nil })
		}
	}
	// Merging costs CPU: only while the process has CPUs to spare.
	slow := s.tuning.MergeAlways || s.rounds.merge()
	for _, b := range batches {
		dt := topics[b.Topic]
		if dt == nil {
			return nil, fmt.Errorf("topic %q was not announced", b.Topic)
		}
		if err := w.batch(b, dt, slow && counts[tp{Topic: b.Topic, Partition: b.Partition}] > mergeRounds); err != nil {
			return nil, err
		}
	}
	for _, k := range w.groupOrder {
		if err := w.flush(k); err != nil {
			return nil, err
		}
	}
	if err := w.produce(slow); err != nil {
		return nil, err
	}
	return w.spans(), nil
}

// rawWriter gathers one transaction's Kafka batches for writeRaw.
type rawWriter struct {
	s    *sink
	ctx  context.Context
	res  *txnResult
	perr *produceErr

	parts   []kraw.PartitionBatches
	partOf  map[tp]int // by destination topic and partition
	items   []rawItem
	entries []span // data spans have n == 0 until produced and point at items by dst
	// Records are built into batches per partition, up to the
	// destination's limit; a partition's batch being built is flushed
	// before anything else of that partition is added.
	groups     map[tp]*rawBuilder
	groupOrder []tp
}

// rawBuilder is a batch being built from records of one partition.
type rawBuilder struct {
	b     *transport.Batch
	dt    *destTopic
	recs  []kgo.Record
	srcs  []int64
	bytes int
}

func (w *rawWriter) add(b *transport.Batch, dt *destTopic, batch []byte, it rawItem) {
	k := tp{Topic: dt.name, Partition: b.Partition}
	pi, ok := w.partOf[k]
	if !ok {
		pi = len(w.parts)
		w.partOf[k] = pi
		w.parts = append(w.parts, kraw.PartitionBatches{Topic: dt.name, Partition: b.Partition})
	}
	it.b, it.part, it.idx = b, pi, len(w.parts[pi].Batches)
	w.parts[pi].Batches = append(w.parts[pi].Batches, batch)
	w.entries = append(w.entries, span{batch: b, dst: int64(len(w.items))}) // dst: item index for now
	w.items = append(w.items, it)
}

func (w *rawWriter) flush(k tp) error {
	g := w.groups[k]
	if g == nil || len(g.recs) == 0 {
		return nil
	}
	batch, err := kraw.BuildBatch(nil, g.recs, w.s.cmp)
	if err != nil {
		return fmt.Errorf("build batch for %s/%d: %w", g.dt.name, k.Partition, err)
	}
	w.add(g.b, g.dt, batch, rawItem{srcs: g.srcs, n: int64(len(g.recs)), ts: g.recs[len(g.recs)-1].Timestamp.UnixMilli()})
	g.recs, g.srcs, g.bytes = nil, nil, 0
	return nil
}

// record adds one source record to its partition's batch being built, or
// dead-letters it; solo records go in a batch of their own, so that a
// refusal names the record.
func (w *rawWriter) record(b *transport.Batch, dt *destTopic, r *transport.Record, solo bool) error {
	s := w.s
	k := tp{Topic: b.Topic, Partition: b.Partition}
	size := recordSize(r)
	w.res.rawBytes += size
	if ref := s.refusal(k, r, size, dt); ref.kind != "" {
		if err := w.flush(k); err != nil {
			return err
		}
		dl := s.deadLetter(b, r, size, ref)
		s.cl.Produce(w.ctx, dl, w.perr.promise(nil))
		w.entries = append(w.entries, span{batch: b, src: r.Offset, n: 1, dlq: dl, dst: -1})
		return nil
	}
	limit := 1<<20 - kraw.HeaderSize
	if lim := s.maxBytes(dt); lim > 0 {
		limit = min(limit, lim-kraw.HeaderSize)
	}
	solo = solo || s.unraw[k][r.Offset]
	g := w.groups[k]
	if g == nil {
		g = &rawBuilder{}
		w.groups[k] = g
		w.groupOrder = append(w.groupOrder, k)
	}
	if len(g.recs) > 0 && (solo || g.bytes+size+recordOverhead > limit) {
		if err := w.flush(k); err != nil {
			return err
		}
	}
	g.b, g.dt = b, dt
	kr := kgo.Record{Key: r.Key, Value: r.Value, Timestamp: time.UnixMilli(r.Timestamp)}
	if len(r.Headers) > 0 {
		kr.Headers = make([]kgo.RecordHeader, len(r.Headers))
		for i, h := range r.Headers {
			kr.Headers[i] = kgo.RecordHeader{Key: h.Key, Value: h.Value}
		}
	}
	g.recs, g.srcs = append(g.recs, kr), append(g.srcs, r.Offset)
	g.bytes += size + recordOverhead
	if solo {
		return w.flush(k)
	}
	return nil
}

// batch adds one transport batch: its records, or its Kafka batches as
// they are unless refused before, too big, or (merge) small enough to be
// merged with the next.
func (w *rawWriter) batch(b *transport.Batch, dt *destTopic, merge bool) error {
	s := w.s
	k := tp{Topic: b.Topic, Partition: b.Partition}
	if b.Kafka == nil {
		for i := range b.Records {
			if err := w.record(b, dt, &b.Records[i], false); err != nil {
				return err
			}
		}
		return nil
	}
	_, err := kraw.Split(b.Kafka, func(h kraw.Header, batch []byte) error {
		if _, err := s.dec.Size(batch); errors.Is(err, kraw.ErrDecompressLimit) {
			// A decompression bomb, or a batch a sender should have
			// decoded: never written, nor decompressed; dead-lettered
			// whole, so that the rest of the leg flows.
			if err := w.flush(k); err != nil {
				return err
			}
			r := &transport.Record{Offset: h.BaseOffset, Timestamp: h.MaxTimestamp}
			dl := s.deadLetter(b, r, len(batch), bombReason(h, err))
			s.cl.Produce(w.ctx, dl, w.perr.promise(nil))
			w.entries = append(w.entries, span{batch: b, src: h.BaseOffset, n: int64(h.Records), dlq: dl, dst: -1})
			return nil
		}
		refused := s.unraw[k][h.BaseOffset] || s.maxBytes(dt) > 0 && len(batch) > s.maxBytes(dt)
		if !refused && !(merge && len(batch) < mergeBelow) {
			if err := w.flush(k); err != nil {
				return err
			}
			w.res.rawBytes += len(batch)
			w.add(b, dt, batch, rawItem{src: h.BaseOffset, n: int64(h.Records), ts: h.MaxTimestamp})
			return nil
		}
		// Refused before or too big for the destination: its records
		// one by one. Or one of many small batches for a destination
		// whose produce requests are slow: merged with the next.
		recs, err := s.decodeKafka(b.Topic, b.Partition, batch)
		if err != nil {
			return err
		}
		for i := range recs {
			if err := w.record(b, dt, &recs[i], refused); err != nil {
				return err
			}
		}
		if refused {
			return w.flush(k)
		}
		return nil
	})
	return err
}

// produce sends the gathered batches and times the produce rounds; on a
// refusal as too large it marks the refused batch for the next attempt.
func (w *rawWriter) produce(merged bool) error {
	s := w.s
	t0 := time.Now()
	err := s.raw.Produce(w.ctx, w.parts)
	if rounds := maxBatches(w.parts); err == nil && rounds > 0 {
		per := time.Since(t0) / time.Duration(rounds)
		s.rounds.add(per)
		s.log.Debug("raw produce", "leg", s.leg.ID, "shard", s.shard, "rounds", rounds, "per_round", per, "merged", merged)
	}
	if err == nil {
		return nil
	}
	var pe *kraw.ProduceError
	err = fmt.Errorf("produce: %w", err)
	if kind := ""; errors.As(err, &pe) {
		if q := partitionRefusal(pe.Err); q != "" {
			for i := range w.items {
				if it := &w.items[i]; w.parts[it.part].Topic == pe.Topic && w.parts[it.part].Partition == pe.Partition {
					return &quarantineError{k: tp{Topic: it.b.Topic, Partition: it.b.Partition}, kind: q, err: err}
				}
			}
		}
		if kind = recordRefusal(pe.Err); kind == refuseTooLarge {
			s.refreshLimit(w.ctx, pe.Topic)
		}
		for i := range w.items {
			if it := &w.items[i]; kind != "" && w.parts[it.part].Topic == pe.Topic && w.parts[it.part].Partition == pe.Partition && it.idx == pe.Batch {
				s.refused(it, refusal{kind, "destination refused record: " + pe.Err.Error()})
			}
		}
	}
	return err
}

// spans are the produced spans in source order, with their destination
// offsets.
func (w *rawWriter) spans() []span {
	spans := make([]span, 0, len(w.entries))
	for _, e := range w.entries {
		if e.dlq != nil {
			spans = append(spans, e)
			continue
		}
		it := &w.items[e.dst]
		base := w.parts[it.part].Base[it.idx]
		if it.srcs == nil {
			spans = append(spans, span{batch: it.b, src: it.src, dst: base, n: it.n, ts: it.ts})
			continue
		}
		for j, src := range it.srcs {
			spans = append(spans, span{batch: it.b, src: src, dst: base + int64(j), n: 1, ts: it.ts})
		}
	}
	return spans
}

// Merging small batches: when a produce round trip takes more than
// slowRound and the CPUs are less than spareCPU busy (busyCPU once
// merging), the batches below
// mergeBelow of a partition with more than mergeRounds batches in a
// transaction are merged.
const (
	slowRound   = 2 * time.Millisecond
	spareCPU    = 0.5 // busy share of the CPUs below which merging starts
	busyCPU     = 0.9 // and above which it stops
	mergeRounds = 4
	mergeBelow  = 256 << 10
)

// roundTimes keeps the time per produce round of the last transactions.
// Their minimum is the destination's latency floor: a busy CPU makes some
// rounds slow, while a distant or replicating cluster makes all of them
// slow, and only then does merging (which costs CPU) save time.
type roundTimes struct {
	mu      sync.Mutex
	last    [4]time.Duration
	n       int
	merging bool
}

func (r *roundTimes) add(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last[r.n%len(r.last)] = d
	r.n++
}

func (r *roundTimes) slowLocked() bool {
	return r.n >= len(r.last) && slices.Min(r.last[:]) > slowRound
}

// merge decides whether the next transaction merges small batches: the
// destination is slow and the CPUs are to spare. Merging itself keeps the
// CPUs busy, so once on it stays on until they are nearly saturated
// (hysteresis), instead of flapping with every window.
func (r *roundTimes) merge() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	limit := spareCPU
	if r.merging {
		limit = busyCPU
	}
	r.merging = r.slowLocked() && processCPU.share() < limit
	return r.merging
}

func maxBatches(parts []kraw.PartitionBatches) int {
	n := 0
	for i := range parts {
		n = max(n, len(parts[i].Batches))
	}
	return n
}

// refused remembers a batch the destination refused: a source batch is
// decoded next time, a built one split into one batch per record, and a
// single record is dead-lettered.
func (s *sink) refused(it *rawItem, ref refusal) {
	k := tp{Topic: it.b.Topic, Partition: it.b.Partition}
	if it.srcs == nil || len(it.srcs) > 1 {
		if s.unraw == nil {
			s.unraw = map[tp]map[int64]bool{}
		}
		if s.unraw[k] == nil {
			s.unraw[k] = map[int64]bool{}
		}
		if it.srcs == nil {
			s.unraw[k][it.src] = true
		}
		for _, src := range it.srcs {
			s.unraw[k][src] = true
		}
		return
	}
	s.poisonRecord(k, it.srcs[0], ref)
}

// recordsOfKafka returns the records of b's Kafka batches. A batch whose
// records decompress beyond the batch limit is not decoded: it stands as
// one empty record at its base offset, poisoned with the reason, so that
// refusal dead-letters it and the rest of the leg flows.
func (s *sink) recordsOfKafka(b *transport.Batch) ([]transport.Record, error) {
	k := tp{Topic: b.Topic, Partition: b.Partition}
	var out []transport.Record
	_, err := kraw.Split(b.Kafka, func(h kraw.Header, batch []byte) error {
		if _, err := s.dec.Size(batch); errors.Is(err, kraw.ErrDecompressLimit) {
			s.poisonRecord(k, h.BaseOffset, bombReason(h, err))
			out = append(out, transport.Record{Offset: h.BaseOffset, Timestamp: h.MaxTimestamp})
			return nil
		}
		recs, err := s.decodeKafka(b.Topic, b.Partition, batch)
		out = append(out, recs...)
		return err
	})
	return out, err
}

// bombReason is the dead-letter reason of a Kafka batch over the limit.
func bombReason(h kraw.Header, err error) refusal {
	return refusal{kind: refuseOverLimit, reason: "kafka batch of " + strconv.Itoa(int(h.Records)) + " records: " + err.Error()}
}

// decodeKafka returns the records of Kafka record batches, decompressed
// within the batch limit.
func (s *sink) decodeKafka(topic string, partition int32, batches []byte) ([]transport.Record, error) {
	recs, err := s.dec.Decode(topic, partition, batches)
	if err != nil {
		return nil, fmt.Errorf("decode Kafka batches of %s/%d: %w", topic, partition, err)
	}
	out := make([]transport.Record, len(recs))
	for i, kr := range recs {
		out[i] = transport.Record{Offset: kr.Offset, Timestamp: kr.Timestamp.UnixMilli(), Key: kr.Key, Value: kr.Value}
		if len(kr.Headers) > 0 {
			out[i].Headers = make([]transport.Header, len(kr.Headers))
			for j, kh := range kr.Headers {
				out[i].Headers[j] = transport.Header{Key: kh.Key, Value: kh.Value}
			}
		}
	}
	return out, nil
}
