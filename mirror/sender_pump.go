package mirror

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/kraw"
	"github.com/meridian-gw/meridian/transport"
)

// legRunner feeds one leg over one session. Each Resume restarts its source
// at the receiver's committed positions.
type legRunner struct {
	out      *outLeg
	p        *outPeer
	conn     transport.Conn
	cr       *credit
	maxBatch int64                  // target size of a batch's record block
	maxFrame int64                  // the receiver's limit on it
	resume   chan *transport.Resume // nil: the leg is fenced, stop
	// fit measures what a source batch decompresses to, against maxFrame
	// (forwardable); unpack decodes the batches that do not fit.
	fit, unpack *kraw.Decompressor
	// writers recognises Meridian's sinks at the source (loops.go): set
	// by each pump before its pipelines start; nil when the leg is on no
	// route cycle.
	writers *writerCheck
	// share is the session's membership of the leg's share group
	// (sender_share.go); nil when the leg is not shared on this session.
	share *shareGroup

	// acks tells an endpoint source (not Kafka) what its acknowledged
	// batches committed (endpoint.go); unused for Kafka sources.
	acks endpointAcks

	mu    sync.Mutex
	ready map[string]chan string // topic → TopicReady error ("" = ok)
}

func (lr *legRunner) topicReady(f *transport.TopicReady) {
	lr.mu.Lock()
	ch := lr.ready[f.Name]
	delete(lr.ready, f.Name)
	lr.mu.Unlock()
	if ch != nil {
		ch <- f.Err
	}
}

func (lr *legRunner) run(ctx context.Context) {
	// The current pump, restarted by every Resume; stop waits for it.
	var (
		stopPump = func() {}
	)
	defer func() { stopPump() }()
	if lr.share != nil {
		lr.out.share.Store(lr.share)
		defer lr.out.share.CompareAndSwap(lr.share, nil)
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Go(func() {
			if err := lr.share.run(ctx); err != nil && ctx.Err() == nil {
				lr.p.log.Warn("leg share group stopped", "leg", lr.out.leg.ID, "err", err)
				lr.out.stats.setErr(err)
				lr.conn.Close(fmt.Errorf("leg %s: %w", lr.out.leg.ID, err))
			}
		})
	}
	for {
		select {
		case <-ctx.Done():
			return
		case rs := <-lr.resume:
			stopPump()
			lr.cr.releaseLeg(lr.out.leg.ID)
			if rs == nil {
				continue // fenced: no pump until a Resume
			}
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				if err := lr.pump(rctx, rs); err != nil && rctx.Err() == nil {
					lr.p.log.Warn("leg source stopped", "leg", lr.out.leg.ID, "err", err)
					lr.out.stats.setErr(err)
					lr.conn.Close(fmt.Errorf("leg %s: %w", lr.out.leg.ID, err))
				}
			}()
			stopPump = func() { cancel(); <-done }
		}
	}
}

// pump reads the leg's source from the positions of rs and sends batches
// until ctx ends.
//
// The leg's partitions are dealt round-robin, as discovery finds them, to
// pipelines: each has its own source client and fetches, encodes,
// compresses and sends its partitions in order, so order per partition is
// kept while several fetches and sends proceed at once (a franz-go client
// keeps one fetch per broker in flight, which alone would put the fetch on
// the critical path).
func (lr *legRunner) pump(ctx context.Context, rs *transport.Resume) error {
	leg := lr.out.leg
	if leg.From.Kind != "" && leg.From.Kind != "kafka" {
		return lr.pumpEndpoint(ctx, rs)
	}
	opts, err := lr.p.e.opts.ClusterOpts(leg.From)
	if err != nil {
		return err
	}
	if lr.passthrough() {
		return lr.pumpRaw(ctx, rs, opts)
	}
	reset := kgo.NewOffset().AtStart()
	if leg.StartAtLatest() {
		reset = kgo.NewOffset().AtEnd()
	}
	clients := make([]*kgo.Client, pipelines)
	defer func() {
		for _, cl := range clients {
			if cl != nil {
				cl.Close()
			}
		}
	}()
	for i := range clients {
		if clients[i], err = kgo.NewClient(append(append([]kgo.Opt{}, opts...),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			// Transaction markers are delivered (and skipped as data) so
			// that a partition's next offset moves past them: translation
			// then knows a partition ending in a marker is fully mirrored.
			kgo.KeepControlRecords(),
			// A position retention deleted restarts at the log start,
			// whatever start_at says, and the gap is counted
			// (continueAt): never a silent skip to the end.
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			// Moderate fetches keep the pipeline moving: a 32 MiB first
			// fetch must arrive whole before the first batch can leave.
			kgo.FetchMaxBytes(8<<20),
			kgo.FetchMaxPartitionBytes(1<<20),
			kgo.FetchMaxWait(250*time.Millisecond),
			kgo.MetadataMinAge(250*time.Millisecond), // new topics and partitions are seen quickly
		)...); err != nil {
			return fmt.Errorf("source %s: %w", leg.From.Ref(), err)
		}
	}
	srcs := make([]partitionAdder, len(clients))
	runs := make([]func(context.Context) error, len(clients))
	pos := newSentPositions(rs)
	lr.writers = lr.out.writers.check(kadm.NewClient(clients[0]), opts)
	for i, cl := range clients {
		srcs[i] = kgoAdder{cl, reset}
		runs[i] = func(ctx context.Context) error { return lr.pipeline(ctx, cl, rs.Gen, pos) }
	}
	return lr.runPipelines(ctx, rs, clients[0], srcs, runs)
}

