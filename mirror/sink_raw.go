package mirror

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
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
	var (
		parts   []kraw.PartitionBatches
		partOf  = map[tp]int{} // by destination topic and partition
		items   []rawItem
		entries []span // data spans have n == 0 until produced and point at items by dst
	)
	add := func(b *transport.Batch, dt *destTopic, batch []byte, it rawItem) {
		k := tp{dt.name, b.Partition}
		pi, ok := partOf[k]
		if !ok {
			pi = len(parts)
			partOf[k] = pi
			parts = append(parts, kraw.PartitionBatches{Topic: dt.name, Partition: b.Partition})
		}
		it.b, it.part, it.idx = b, pi, len(parts[pi].Batches)
		parts[pi].Batches = append(parts[pi].Batches, batch)
		entries = append(entries, span{batch: b, dst: int64(len(items))}) // dst: item index for now
		items = append(items, it)
	}
	var (
		group      []kgo.Record
		groupSrcs  []int64
		groupBytes int
	)
	flush := func(b *transport.Batch, dt *destTopic) error {
		if len(group) == 0 {
			return nil
		}
		batch, err := kraw.BuildBatch(nil, group, s.cmp)
		if err != nil {
			return fmt.Errorf("build batch for %s/%d: %w", dt.name, b.Partition, err)
		}
		add(b, dt, batch, rawItem{srcs: groupSrcs, n: int64(len(group)), ts: group[len(group)-1].Timestamp.UnixMilli()})
		group, groupSrcs, groupBytes = nil, nil, 0
		return nil
	}
	// record adds one source record to the batch being built, or
	// dead-letters it; solo records go in a batch of their own, so that a
	// refusal names the record.
	record := func(b *transport.Batch, dt *destTopic, r *transport.Record, solo bool) error {
		k := tp{b.Topic, b.Partition}
		size := recordSize(r)
		res.rawBytes += size
		if reason := s.refusal(k, r, size, dt); reason != "" {
			if err := flush(b, dt); err != nil {
				return err
			}
			dl := s.deadLetter(b, r, size, reason)
			s.cl.Produce(ctx, dl, perr.promise(nil))
			entries = append(entries, span{batch: b, src: r.Offset, n: 1, dlq: dl, dst: -1})
			return nil
		}
		limit := 1<<20 - kraw.HeaderSize
		if lim := s.maxBytes(dt); lim > 0 {
			limit = min(limit, lim-kraw.HeaderSize)
		}
		solo = solo || s.unraw[k][r.Offset]
		if len(group) > 0 && (solo || groupBytes+size+recordOverhead > limit) {
			if err := flush(b, dt); err != nil {
				return err
			}
		}
		kr := kgo.Record{Key: r.Key, Value: r.Value, Timestamp: time.UnixMilli(r.Timestamp)}
		if len(r.Headers) > 0 {
			kr.Headers = make([]kgo.RecordHeader, len(r.Headers))
			for i, h := range r.Headers {
				kr.Headers[i] = kgo.RecordHeader{Key: h.Key, Value: h.Value}
			}
		}
		group, groupSrcs = append(group, kr), append(groupSrcs, r.Offset)
		groupBytes += size + recordOverhead
		if solo {
			return flush(b, dt)
		}
		return nil
	}

	for _, b := range batches {
		dt := topics[b.Topic]
		if dt == nil {
			return nil, fmt.Errorf("topic %q was not announced", b.Topic)
		}
		k := tp{b.Topic, b.Partition}
		if b.Kafka == nil {
			for i := range b.Records {
				if err := record(b, dt, &b.Records[i], false); err != nil {
					return nil, err
				}
			}
			if err := flush(b, dt); err != nil {
				return nil, err
			}
			continue
		}
		_, err := kraw.Split(b.Kafka, func(h kraw.Header, batch []byte) error {
			if !s.unraw[k][h.BaseOffset] && (s.maxBytes(dt) <= 0 || len(batch) <= s.maxBytes(dt)) {
				res.rawBytes += len(batch)
				add(b, dt, batch, rawItem{src: h.BaseOffset, n: int64(h.Records), ts: h.MaxTimestamp})
				return nil
			}
			// Refused before, or too big for the destination: its
			// records one by one.
			recs, err := decodeKafka(b.Topic, b.Partition, batch)
			if err != nil {
				return err
			}
			for i := range recs {
				if err := record(b, dt, &recs[i], true); err != nil {
					return err
				}
			}
			return flush(b, dt)
		})
		if err != nil {
			return nil, err
		}
	}

	if err := s.raw.Produce(ctx, parts); err != nil {
		var pe *kraw.ProduceError
		if errors.As(err, &pe) && (errors.Is(pe.Err, kerr.MessageTooLarge) || errors.Is(pe.Err, kerr.RecordListTooLarge)) {
			s.refreshLimit(ctx, pe.Topic)
			for i := range items {
				if it := &items[i]; parts[it.part].Topic == pe.Topic && parts[it.part].Partition == pe.Partition && it.idx == pe.Batch {
					s.refused(it, "destination refused record: "+pe.Err.Error())
				}
			}
		}
		return nil, fmt.Errorf("produce: %w", err)
	}

	spans := make([]span, 0, len(entries))
	for _, e := range entries {
		if e.dlq != nil {
			spans = append(spans, e)
			continue
		}
		it := &items[e.dst]
		base := parts[it.part].Base[it.idx]
		if it.srcs == nil {
			spans = append(spans, span{batch: it.b, src: it.src, dst: base, n: it.n, ts: it.ts})
			continue
		}
		for j, src := range it.srcs {
			spans = append(spans, span{batch: it.b, src: src, dst: base + int64(j), n: 1, ts: it.ts})
		}
	}
	return spans, nil
}

// refused remembers a batch the destination refused: a source batch is
// decoded next time, a built one split into one batch per record, and a
// single record is dead-lettered.
func (s *sink) refused(it *rawItem, reason string) {
	k := tp{it.b.Topic, it.b.Partition}
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
	if s.poison == nil {
		s.poison = map[tp]map[int64]string{}
	}
	if s.poison[k] == nil {
		s.poison[k] = map[int64]string{}
	}
	s.poison[k][it.srcs[0]] = reason
}

// decodeKafka returns the records of Kafka record batches.
func decodeKafka(topic string, partition int32, batches []byte) ([]transport.Record, error) {
	recs, err := kraw.Decode(topic, partition, batches)
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
