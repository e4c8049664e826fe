package mirror

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/kraw"
	"github.com/meridian-gw/meridian/transport"
)

// passthrough reports whether the session forwards the source's Kafka
// record batches byte for byte: the link asks for it and the receiver
// speaks a protocol version that carries them.
func (lr *legRunner) passthrough() bool {
	l := lr.p.peer.Link
	w := lr.conn.Welcome()
	// A filtered leg must see each record: it decodes (filter.go).
	return l != nil && l.Passthrough && lr.out.leg.Filter == nil && w != nil && w.Version >= transport.VersionKafkaBatches
}

// rawAdder adds partitions to a raw fetcher.
type rawAdder struct {
	f     *kraw.Fetcher
	atEnd bool
}

func (a rawAdder) add(topic string, partition int32, at int64) {
	if at < 0 {
		at = kraw.AtStart
		if a.atEnd {
			at = kraw.AtEnd
		}
	}
	a.f.Add(topic, partition, at)
}

// pumpRaw is pump for a passthrough session: raw fetchers instead of
// franz-go consumers, each pipeline forwarding its partitions' record
// batches as they are.
func (lr *legRunner) pumpRaw(ctx context.Context, rs *transport.Resume, opts []kgo.Opt) error {
	leg := lr.out.leg
	clients := make([]*kgo.Client, pipelines)
	fetchers := make([]*kraw.Fetcher, pipelines)
	defer func() {
		for i, cl := range clients {
			if fetchers[i] != nil {
				fetchers[i].Close()
			}
			if cl != nil {
				cl.Close()
			}
		}
	}()
	srcs := make([]partitionAdder, pipelines)
	runs := make([]func(context.Context) error, pipelines)
	pos := newSentPositions(rs)
	for i := range clients {
		cl, err := kgo.NewClient(append(append(append([]kgo.Opt{}, opts...), kraw.ClientOpts()...),
			kgo.MetadataMinAge(250*time.Millisecond))...)
		if err != nil {
			return fmt.Errorf("source %s: %w", leg.From.Ref(), err)
		}
		clients[i] = cl
		fetchers[i] = kraw.NewFetcher(cl, kraw.FetchOptions{
			MaxBytes: 8 << 20, MaxPartitionBytes: 1 << 20, MaxWait: 250 * time.Millisecond,
			// Out of range restarts at the log start whatever start_at
			// says; continueAt counts the gap.
			Logger: lr.p.log.With("leg", leg.ID),
		})
		f := fetchers[i]
		srcs[i] = rawAdder{f, leg.StartAtLatest()}
		runs[i] = func(ctx context.Context) error { return lr.pipelineRaw(ctx, f, rs.Gen, pos) }
	}
	lr.writers = lr.out.writers.check(kadm.NewClient(clients[0]), opts)
	return lr.runPipelines(ctx, rs, clients[0], srcs, runs)
}

// sourceDecompressLimit bounds what one source batch may decompress to
// when the sender decodes it (a batch that does not fit the receiver's
// limit): a batch of a few KiB can claim gigabytes. Tuning.SourceDecompressLimit
// overrides it.
const sourceDecompressLimit = 256 << 20

// forwardable reports whether a fetched batch goes as it is: it fits the
// receiver's limit (Welcome.MaxBatchBytes) both as it is and decompressed,
// since the receiver refuses a Kafka batch whose records decompress to more.
func (lr *legRunner) forwardable(fb *kraw.Batch) bool {
	if !fb.Raw() || int64(len(fb.Bytes)) > lr.maxFrame {
		return false
	}
	_, err := lr.fit.Size(fb.Bytes)
	return err == nil
}

// runBytes is the size of the chunk that starts with bs[0]: the
// forwardable batches that follow, skipped ones aside, up to limit.
func (lr *legRunner) runBytes(bs []kraw.Batch, limit int64) int {
	n := 0
	for i := range bs {
		fb := &bs[i]
		if fb.Skip {
			continue
		}
		if !lr.forwardable(fb) || n > 0 && int64(n+len(fb.Bytes)) > limit {
			break
		}
		n += len(fb.Bytes)
	}
	return n
}

// pipelineRaw polls one raw fetcher and forwards its partitions' batches,
// in order, until ctx ends or a send fails.
func (lr *legRunner) pipelineRaw(ctx context.Context, f *kraw.Fetcher, gen uint64, pos *sentPositions) error {
	var rb recordBatcher
	for {
		pfs, err := f.Poll(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("fetch from source %s: %w", lr.out.leg.From.Ref(), err)
		}
		rb.hdrs = nil // batches sent keep the previous array alive until acked
		for i := range pfs {
			// Batches Meridian's sinks wrote here from a cluster this
			// leg could reach go no further (loops.go): skipped like
			// aborted ones.
			var loops loopCount
			err := lr.writers.skipWriters(ctx, &pfs[i], &loops)
			lr.out.loopDropped(lr.p, &loops)
			if err == nil {
				err = lr.forward(ctx, &rb, pos, gen, &pfs[i])
			}
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		}
	}
}