// partitionAdder starts reading a partition of the source: from offset at,
// or (at < 0) from where the leg starts (earliest or latest).
type partitionAdder interface {
	add(topic string, partition int32, at int64)
}

type kgoAdder struct {
	cl    *kgo.Client
	reset kgo.Offset
}

func (a kgoAdder) add(topic string, partition int32, at int64) {
	off := a.reset
	if at >= 0 {
		off = kgo.NewOffset().At(at)
	}
	a.cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: off}})
}

// runPipelines runs topic discovery (dealing partitions to srcs), group
// offset sync and the pipelines until ctx ends or one fails.
func (lr *legRunner) runPipelines(ctx context.Context, rs *transport.Resume, cl *kgo.Client, srcs []partitionAdder, runs []func(context.Context) error) error {
	d := &discoverer{lr: lr, srcs: srcs, adm: kadm.NewClient(cl), positions: resumePositions(rs), consumed: map[string]int32{}}
	if lr.share != nil {
		// A shared leg reads what the group assigned it when the Claim
		// this Resume answers was sent; a later change sends another.
		d.owns = lr.share.owns()
	}

	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	var (
		wg      sync.WaitGroup
		errOnce sync.Once
		pumpErr error
	)
	wg.Go(func() { d.loop(pctx) })
	if lr.out.leg.SyncsGroups() {
		wg.Go(func() { lr.watchGroups(pctx, kadm.NewClient(cl)) })
	}
	for _, run := range runs {
		wg.Go(func() {
			if err := run(pctx); err != nil {
				errOnce.Do(func() { pumpErr = err })
				pcancel()
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return pumpErr
}

func resumePositions(rs *transport.Resume) map[tp]int64 {
	positions := make(map[tp]int64, len(rs.Positions))
	for _, p := range rs.Positions {
		positions[tp{Topic: p.Topic, Partition: p.Partition}] = p.NextOffset
	}
	return positions
}

// pipelines is how many source clients, each with its own share of a leg's
// partitions, fetch and send in parallel.
const pipelines = 4

// pipeline polls one source client and sends its partitions' records as
// batches, in order, until ctx ends or a send fails.
func (lr *legRunner) pipeline(ctx context.Context, cl *kgo.Client, gen uint64, pos *sentPositions) error {
	leg := lr.out.leg
	var rb recordBatcher
	for {
		fs := cl.PollFetches(ctx)
		rb.hdrs = nil // batches sent keep the previous array alive until acked
		if ctx.Err() != nil {
			return nil
		}
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				lr.p.log.Warn("fetch from source", "leg", leg.ID, "topic", t, "partition", p, "err", err)
			}
		})
		var sendErr error
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			if len(fp.Records) == 0 || sendErr != nil {
				return
			}
			// The batch ends after the last record or marker fetched; a
			// fetch of markers alone still sends an empty batch to move
			// next.
			next := fp.Records[len(fp.Records)-1].Offset + 1
			sendErr = lr.sendRecords(ctx, &rb, pos, gen, fp.Topic, fp.Partition, fp.HighWatermark, fp.LogStartOffset, fp.Records, -1, next)
		})
		if sendErr != nil {
			if ctx.Err() != nil {
				return nil
			}
			return sendErr
		}
	}
}

// recordBatcher holds a pipeline's reused arrays for record batches.
type recordBatcher struct {
	batch []transport.Record
	hdrs  []transport.Header
	flt   filterScratch
	org   originScratch
}

