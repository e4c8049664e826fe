package mirror

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/kraw"
	"github.com/meridian-gw/meridian/mirror/progress"
	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/transport"
)

// DeadLetterTopic receives, at the destination, a record for every source
// record the destination will never accept (too large, say). Its value is
// empty; headers say why and where it came from.
const DeadLetterTopic = "meridian.dead-letters"

// Headers of a dead-letter record.
const (
	HeaderDLReason    = "meridian.dl.reason"
	HeaderDLLeg       = "meridian.dl.leg"
	HeaderDLTopic     = "meridian.dl.source-topic"
	HeaderDLPartition = "meridian.dl.source-partition"
	HeaderDLOffset    = "meridian.dl.source-offset"
	HeaderDLSize      = "meridian.dl.size"
	// HeaderDLKind is the refusal's kind, the reason label of
	// meridian_dead_letters_total: too-large, invalid-timestamp,
	// invalid-record, corrupt.
	HeaderDLKind = "meridian.dl.kind"
	// HeaderDLTimestamp is the source record's timestamp (Unix ms); the
	// dead letter's own is the same, or the time it was written when the
	// source's was refused.
	HeaderDLTimestamp = "meridian.dl.source-timestamp"
)

// recordOverhead approximates a record's framing inside a Kafka batch.
const recordOverhead = 64

// destTopic is what the sink knows of a destination topic.
type destTopic struct {
	name       string
	partitions int32
	maxBytes   int // largest record the topic accepts; 0 = unknown
}

// sink writes one shard of a leg's partitions to the destination cluster in
// transactions that also commit their progress. It is used by one goroutine
// at a time.
type sink struct {
	leg   *routing.Leg
	shard int
	opts  []kgo.Opt // destination cluster
	// tuning is the engine's (TailRanges, PruneEvery, MergeAlways).
	tuning Tuning
	log    *slog.Logger
	m      *metrics

	cl *kgo.Client // transactional producer, nil until open
	// raw writes the data of a passthrough leg as Kafka record batches in
	// cl's transactions (nil: records through cl). Every data partition of
	// such a leg goes through raw, so that one producer numbers its
	// sequences.
	raw *kraw.TxnProducer
	cmp kgo.Compressor // for the batches raw builds from records
	// dec decompresses (and measures) Kafka batches a peer passed
	// through, bounded by the engine's MaxBatchBytes; it must be set.
	dec *kraw.Decompressor
	// store is the leg's progress store; it must be set before open.
	store *progress.Store
	// writer writes a destination that is not Kafka (endpoint_sink.go)
	// instead of cl; nil for Kafka.
	writer    Writer
	committed map[tp]*progress.Record
	// poison holds source records the destination refused, by partition and
	// offset, with the reason; the next attempt dead-letters them.
	poison map[tp]map[int64]refusal
	// solo holds the partitions whose records the next attempt produces
	// one per batch: the destination refused a batch of several of them
	// for good (recordRefusal), and only a batch of one names the record.
	solo map[tp]bool
	// unraw holds, by partition, the source base offsets of Kafka batches
	// the destination refused whole; the next attempt decodes them and
	// writes their records one per batch.
	unraw map[tp]map[int64]bool
	// limits are destination topics' max.message.bytes as read after the
	// destination refused a batch: lower than when the topic was
	// prepared, if someone lowered it since.
	limits map[string]int
	// rounds times raw produce rounds, to decide whether to merge
	// batches (writeRaw); the leg's shards share it.
	rounds *roundTimes
	// segs are the live offset-map segments of the shard's partitions, in
	// order; lastPrune is when prune last looked at them.
	segs      map[tp][]progress.SegRef
	lastPrune time.Time

	// Arrays reused by write from one transaction to the next.
	slab []kgo.Record
	recs []pending
	hdrs []kgo.RecordHeader
}