// forward sends one partition's fetched batches. Runs of batches that
// qualify go as they are (Batch.Kafka); a batch that does not (an older
// message format, LogAppendTime, offset gaps, bigger than the receiver's
// frame limit, or starting before the fetch offset) is decoded and goes as
// records. Markers and aborted data only move the position.
func (lr *legRunner) forward(ctx context.Context, rb *recordBatcher, pos *sentPositions, gen uint64, pf *kraw.PartitionFetch) error {
	leg := lr.out.leg
	sent := pf.From // the offset after what was sent
	var (
		chunk     []byte
		chunkNext int64
	)
	limit := lr.cr.batchLimit(lr.maxBatch)
	var forwarded, decoded int
	defer func() {
		m := lr.p.e.m.passBatches
		m.WithLabelValues(leg.ID, "kafka").Add(float64(forwarded))
		m.WithLabelValues(leg.ID, "decoded").Add(float64(decoded))
	}()
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		b := &transport.Batch{Leg: leg.ID, Gen: gen, Topic: pf.Topic, Partition: pf.Partition,
			NextOffset: chunkNext, HighWatermark: pf.HighWatermark, Kafka: chunk}
		chunk, sent = nil, chunkNext
		limit = lr.cr.batchLimit(lr.maxBatch)
		return lr.sendContinuing(ctx, pos, b, pf.LogStart)
	}
	for i := range pf.Batches {
		fb := &pf.Batches[i]
		h := &fb.Header
		switch {
		case fb.Skip:
			if len(chunk) > 0 {
				chunkNext = h.NextOffset() // nothing to mirror in it: the run ends after it
			}
		case lr.forwardable(fb):
			if len(chunk) > 0 && int64(len(chunk)+len(fb.Bytes)) > limit {
				if err := flush(); err != nil {
					return err
				}
			}
			if chunk == nil {
				// Exactly the run this chunk will hold: a chunk stays in
				// memory until acknowledged, and credit counts its length.
				chunk = make([]byte, 0, lr.runBytes(pf.Batches[i:], limit))
			}
			chunk = append(chunk, fb.Bytes...)
			chunkNext = h.NextOffset()
			forwarded++
		default:
			if err := flush(); err != nil {
				return err
			}
			decoded++
			recs, err := lr.unpack.Decode(pf.Topic, pf.Partition, fb.Bytes)
			if errors.Is(err, kraw.ErrDecompressLimit) && fb.Raw() && int64(len(fb.Bytes)) <= lr.maxFrame {
				// Too large for the sender to decode, and for the receiver
				// to write (a decompression bomb, or a batch no limit
				// fits): it goes as it is, alone, and the receiver
				// dead-letters it whole. Retrying the decode would fail
				// for ever and end the peer's session each time.
				decoded--
				forwarded++
				lr.p.log.Error("source batch decompresses beyond every limit: sent as it is for the receiver to dead-letter",
					"leg", leg.ID, "topic", pf.Topic, "partition", pf.Partition, "offset", h.BaseOffset, "records", h.Records, "err", err)
				chunk, chunkNext = fb.Bytes, h.NextOffset()
				if err := flush(); err != nil {
					return err
				}
				continue
			}
			if err != nil {
				return fmt.Errorf("decode source batch %s/%d at offset %d: %w", pf.Topic, pf.Partition, h.BaseOffset, err)
			}
			end := fb.From
			if n := len(recs); n > 0 {
				end = max(end, recs[n-1].Offset+1)
			}
			if h.Magic == 2 {
				end = max(end, h.NextOffset())
			}
			if err := lr.sendRecords(ctx, rb, pos, gen, pf.Topic, pf.Partition, pf.HighWatermark, pf.LogStart, recs, fb.From, end); err != nil {
				return err
			}
			sent = end
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if pf.Next > sent {
		// Markers or aborted data at the end: an empty batch moves the
		// receiver's position past them.
		return lr.sendContinuing(ctx, pos, &transport.Batch{Leg: leg.ID, Gen: gen, Topic: pf.Topic, Partition: pf.Partition,
			NextOffset: pf.Next, HighWatermark: pf.HighWatermark}, pf.LogStart)
	}
	return nil
}
