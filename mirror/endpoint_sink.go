package mirror

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/meridian-gw/meridian/mirror/progress"
	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/transport"
)

// Writer is one shard of a leg's destination that is not a Kafka cluster
// (an AMQP 1.0 broker's addresses): the seam through which the receiver
// writes to it. It keeps the leg's progress itself, since such a
// destination has no transaction to hold it with the records.
//
// The receiver's shards, generations, continuity checks, Resume and Acks
// are the engine's, as for Kafka: a batch is acknowledged only after Write
// returned for it.
type Writer interface {
	// Committed is the progress the writer kept for its shard: the latest
	// record per source partition.
	Committed(ctx context.Context) (map[progress.TP]*progress.Record, error)
	// Write writes the records of batches (in order per partition, each
	// continuing the committed progress) to their destination topics
	// (routing.Leg.DestTopic of the batch's topic) and keeps progs, one per
	// partition written, as the committed progress; it returns once the
	// destination accepted every record and the progress is kept. An
	// error leaves what was written before it written: the sender resumes
	// from Committed and may send some of it again (at least once).
	Write(ctx context.Context, batches []*transport.Batch, progs []*progress.Record) (dlq int, err error)
	// Close ends the writer and waits for what it runs.
	Close() error
}

// OpenWriter opens shard of leg's destination (a cluster that is not
// Kafka).
type OpenWriter func(ctx context.Context, leg *routing.Leg, shard int) (Writer, error)

// external reports whether the leg's destination is not a Kafka cluster.
func external(l *routing.Leg) bool { return l.To.Kind != "" && l.To.Kind != "kafka" }

// openExternal (re)opens the shards of todo on a destination that is not
// Kafka and loads their progress into the leg state.
func (l *inLeg) openExternal(ctx context.Context, todo []*shard) error {
	open := l.e.opts.OpenWriter
	if open == nil {
		return fmt.Errorf("destination %s is a %s cluster, and this engine opens none (Options.OpenWriter)", l.leg.To.Ref(), l.leg.To.Kind)
	}
	recs := map[progress.TP]*progress.Record{}
	for _, sh := range todo {
		sh.sink.close()
		w, err := open(ctx, l.leg, sh.idx)
		if err != nil {
			return fmt.Errorf("destination %s: %w", l.leg.To.Ref(), err)
		}
		sh.sink.writer = w
		c, err := w.Committed(ctx)
		if err != nil {
			return fmt.Errorf("destination %s: progress: %w", l.leg.To.Ref(), err)
		}
		for k, r := range c {
			recs[k] = r
		}
	}
	l.state.opened(todo, progress.StateOf(l.leg.ID, recs), nil, l.stats.restore)
	l.stats.setErr(nil)
	return nil
}

// prepareExternal answers a Topic frame of a leg whose destination is not
// Kafka: the destination topic must be one of the cluster's addresses.
func (l *inLeg) prepareExternal(t *transport.Topic) error {
	dest, t, err := l.checkTopic(t)
	if err != nil {
		return err
	}
	if a := l.leg.To.AMQP; a == nil || !slices.Contains(a.Addresses, dest) {
		l.e.m.topicRefused.WithLabelValues(l.leg.ID, "address").Inc()
		return &topicRefusal{reason: "address", msg: fmt.Sprintf("refused: destination %q is not one of the addresses of %s", dest, l.leg.To.Ref())}
	}
	l.state.prepared(t.Name, &destTopic{name: dest, partitions: t.Partitions}, t.Configs)
	return nil
}

// writeExternal is write for a destination that is not Kafka.
func (s *sink) writeExternal(ctx context.Context, batches []*transport.Batch) (txnResult, error) {
	var res txnResult
	last := map[tp]*transport.Batch{}
	var order []tp
	for _, b := range batches {
		k := tp{Topic: b.Topic, Partition: b.Partition}
		if last[k] == nil {
			order = append(order, k)
		}
		last[k] = b
		res.records += len(b.Records)
		res.rawBytes += payloadBytes(b)
	}
	now := time.Now().UnixMilli()
	for _, k := range order {
		b := last[k]
		p := &progress.Record{V: progress.Version, Leg: s.leg.ID, Topic: k.Topic, Partition: k.Partition,
			DestTopic: s.leg.DestTopic(k.Topic), Next: b.NextOffset, HWM: b.HighWatermark, At: now}
		if ts := lastTimestamp(b); ts > 0 {
			p.LastTS = ts
		} else if prev := s.committed[k]; prev != nil {
			p.LastTS = prev.LastTS
		}
		res.progress = append(res.progress, p)
	}
	dlq, err := s.writer.Write(ctx, batches, res.progress)
	if err != nil {
		s.m.txns.WithLabelValues(s.leg.ID, "abort").Inc()
		return txnResult{}, err
	}
	res.deadLetters = dlq
	for _, p := range res.progress {
		s.committed[p.TP()] = p
	}
	s.m.txns.WithLabelValues(s.leg.ID, "commit").Inc()
	return res, nil
}