// open (re)creates the transactional producer, which fences any previous
// instance of the shard and aborts the transaction it left open, and then
// commits what a crashed broker left hanging (commitHanging). The caller
// then loads the committed progress (after every shard is open), and names
// the destination in an error (inLeg.openErr). topics are the destination
// topics the leg knows besides those of the shard's committed progress.
func (s *sink) open(ctx context.Context, topics []string) error {
	s.close()
	txnID := progress.TransactionalID(s.leg.ID, s.shard)
	cl, err := s.newProducer(ctx, txnID, s.passthrough())
	if err != nil {
		return err
	}
	if resolved, err := s.commitHanging(ctx, cl, txnID, topics); err != nil {
		cl.Close()
		return err
	} else if resolved {
		// The resolver's InitProducerID fenced cl: start again, once the
		// coordinator has written the markers (InitProducerID waits).
		cl.Close()
		if cl, err = s.newProducer(ctx, txnID, s.passthrough()); err != nil {
			return err
		}
	}
	s.cl = cl
	if s.passthrough() {
		s.raw = kraw.NewTxnProducer(cl, txnID)
		if s.cmp == nil {
			if s.cmp, err = kgo.DefaultCompressor(kgo.SnappyCompression()); err != nil {
				return err
			}
		}
	}
	return nil
}

// newProducer returns an initialised transactional client of txnID
// (pinned to the requests before KIP-890 part 2 when pinned is set).
func (s *sink) newProducer(ctx context.Context, txnID string, pinned bool) (*kgo.Client, error) {
	opts := append([]kgo.Opt{}, s.opts...)
	if lim := s.minLimit(); lim > 0 {
		// A destination lowered a topic's limit: batches fit it.
		opts = append(opts, kgo.ProducerBatchMaxBytes(int32(lim)))
	}
	if pinned {
		opts = append(opts, kraw.ClientOpts()...)
	}
	cl, err := kgo.NewClient(append(opts,
		kgo.TransactionalID(txnID),
		kgo.TransactionTimeout(60*time.Second),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(0),
		kgo.MaxBufferedBytes(256<<20),
		// A transaction holds up to maxTxnBytes; buffering must never make
		// Produce wait inside one (the default is 10,000 records).
		kgo.MaxBufferedRecords(1<<20),
		kgo.RecordRetries(8),
		kgo.UnknownTopicRetries(8),
		kgo.MetadataMinAge(250*time.Millisecond), // new topics and partitions are seen quickly
	)...)
	if err != nil {
		return nil, err
	}
	if _, _, err := cl.ProducerID(ctx); err != nil {
		cl.Close()
		// The transactional ID is the resource a broker's authorizer
		// refuses (TRANSACTIONAL_ID_AUTHORIZATION_FAILED names none).
		return nil, fmt.Errorf("init transactional producer %q: %w", txnID, err)
	}
	return cl, nil
}

// commitHanging finds the transactions of the shard's producer ID that
// hang in the progress topic or the leg's destination topics (see
// kraw.FindHanging: a broker that crashed and came back without a leader
// for a moment skips their markers) and commits them, so that the progress
// the caller loads next is what the next commit would make true anyway.
// Without it, the progress of a hanging transaction is invisible, its
// records are written again, and the next commit commits both copies. It
// reports whether it committed any.
func (s *sink) commitHanging(ctx context.Context, cl *kgo.Client, txnID string, topics []string) (bool, error) {
	id, _, err := cl.ProducerID(ctx)
	if err != nil {
		return false, fmt.Errorf("init transactional producer %q: %w", txnID, err)
	}
	names := map[string]bool{progress.Topic: true}
	for _, t := range topics {
		names[t] = true
	}
	for _, p := range s.committed {
		names[p.DestTopic] = true
	}
	list := make([]string, 0, len(names))
	for t := range names {
		list = append(list, t)
	}
	slices.Sort(list)
	hanging, skipped, err := kraw.FindHanging(ctx, cl, id, list)
	if err != nil {
		// Brokers without DescribeProducers (before 2.8), or a principal
		// that may not describe: nothing to find, as before.
		s.log.Debug("hanging transactions not checked", "leg", s.leg.ID, "shard", s.shard, "err", err)
		return false, nil
	}
	if len(skipped) > 0 {
		s.log.Debug("hanging transactions not checked in some partitions", "leg", s.leg.ID, "shard", s.shard, "partitions", skipped)
	}
	if len(hanging) == 0 {
		return false, nil
	}
	rc, err := s.newProducer(ctx, txnID, true)
	if err != nil {
		return false, err
	}
	defer rc.Close()
	if err := kraw.CommitHanging(ctx, rc, txnID, hanging); err != nil {
		return false, fmt.Errorf("commit hanging transaction of %q in %v: %w", txnID, hanging, err)
	}
	s.m.hangingTxns.WithLabelValues(s.leg.ID).Inc()
	s.log.Warn("committed a transaction the destination left hanging (its markers were skipped while a partition had no leader)",
		"leg", s.leg.ID, "shard", s.shard, "transactional_id", txnID, "partitions", hanging)
	return true, nil
}

