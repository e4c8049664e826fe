package mirror

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/transport"
)

// Source is a leg's source that is not a Kafka cluster (an AMQP 1.0
// broker's addresses): the seam through which the sender pump reads it.
//
// Each of its topics has one partition, 0, and the source numbers its
// records there itself: Offset is a position the source assigns,
// continuing from where the destination's progress says (OpenSource's
// next). Records stay the source's (unsettled at a broker) until Committed
// says the destination committed them; a source that redelivers records
// after a Resume or a restart must give them their old positions or drop
// what is committed (package mirror/amqpsource de-duplicates by
// message-id). A Source is used by one pump and closed by it.
type Source interface {
	// Topics are the source's topics the leg reads (those the leg's
	// route matches), each with one partition.
	Topics() []string
	// Next blocks until records of one topic are ready and returns them,
	// in position order, continuing that topic's previous records (Offset
	// consecutive), or ctx's error. The records are the caller's until it
	// calls Next again.
	Next(ctx context.Context) (topic string, recs []*kgo.Record, err error)
	// Committed says that the destination committed every record of
	// topic before position next.
	Committed(topic string, next int64)
	// Close ends the source and waits for what it runs; records not
	// committed go back to the broker.
	Close() error
}

// OpenSource opens leg's source, whose topics continue at next (topic →
// first position not committed; a topic not in it starts at 0).
type OpenSource func(ctx context.Context, leg *routing.Leg, next map[string]int64) (Source, error)

// endpointAcks maps the batches an endpoint pump sent (Seq) to their
// topic and end, so that an Ack tells the source what is committed.
type endpointAcks struct {
	mu   sync.Mutex
	src  Source
	ends map[uint64]batchEnd
}

type batchEnd struct {
	topic string
	next  int64
}

// add records b's end before b is sent (its Ack may come at once).
func (a *endpointAcks) add(b *transport.Batch) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.src == nil {
		return
	}
	if a.ends == nil {
		a.ends = map[uint64]batchEnd{}
	}
	a.ends[b.Seq] = batchEnd{b.Topic, b.NextOffset}
}

// ack hands the source the ends of the acknowledged batches it sent.
func (a *endpointAcks) ack(seqs []uint64) {
	a.mu.Lock()
	src := a.src
	var ends []batchEnd
	for _, s := range seqs {
		if e, ok := a.ends[s]; ok {
			ends = append(ends, e)
			delete(a.ends, s)
		}
	}
	a.mu.Unlock()
	for _, e := range ends {
		src.Committed(e.topic, e.next)
	}
}

// setSource sets the pump's source (nil when it stops) and forgets the
// batches of the previous one.
func (a *endpointAcks) setSource(s Source) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.src, a.ends = s, nil
}

// pumpEndpoint is pump for a leg whose source is not Kafka: it opens the
// source at the Resume's positions, announces its topics (one partition
// each) and sends what it yields as batches, through the same batching,
// filters, origin header, continuity and credit as a Kafka source
// (sendRecords).
func (lr *legRunner) pumpEndpoint(ctx context.Context, rs *transport.Resume) error {
	leg := lr.out.leg
	open := lr.p.e.opts.OpenSource
	if open == nil {
		return fmt.Errorf("source %s is a %s cluster, and this engine opens none (Options.OpenSource)", leg.From.Ref(), leg.From.Kind)
	}
	next := map[string]int64{}
	for _, p := range rs.Positions {
		if p.Partition == 0 {
			next[p.Topic] = p.NextOffset
		}
	}
	src, err := lr.openEndpoint(ctx, open, next)
	if err != nil || src == nil {
		return err
	}
	lr.acks.setSource(src)
	defer func() {
		lr.acks.setSource(nil)
		if err := src.Close(); err != nil {
			lr.p.log.Warn("close source", "leg", leg.ID, "err", err)
		}
	}()
	// Announce every topic, then wait for all: a topic the destination
	// refuses stops the pump (and is retried with the session).
	type announcement struct {
		t     *transport.Topic
		ready <-chan string
	}
	var pending []announcement
	d := &discoverer{lr: lr}
	for _, name := range src.Topics() {
		t := &transport.Topic{Leg: leg.ID, Name: name, Partitions: 1}
		ready, err := d.announce(ctx, t)
		if err != nil {
			return err
		}
		pending = append(pending, announcement{t, ready})
	}
	var errs []error
	for _, a := range pending {
		if err := d.await(ctx, a.t, a.ready); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, a := range pending {
		lr.p.log.Info("mirroring topic", "leg", leg.ID, "topic", a.t.Name, "dest", leg.DestTopic(a.t.Name), "source", leg.From.Kind)
	}
	pos := newSentPositions(rs)
	var rb recordBatcher
	for {
		topic, recs, err := src.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if len(recs) == 0 {
			continue
		}
		end := recs[len(recs)-1].Offset + 1
		rb.hdrs = nil
		if err := lr.sendRecords(ctx, &rb, pos, rs.Gen, topic, 0, end, -1, recs, -1, end); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// openEndpoint opens the leg's source, retrying with backoff (200 ms
// doubling to 30 s) while it fails: a broker that is down or refuses an
// address stops this leg only, and the session (with the peer's other
// legs) carries on. Nothing was sent under this Resume yet, so the
// positions stay valid however long it takes. It returns nil, nil when
// ctx ends first.
func (lr *legRunner) openEndpoint(ctx context.Context, open OpenSource, next map[string]int64) (Source, error) {
	leg := lr.out.leg
	bo := newBackoff(200*time.Millisecond, 30*time.Second)
	for fails := 0; ; fails++ {
		src, err := open(ctx, leg, next)
		if err == nil {
			if fails > 0 {
				lr.p.log.Info("leg source open", "leg", leg.ID, "source", leg.From.Ref(), "after_failures", fails)
				lr.out.stats.setErr(nil)
			}
			return src, nil
		}
		if ctx.Err() != nil {
			return nil, nil
		}
		err = fmt.Errorf("source %s: %w", leg.From.Ref(), err)
		lr.out.stats.setErr(err)
		lr.p.e.m.sourceOpens.WithLabelValues(leg.ID).Inc()
		log := lr.p.log.Debug
		if fails == 0 || fails%10 == 0 {
			log = lr.p.log.Warn
		}
		log("open leg source", "leg", leg.ID, "err", err, "failures", fails+1, "retry_in", bo.peek())
		if !bo.sleep(ctx) {
			return nil, nil
		}
	}
}