// sendRecords sends the records of a partition at offsets from and later
// (from < 0: all) as batches of at most the credit's batch limit, skipping
// transaction markers. The last batch ends at next, and is sent even when
// empty, so that the receiver's position moves past what carried nothing.
// logStart is the source partition's log start when fetched (-1 unknown).
func (lr *legRunner) sendRecords(ctx context.Context, rb *recordBatcher, pos *sentPositions, gen uint64, topic string, partition int32, hwm, logStart int64, recs []*kgo.Record, from, next int64) error {
	leg := lr.out.leg
	rb.batch = rb.batch[:0]
	size := int64(0)
	limit := lr.cr.batchLimit(lr.maxBatch)
	// Records the leg's filter drops are skipped like transaction
	// markers: the batches still end at next, so progress moves past
	// them, and the receiver's offset map has a gap where they were
	// (filter.go).
	var out filterCount
	defer lr.out.filtered(lr.p, &out)
	// Records that would loop are dropped the same way (loops.go).
	var loops loopCount
	defer lr.out.loopDropped(lr.p, &loops)
	src, dst := leg.From.Ref(), leg.To.Ref()
	flush := func(next int64) error {
		b := &transport.Batch{
			Leg: leg.ID, Gen: gen, Topic: topic, Partition: partition,
			NextOffset: next, HighWatermark: hwm,
			Records: append([]transport.Record(nil), rb.batch...),
		}
		rb.batch, size = rb.batch[:0], 0
		return lr.sendContinuing(ctx, pos, b, logStart)
	}
	for _, r := range recs {
		if r.Attrs.IsControl() || r.Offset < from {
			continue // a transaction marker: no data, but it moves next
		}
		if leg.Filter != nil && !rb.flt.match(leg.Filter, r, &out) {
			continue
		}
		// Headers share one backing array per fetch, with the origin
		// header extended for the leg.
		hdrs, ok, err := rb.headers(ctx, r, src, dst, lr.writers, &loops)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		tr := transport.Record{Offset: r.Offset, Timestamp: r.Timestamp.UnixMilli(), Key: r.Key, Value: r.Value, Headers: hdrs}
		// An upper estimate of the record's share of the batch's credit
		// cost (see batchCost) and of what the receiver's decoder charges
		// it (transport.RecordCost), for splitting; credit is taken on the
		// exact cost.
		rsz := max(int64(recordSize(&tr)+16+4*len(tr.Headers)), recordCost*int64(1+len(tr.Headers)),
			int64(transport.RecordCost(&tr)+16))
		if size > 0 && size+rsz > limit {
			if err := flush(tr.Offset); err != nil {
				return err
			}
			limit = lr.cr.batchLimit(lr.maxBatch)
		}
		rb.batch = append(rb.batch, tr)
		size += rsz
	}
	return flush(next)
}

// sendContinuing sends b, first the empty batch that covers any gap
// before it (continueAt), and records where b ends.
func (lr *legRunner) sendContinuing(ctx context.Context, pos *sentPositions, b *transport.Batch, logStart int64) error {
	k := tp{Topic: b.Topic, Partition: b.Partition}
	first, data := firstOffset(b)
	if !data {
		first = b.NextOffset
	}
	if gb := lr.continueAt(pos, b.Gen, k, first, logStart, b.HighWatermark); gb != nil && data {
		if err := lr.send(ctx, gb); err != nil {
			return err
		}
	}
	if err := lr.send(ctx, b); err != nil {
		return err
	}
	pos.set(k, b.NextOffset)
	return nil
}

// send takes credit for a batch and writes it.
func (lr *legRunner) send(ctx context.Context, b *transport.Batch) error {
	seq, err := lr.cr.acquire(ctx, b.Leg, lr.out.leg.Route.Priority, batchCost(b))
	if err != nil {
		return err
	}
	b.Seq = seq
	lr.acks.add(b)
	if err := lr.conn.Send(ctx, b); err != nil {
		return fmt.Errorf("send batch: %w", err)
	}
	lr.cr.charge(b.WireSize)
	lr.out.stats.sent(b)
	m := lr.p.e.m
	m.records.WithLabelValues(b.Leg, "out").Add(float64(b.Len()))
	m.rawBytes.WithLabelValues(b.Leg, "out").Add(float64(payloadBytes(b)))
	m.wireBytes.WithLabelValues(b.Leg, "out").Add(float64(b.WireSize))
	return nil
}