// committedNext is partition k's committed next source offset (ok false:
// nothing committed).
func (s *sink) committedNext(k tp) (int64, bool) {
	if p := s.committed[k]; p != nil {
		return p.Next, true
	}
	return 0, false
}

// passthrough reports whether the leg's link forwards Kafka batches.
func (s *sink) passthrough() bool { return s.leg.Link != nil && s.leg.Link.Passthrough }

func (s *sink) close() {
	if s.cl != nil {
		s.cl.Close()
		s.cl, s.raw = nil, nil
	}
	if s.writer != nil {
		if err := s.writer.Close(); err != nil {
			s.log.Warn("close destination writer", "leg", s.leg.ID, "shard", s.shard, "err", err)
		}
		s.writer = nil
	}
}

// endTxn ends the open transaction.
func (s *sink) endTxn(ctx context.Context, commit kgo.TransactionEndTry) error {
	if s.raw != nil {
		return s.raw.EndTransaction(ctx, commit)
	}
	return s.cl.EndTransaction(ctx, commit)
}

// pending is one source record in a transaction and where it went.
type pending struct {
	src   int64
	rec   *kgo.Record
	dlq   bool
	batch *transport.Batch
}

// txnResult is what a committed transaction wrote.
type txnResult struct {
	records, rawBytes, deadLetters int
	progress                       []*progress.Record // committed, one per partition written
	segments                       []*progress.Record // offset-map segments sealed
	pruned                         map[tp]int64       // partitions pruned, with their destination log start
}

// write commits batches, which must be in order per partition and must
// follow the committed progress, in one transaction with their progress
// records. On error nothing is committed; the caller reopens the sink.
func (s *sink) write(ctx context.Context, batches []*transport.Batch, topics map[string]*destTopic) (txnResult, error) {
	if s.writer != nil {
		return s.writeExternal(ctx, batches)
	}
	var res txnResult
	t0 := time.Now()
	if err := s.cl.BeginTransaction(); err != nil {
		return res, fmt.Errorf("begin transaction: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			_ = s.cl.AbortBufferedRecords(actx)
			_ = s.endTxn(actx, kgo.TryAbort)
			cancel()
			s.m.txns.WithLabelValues(s.leg.ID, "abort").Inc()
		}
		// franz-go is done with the records: drop references to this
		// transaction's buffers from the reused arrays.
		clear(s.slab)
		clear(s.recs[:cap(s.recs)])
		clear(s.hdrs)
	}()

	var (
		perr  produceErr
		spans []span
		err   error
	)
	write := s.writeRecords
	if s.raw != nil {
		write = s.writeRaw
	}
	if spans, err = write(ctx, batches, topics, &res, &perr); err != nil {
		return res, err
	}
	tBuilt := time.Now()
	if err := s.cl.Flush(ctx); err != nil {
		return res, fmt.Errorf("flush: %w", err)
	}
	tData := time.Now()
	if err, p := perr.get(); err != nil {
		if kind := recordRefusal(err); p != nil && !p.dlq && kind != "" && (kind != refuseTooLarge || !s.refreshLimit(ctx, p.rec.Topic)) {
			// Not a lowered limit: a record of the batch is refused.
			k := tp{Topic: p.batch.Topic, Partition: p.batch.Partition}
			if perr.alone() || s.solo[k] {
				s.poisonRecord(k, p.src, refusal{kind, "destination refused record: " + err.Error()})
			} else {
				s.isolate(k)
			}
		}
		if p == nil {
			return res, fmt.Errorf("produce: %w", err)
		}
		err = fmt.Errorf("produce to %s/%d: %w", p.rec.Topic, p.rec.Partition, err)
		if kind := partitionRefusal(err); kind != "" && !p.dlq {
			return res, &quarantineError{k: tp{Topic: p.batch.Topic, Partition: p.batch.Partition}, kind: kind, err: err}
		}
		return res, err
	}
	for i := range spans {
		// Records produced through the client learn their offsets once
		// flushed.
		if sp := &spans[i]; sp.rec != nil {
			sp.dst, sp.rec = sp.rec.Offset, nil
		}
	}

	// Offset maps and progress per partition, in the same transaction.
	recs := s.progressOf(spans, batches, topics, &res)
	sealed := s.produceProgressRecords(ctx, recs, &res, &perr)
	pruned := s.prune(ctx, &perr)
	if err := s.cl.Flush(ctx); err != nil {
		return res, fmt.Errorf("flush progress: %w", err)
	}
	if err, _ := perr.get(); err != nil {
		return res, fmt.Errorf("produce progress: %w", err)
	}
	tProg := time.Now()
	if err := s.endTxn(ctx, kgo.TryCommit); err != nil {
		return res, fmt.Errorf("commit transaction: %w", err)
	}
	s.log.Debug("transaction committed", "leg", s.leg.ID, "records", res.records, "bytes", res.rawBytes,
		"build", tBuilt.Sub(t0), "data", tData.Sub(tBuilt), "progress", tProg.Sub(tData), "commit", time.Since(tProg))
	committed = true
	s.m.txns.WithLabelValues(s.leg.ID, "commit").Inc()
	s.segsCommitted(sealed, res.segments, pruned)
	res.pruned = pruned
	for _, p := range recs {
		k := p.TP()
		s.committed[k] = p
		res.progress = append(res.progress, p)
		delete(s.solo, k)
		if pm := s.poison[k]; pm != nil {
			for off := range pm {
				if off < p.Next {
					delete(pm, off)
				}
			}
		}
	}
	return res, nil
}

