package mirror

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/meridian-gw/meridian/internal/kraw"
	"github.com/meridian-gw/meridian/transport"
)

// runShard commits the shard's queued batches in transactions and acks them.
// A failed transaction marks the shard for reopening and starts a new
// generation for the whole leg.
func (l *inLeg) runShard(ctx context.Context, sh *shard) {
	// A transaction in progress finishes even when ctx ends, so that a
	// sender's drain is committed.
	wctx := context.WithoutCancel(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-sh.notify:
		}
		for ctx.Err() == nil {
			take, dropped, topics, held := l.state.take(sh)
			if len(dropped) > 0 {
				l.e.m.dropped.WithLabelValues(l.leg.ID, "quarantined").Add(float64(len(dropped)))
				l.ack(ctx, dropped)
			}
			if held != nil {
				l.stats.setErr(held)
				l.log.Warn("batch for a topic not prepared; resuming sender from committed progress", "leg", l.leg.ID, "err", held)
			}
			if len(take) == 0 {
				break
			}
			l.commit(ctx, wctx, sh, take, topics)
		}
	}
}

// commit writes take in one transaction of sh's sink, then updates the
// stats, the offset map and the metrics, and acks the batches.
func (l *inLeg) commit(ctx, wctx context.Context, sh *shard, take []queued, topics map[string]*destTopic) {
	batches := make([]*transport.Batch, len(take))
	for i, q := range take {
		batches[i] = q.b
	}
	if err := checkContinuity(batches, sh.sink.committedNext); err != nil {
		// Never written: the sender resumes from what is committed
		// (after the retry backoff, should it keep doing so).
		l.state.refused(sh)
		l.stats.setErr(err)
		l.stats.failedTxn()
		l.e.m.dropped.WithLabelValues(l.leg.ID, "discontinuous").Add(float64(len(batches)))
		l.log.Error("batches refused: they do not continue the committed progress; resuming sender from it",
			"leg", l.leg.ID, "shard", sh.idx, "batches", len(batches), "err", err)
		return
	}
	tctx, cancel := context.WithTimeout(wctx, 2*time.Minute)
	res, err := sh.sink.write(tctx, batches, topics)
	cancel()
	// The window is released before the Ack goes (or, after a failure,
	// the Resume): the sender never has less in flight than we count.
	for _, q := range take {
		q.sess.win.release(q.cost)
	}
	err = l.refusal(err)
	l.state.finish(sh, err)
	if err != nil {
		var qe *quarantineError
		if errors.As(err, &qe) {
			l.quarantined(qe)
		}
		l.stats.setErr(err)
		l.stats.failedTxn()
		l.log.Warn("destination transaction failed; resuming sender from committed progress",
			"leg", l.leg.ID, "shard", sh.idx, "batches", len(batches), "err", err)
		return
	}
	l.stats.setErr(nil)
	l.stats.committedTxn(res, batches, sh.sink.committed)
	l.recovered(res)
	if m := l.offsetMap(); m != nil {
		for _, p := range res.segments {
			m.Add(p)
		}
		for _, p := range res.progress {
			m.Add(p)
		}
		for k, start := range res.pruned {
			m.Prune(k, start)
		}
	}
	l.e.m.records.WithLabelValues(l.leg.ID, "in").Add(float64(res.records))
	l.e.m.rawBytes.WithLabelValues(l.leg.ID, "in").Add(float64(res.rawBytes))
	lagR, lagS := l.stats.lag()
	l.e.m.lagRecords.WithLabelValues(l.leg.ID).Set(float64(lagR))
	l.e.m.lagSeconds.WithLabelValues(l.leg.ID).Set(lagS)
	l.ack(ctx, take)
}

// ack acknowledges batches to the sessions they came from (the owner may
// have changed meanwhile).
func (l *inLeg) ack(ctx context.Context, qs []queued) {
	acks := map[*inSession][]uint64{}
	for _, q := range qs {
		acks[q.sess] = append(acks[q.sess], q.b.Seq)
	}
	for sess, seqs := range acks {
		if err := sess.conn.Send(ctx, &transport.Ack{Seqs: seqs}); err != nil {
			l.log.Debug("send ack", "leg", l.leg.ID, "err", err)
		}
	}
}

// payloadBytes is a batch's record bytes: keys, values and headers; for
// Kafka batches, their size as the source stored them.
func payloadBytes(b *transport.Batch) int {
	if b.Kafka != nil {
		return len(b.Kafka)
	}
	n := 0
	for i := range b.Records {
		n += recordSize(&b.Records[i])
	}
	return n
}

// lastTimestamp is the timestamp of a batch's last record (0: none).
func lastTimestamp(b *transport.Batch) int64 {
	if b.Kafka != nil {
		var ts int64
		kraw.Split(b.Kafka, func(h kraw.Header, _ []byte) error { ts = h.MaxTimestamp; return nil })
		return ts
	}
	if n := len(b.Records); n > 0 {
		return b.Records[n-1].Timestamp
	}
	return 0
}

// authErrors are the broker's refusals of the gateway's principal.
var authErrors = []error{kerr.TopicAuthorizationFailed, kerr.TransactionalIDAuthorizationFailed,
	kerr.GroupAuthorizationFailed, kerr.ClusterAuthorizationFailed, kerr.SaslAuthenticationFailed}

// refusal names the destination cluster and the principal in an
// authorization failure (the broker's error names the resource), so that
// the leg's status says who was refused what. Other errors pass as they are.
func (l *inLeg) refusal(err error) error {
	for _, ae := range authErrors {
		if errors.Is(err, ae) {
			who := "User:ANONYMOUS (no sasl)"
			if s := l.leg.To.SASL; s != nil {
				who = "User:" + s.Username + " (sasl " + s.Mechanism + ")"
			}
			return fmt.Errorf("destination %s refused %s: %w", l.leg.To.Ref(), who, err)
		}
	}
	return err
}

// openErr names the destination in an error of a sink's start, and the
// principal too when the broker refused it.
func (l *inLeg) openErr(err error) error {
	if r := l.refusal(err); r != err {
		return r
	}
	return fmt.Errorf("destination %s: %w", l.leg.To.Ref(), err)
}