// progressOf builds the progress record of each partition the spans and
// batches wrote, in the order they first appear, with the ranges of this
// transaction only; it counts records and dead letters in res.
func (s *sink) progressOf(spans []span, batches []*transport.Batch, topics map[string]*destTopic, res *txnResult) []*progress.Record {
	accs := map[tp]*progress.Record{}
	var out []*progress.Record
	get := func(b *transport.Batch) *progress.Record {
		k := tp{Topic: b.Topic, Partition: b.Partition}
		p := accs[k]
		if p == nil {
			p = &progress.Record{V: progress.Version, Leg: s.leg.ID, Topic: b.Topic, Partition: b.Partition, DestTopic: topics[b.Topic].name}
			accs[k] = p
			out = append(out, p)
		}
		return p
	}
	for i := range spans {
		sp := &spans[i]
		b := sp.batch
		p := get(b)
		if sp.dlq != nil {
			res.deadLetters++
			s.m.deadLetters.WithLabelValues(s.leg.ID, headerValue(sp.dlq, HeaderDLKind)).Inc()
			s.log.Warn("record dead-lettered", "leg", s.leg.ID, "topic", b.Topic, "partition", b.Partition,
				"offset", sp.src, "reason", headerValue(sp.dlq, HeaderDLReason))
			continue
		}
		res.records += int(sp.n)
		rs := p.Ranges
		if n := len(rs); n > 0 && rs[n-1][0]+rs[n-1][2] == sp.src && rs[n-1][1]+rs[n-1][2] == sp.dst {
			rs[n-1][2] += sp.n
		} else {
			p.Ranges = append(rs, [3]int64{sp.src, sp.dst, sp.n})
		}
		p.LastTS = sp.ts
	}
	for _, b := range batches {
		p := get(b)
		if b.NextOffset > p.Next {
			p.Next = b.NextOffset
		}
		p.HWM = b.HighWatermark
	}
	return out
}

// produceProgressRecords completes each progress record with the ranges
// since the partition's last sealed segment and produces it in the open
// transaction; past Tuning.TailRanges ranges it first seals them into the
// next segment (in res.segments). It returns the segments sealed.
func (s *sink) produceProgressRecords(ctx context.Context, recs []*progress.Record, res *txnResult, perr *produceErr) []progress.SegRef {
	now := time.Now().UnixMilli()
	var sealed []progress.SegRef
	for _, p := range recs {
		k := p.TP()
		p.At = now
		if prev := s.committed[k]; prev != nil {
			if p.LastTS == 0 {
				p.LastTS = prev.LastTS
			}
			// The progress record carries every range since the last
			// sealed segment (ProgressTopic is compacted); past
			// Tuning.TailRanges they are sealed into the next segment.
			p.Ranges, p.Seg = slices.Concat(prev.Ranges, p.Ranges), prev.Seg
		}
		if len(p.Ranges) > s.tuning.TailRanges {
			seg := &progress.Record{V: progress.Version, Kind: progress.KindSegment, Leg: s.leg.ID, Topic: k.Topic, Partition: k.Partition,
				DestTopic: p.DestTopic, Next: p.Next, Seg: p.Seg, Ranges: p.Ranges, At: now}
			s.produceProgress(ctx, progress.SegmentKey(s.leg.ID, k, seg.Seg), progress.Encode(seg), perr)
			res.segments = append(res.segments, seg)
			last := seg.Ranges[len(seg.Ranges)-1]
			sealed = append(sealed, progress.SegRef{Seg: seg.Seg, DstEnd: last[1] + last[2]})
			p.Ranges, p.Seg = nil, p.Seg+1
		}
		s.produceProgress(ctx, progress.Key(s.leg.ID, k), progress.Encode(p), perr)
	}
	return sealed
}

// writeRecords produces the records of batches through the client, in the
// open transaction, and returns their spans; a span's destination offset is
// known once the client is flushed (span.rec).
func (s *sink) writeRecords(ctx context.Context, batches []*transport.Batch, topics map[string]*destTopic, res *txnResult, perr *produceErr) ([]span, error) {
	cloned := false
	for i, b := range batches {
		if b.Kafka == nil {
			continue
		}
		// Kafka batches on a leg this gateway does not pass through (the
		// peer's topology says passthrough, this one does not): decode
		// them, never skip them.
		recs, err := s.recordsOfKafka(b)
		if err != nil {
			return nil, err
		}
		if !cloned {
			batches, cloned = slices.Clone(batches), true // the caller's stays as it is
		}
		nb := *b
		nb.Kafka, nb.Records = nil, recs
		batches[i] = &nb
	}
	n, nh := 0, 0
	for _, b := range batches {
		n += len(b.Records)
		for i := range b.Records {
			nh += len(b.Records[i].Headers)
		}
	}
	// The record, pending and header arrays are reused from one transaction
	// to the next: franz-go is done with them once the transaction ends.
	if cap(s.slab) < n {
		s.slab, s.recs = make([]kgo.Record, n), make([]pending, 0, n)
	}
	if cap(s.hdrs) < nh {
		s.hdrs = make([]kgo.RecordHeader, nh)
	}
	slab, hdrs := s.slab[:n], s.hdrs[:0:nh]
	recs := s.recs[:0]
	for _, b := range batches {
		dt := topics[b.Topic]
		if dt == nil {
			return nil, fmt.Errorf("topic %q was not announced", b.Topic)
		}
		k := tp{Topic: b.Topic, Partition: b.Partition}
		for i := range b.Records {
			r := &b.Records[i]
			size := recordSize(r)
			res.rawBytes += size
			if ref := s.refusal(k, r, size, dt); ref.kind != "" {
				recs = append(recs, pending{src: r.Offset, rec: s.deadLetter(b, r, size, ref), dlq: true, batch: b})
				continue
			}
			kr := &slab[len(recs)]
			*kr = kgo.Record{
				Topic: dt.name, Partition: b.Partition,
				Key: r.Key, Value: r.Value,
				Timestamp: time.UnixMilli(r.Timestamp),
			}
			if len(r.Headers) > 0 {
				start := len(hdrs)
				for _, h := range r.Headers {
					hdrs = append(hdrs, kgo.RecordHeader{Key: h.Key, Value: h.Value})
				}
				kr.Headers = hdrs[start:len(hdrs):len(hdrs)]
			}
			recs = append(recs, pending{src: r.Offset, rec: kr, batch: b})
		}
	}
	// recs is complete: promises index into it from here on.
	promise := perr.promise(recs)
	spans := make([]span, len(recs))
	for i := range recs {
		pr := &recs[i]
		s.cl.Produce(ctx, pr.rec, promise)
		spans[i] = span{batch: pr.batch, src: pr.src, n: 1, ts: pr.rec.Timestamp.UnixMilli()}
		if pr.dlq {
			spans[i].dlq = pr.rec
			continue
		}
		spans[i].rec = pr.rec
		if s.solo[tp{Topic: pr.batch.Topic, Partition: pr.batch.Partition}] {
			// One record per produce batch, so that a refusal names it;
			// the first refusal ends the attempt.
			if err := s.cl.Flush(ctx); err != nil {
				return nil, fmt.Errorf("flush: %w", err)
			}
			if err, _ := perr.get(); err != nil {
				return spans[:i+1], nil
			}
		}
	}
	return spans, nil
}

// refusal says why the destination will never accept record r of partition
// k (kind "": it will).
func (s *sink) refusal(k tp, r *transport.Record, size int, dt *destTopic) refusal {
	if ref, ok := s.poison[k][r.Offset]; ok {
		return ref
	}
	if lim := s.maxBytes(dt); lim > 0 && size+recordOverhead > lim {
		return refusal{refuseTooLarge, "record of " + strconv.Itoa(size) + " bytes exceeds destination max.message.bytes " + strconv.Itoa(lim)}
	}
	return refusal{}
}

// maxBytes is the largest batch the destination topic accepts (0: unknown).
func (s *sink) maxBytes(dt *destTopic) int {
	if lim, ok := s.limits[dt.name]; ok && (dt.maxBytes <= 0 || lim < dt.maxBytes) {
		return lim
	}
	return dt.maxBytes
}

func (s *sink) minLimit() int {
	m := 0
	for _, lim := range s.limits {
		if m == 0 || lim < m {
			m = lim
		}
	}
	return m
}

// refreshLimit reads a destination topic's max.message.bytes after the
// destination refused a batch as too large, and reports whether it is lower
// than what the sink used: then the refusal says nothing about any one
// record, and the next attempt builds batches that fit.
func (s *sink) refreshLimit(ctx context.Context, topic string) bool {
	rcs, err := kadm.NewClient(s.cl).DescribeTopicConfigs(ctx, topic)
	if err != nil {
		s.log.Warn("read destination topic limit", "leg", s.leg.ID, "topic", topic, "err", err)
		return false
	}
	rc, err := rcs.On(topic, nil)
	if err != nil || rc.Err != nil {
		s.log.Warn("read destination topic limit", "leg", s.leg.ID, "topic", topic, "err", errors.Join(err, rc.Err))
		return false
	}
	for _, c := range rc.Configs {
		if c.Key != "max.message.bytes" || c.Value == nil {
			continue
		}
		lim, err := strconv.Atoi(*c.Value)
		if err != nil || lim <= 0 {
			return false
		}
		if old, ok := s.limits[topic]; ok && lim >= old {
			return false
		}
		if s.limits == nil {
			s.limits = map[string]int{}
		}
		s.limits[topic] = lim
		s.log.Warn("destination topic limit is lower than when the topic was prepared", "leg", s.leg.ID, "topic", topic, "max_message_bytes", lim)
		return true
	}
	return false
}

// span is what a transaction wrote of n source records at consecutive
// offsets from src: destination offsets from dst, the last one's timestamp
// ts; or, with dlq set, one record dead-lettered instead.
type span struct {
	batch    *transport.Batch
	src, dst int64
	n        int64
	ts       int64
	dlq      *kgo.Record
	rec      *kgo.Record // produced through the client: dst is its offset once flushed
}

// produceErr keeps the first produce error of a transaction and the record it
// belongs to; promises run on franz-go's goroutines.
type produceErr struct {
	mu  sync.Mutex
	err error
	p   *pending
	n   int // records of p's partition that failed
}

// promise returns one promise for all of recs (nil for records not in a
// pending list); on error it finds the failed record's entry.
func (e *produceErr) promise(recs []pending) func(*kgo.Record, error) {
	return func(r *kgo.Record, err error) {
		if err == nil {
			return
		}
		var p *pending
		for i := range recs { // error path only
			if recs[i].rec == r {
				p = &recs[i]
				break
			}
		}
		e.mu.Lock()
		if e.err == nil {
			e.err, e.p = err, p
		}
		if p != nil && e.p != nil && p.batch.Topic == e.p.batch.Topic && p.batch.Partition == e.p.batch.Partition {
			e.n++
		}
		e.mu.Unlock()
	}
}

// alone reports whether the first failed record was the only one of its
// partition to fail: then the refusal names it.
func (e *produceErr) alone() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n == 1
}

func (e *produceErr) get() (error, *pending) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err, e.p
}

func (s *sink) deadLetter(b *transport.Batch, r *transport.Record, size int, ref refusal) *kgo.Record {
	ts := time.UnixMilli(r.Timestamp)
	if ref.kind == refuseTimestamp {
		ts = time.Now() // the destination would refuse the dead letter too
	}
	return &kgo.Record{
		Topic: DeadLetterTopic, Partition: 0, Key: r.Key,
		Timestamp: ts,
		Headers: []kgo.RecordHeader{
			{Key: HeaderDLReason, Value: []byte(ref.reason)},
			{Key: HeaderDLKind, Value: []byte(ref.kind)},
			{Key: HeaderDLLeg, Value: []byte(s.leg.ID)},
			{Key: HeaderDLTopic, Value: []byte(b.Topic)},
			{Key: HeaderDLPartition, Value: []byte(strconv.Itoa(int(b.Partition)))},
			{Key: HeaderDLOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
			{Key: HeaderDLSize, Value: []byte(strconv.Itoa(size))},
			{Key: HeaderDLTimestamp, Value: []byte(strconv.FormatInt(r.Timestamp, 10))},
		},
	}
}

func headerValue(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func recordSize(r *transport.Record) int {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// prune tombstones, in the open transaction, the live segments whose
// destination records retention has deleted, at most every Tuning.PruneEvery. It
// returns the destination log start of each partition it pruned.
func (s *sink) prune(ctx context.Context, perr *produceErr) map[tp]int64 {
	if time.Since(s.lastPrune) < s.tuning.PruneEvery || len(s.segs) == 0 {
		return nil
	}
	s.lastPrune = time.Now()
	dest := map[string]tp{} // destination topic → a source partition of it
	var topics []string
	for k := range s.segs {
		if p := s.committed[k]; p != nil {
			if _, ok := dest[p.DestTopic]; !ok {
				topics = append(topics, p.DestTopic)
			}
			dest[p.DestTopic] = k
		}
	}
	starts, err := kadm.NewClient(s.cl).ListStartOffsets(ctx, topics...)
	if err != nil {
		s.log.Debug("offset-map pruning: list start offsets", "leg", s.leg.ID, "err", err)
		return nil
	}
	var pruned map[tp]int64
	for k, refs := range s.segs {
		p := s.committed[k]
		if p == nil {
			continue
		}
		o, ok := starts.Lookup(p.DestTopic, k.Partition)
		if !ok || o.Err != nil {
			continue
		}
		for _, r := range refs {
			if r.DstEnd > o.Offset {
				break
			}
			s.produceProgress(ctx, progress.SegmentKey(s.leg.ID, k, r.Seg), nil, perr)
			if pruned == nil {
				pruned = map[tp]int64{}
			}
			pruned[k] = o.Offset
		}
	}
	return pruned
}

// segsCommitted updates the live segments after a commit.
func (s *sink) segsCommitted(sealed []progress.SegRef, segs []*progress.Record, pruned map[tp]int64) {
	if s.segs == nil {
		s.segs = map[tp][]progress.SegRef{}
	}
	for k, start := range pruned {
		refs := s.segs[k]
		i := 0
		for i < len(refs) && refs[i].DstEnd <= start {
			i++
		}
		s.segs[k] = refs[i:]
		s.m.segments.WithLabelValues(s.leg.ID, "pruned").Add(float64(i))
	}
	for i, ref := range sealed {
		k := tp{Topic: segs[i].Topic, Partition: segs[i].Partition}
		s.segs[k] = append(s.segs[k], ref)
		s.m.segments.WithLabelValues(s.leg.ID, "sealed").Inc()
	}
}

func (s *sink) produceProgress(ctx context.Context, key, value []byte, perr *produceErr) {
	s.cl.Produce(ctx, &kgo.Record{Topic: ProgressTopic, Partition: s.store.PartitionOf(key), Key: key, Value: value}, perr.promise(nil))
}
