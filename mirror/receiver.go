package mirror

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/transport"
)

// maxTxnBytes bounds the raw bytes one destination transaction carries.
const maxTxnBytes = 16 << 20

// inLeg is the receiving end of one leg: it owns the leg's sink, its queue of
// received batches, and the current generation. Batches are accepted only from
// the owning session and with the current Gen.
type inLeg struct {
	leg *routing.Leg
	e   *Engine
	log *slog.Logger

	mu         sync.Mutex
	gen        uint64
	owner      *inSession
	queue      []queued
	needResume bool
	topics     map[string]*destTopic // by source topic; set by Topic frames
	notify     chan struct{}         // cap 1: queue or owner changed

	stats legStats

	admMu sync.Mutex
	adm   *kadm.Client // destination admin, for topic preparation
}

type queued struct {
	b    *transport.Batch
	sess *inSession
}

// inSession is one accepted link session.
type inSession struct {
	conn transport.Conn
	peer string
}

func (l *inLeg) wake() {
	select {
	case l.notify <- struct{}{}:
	default:
	}
}

// attach makes sess the leg's owner: earlier batches are dropped and the sink
// loop sends a Resume with a new Gen.
func (l *inLeg) attach(sess *inSession) {
	l.mu.Lock()
	l.owner = sess
	l.gen++
	l.queue = nil
	l.needResume = true
	l.mu.Unlock()
	l.wake()
}

func (l *inLeg) detach(sess *inSession) {
	l.mu.Lock()
	if l.owner == sess {
		l.owner = nil
		l.queue = nil
	}
	l.mu.Unlock()
}

func (l *inLeg) enqueue(b *transport.Batch, sess *inSession) {
	l.mu.Lock()
	ok := l.owner == sess && b.Gen == l.gen && !l.needResume
	if ok {
		l.queue = append(l.queue, queued{b, sess})
	}
	l.mu.Unlock()
	if !ok {
		l.e.m.dropped.WithLabelValues(l.leg.ID, "stale-gen").Inc()
		return
	}
	l.wake()
}

// run is the sink loop: it commits queued batches in transactions, acks them,
// and sends Resume frames. It returns when ctx ends.
func (l *inLeg) run(ctx context.Context) {
	opts, err := l.e.opts.ClusterOpts(l.leg.To)
	if err != nil {
		l.log.Error("destination cluster options", "err", err)
		return
	}
	s := &sink{leg: l.leg, opts: opts, log: l.log, m: l.e.m}
	defer s.close()
	defer l.closeAdmin()
	bo := newBackoff(100*time.Millisecond, 30*time.Second)
	// The first pass opens the sink at once, before any sender connects, so
	// that a session's Resume goes out without waiting for the destination.
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return
			case <-l.notify:
			}
		}
		for ctx.Err() == nil {
			if s.cl == nil {
				if err := s.open(ctx); err != nil {
					l.stats.setErr(err)
					l.log.Warn("open destination", "leg", l.leg.ID, "err", err, "retry_in", bo.peek())
					if !bo.sleep(ctx) {
						return
					}
					continue
				}
				l.stats.setErr(nil)
				l.stats.restore(s.committed)
			}
			l.mu.Lock()
			owner, gen := l.owner, l.gen
			if l.needResume {
				l.needResume = false
				l.mu.Unlock()
				if owner != nil {
					l.e.m.resumes.WithLabelValues(l.leg.ID).Inc()
					rs := &transport.Resume{Leg: l.leg.ID, Gen: gen, Positions: s.positions()}
					if err := owner.conn.Send(ctx, rs); err != nil {
						l.log.Debug("send resume", "leg", l.leg.ID, "err", err)
					}
				}
				continue
			}
			var (
				take []queued
				size int
			)
			for len(l.queue) > 0 && size < maxTxnBytes {
				q := l.queue[0]
				l.queue = l.queue[1:]
				take = append(take, q)
				size += q.b.RawSize()
			}
			topics := make(map[string]*destTopic, len(l.topics))
			for k, v := range l.topics {
				topics[k] = v
			}
			l.mu.Unlock()
			if len(take) == 0 {
				break
			}
			batches := make([]*transport.Batch, len(take))
			for i, q := range take {
				batches[i] = q.b
			}
			res, err := s.write(ctx, batches, topics)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				l.stats.setErr(err)
				l.log.Warn("destination transaction failed; resuming sender from committed progress",
					"leg", l.leg.ID, "batches", len(batches), "err", err, "retry_in", bo.peek())
				s.close() // reopen and reload what is really committed
				l.mu.Lock()
				l.gen++
				l.queue = nil
				l.needResume = true
				l.mu.Unlock()
				if !bo.sleep(ctx) {
					return
				}
				continue
			}
			bo.reset()
			l.stats.setErr(nil)
			l.stats.committedTxn(res, batches, s.committed)
			l.e.m.records.WithLabelValues(l.leg.ID, "in").Add(float64(res.records))
			l.e.m.rawBytes.WithLabelValues(l.leg.ID, "in").Add(float64(res.rawBytes))
			lagR, lagS := l.stats.lag()
			l.e.m.lagRecords.WithLabelValues(l.leg.ID).Set(float64(lagR))
			l.e.m.lagSeconds.WithLabelValues(l.leg.ID).Set(lagS)
			// Ack per session: the owner may have changed meanwhile.
			acks := map[*inSession][]uint64{}
			for _, q := range take {
				acks[q.sess] = append(acks[q.sess], q.b.Seq)
			}
			for sess, seqs := range acks {
				if err := sess.conn.Send(ctx, &transport.Ack{Seqs: seqs}); err != nil {
					l.log.Debug("send ack", "leg", l.leg.ID, "err", err)
				}
			}
		}
	}
}

// payloadBytes is a batch's record bytes: keys, values and headers.
func payloadBytes(b *transport.Batch) int {
	n := 0
	for i := range b.Records {
		n += recordSize(&b.Records[i])
	}
	return n
}

// serveSession handles one accepted session until it ends.
func (e *Engine) serveSession(ctx context.Context, conn transport.Conn) {
	h := conn.Hello()
	sess := &inSession{conn: conn, peer: h.Gateway}
	log := e.log.With("peer", h.Gateway, "addr", conn.RemoteAddr())
	e.m.sessions.WithLabelValues(h.Gateway, "receiver").Inc()
	defer e.m.sessions.WithLabelValues(h.Gateway, "receiver").Dec()
	log.Info("link session accepted", "legs", h.Legs)
	var legs []*inLeg
	for _, id := range h.Legs {
		if l := e.in[id]; l != nil {
			legs = append(legs, l)
			l.attach(sess)
		}
	}
	defer func() {
		for _, l := range legs {
			l.detach(sess)
		}
	}()
	stopRTT := e.trackRTT(h.Gateway, conn)
	defer stopRTT()
	for {
		f, err := conn.Recv(ctx)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, transport.ErrClosed) {
				e.m.sessionFails.WithLabelValues(h.Gateway, "receiver").Inc()
				log.Warn("link session ended", "err", err)
			} else {
				log.Info("link session closed")
			}
			conn.Close(nil)
			return
		}
		switch f := f.(type) {
		case *transport.Batch:
			l := e.in[f.Leg]
			if l == nil {
				conn.Close(&transport.Error{Code: transport.ErrCodeUnknownLeg, Message: "leg " + strconv.Quote(f.Leg) + " is not routed to gateway " + e.table.Gateway.Name})
				return
			}
			e.m.wireBytes.WithLabelValues(f.Leg, "in").Add(float64(f.WireSize))
			l.enqueue(f, sess)
		case *transport.Topic:
			l := e.in[f.Leg]
			ready := &transport.TopicReady{Leg: f.Leg, Name: f.Name}
			if l == nil {
				ready.Err = "leg is not routed here"
			} else if err := l.prepareTopic(ctx, f); err != nil {
				ready.Err = err.Error()
				log.Warn("destination topic not ready", "leg", f.Leg, "topic", f.Name, "err", err)
			}
			if err := conn.Send(ctx, ready); err != nil {
				log.Debug("send topic-ready", "err", err)
			}
		case *transport.Goaway:
			log.Info("peer is going away", "reason", f.Reason)
			conn.Close(nil)
			return
		case *transport.Error:
			log.Warn("peer reported an error", "err", f)
			conn.Close(nil)
			return
		default:
			log.Debug("ignoring frame", "type", fmt.Sprintf("%T", f))
		}
	}
}

// prepareTopic creates or checks the destination topic of a source topic:
// same partition count (or more) and the source's non-default configs.
func (l *inLeg) prepareTopic(ctx context.Context, t *transport.Topic) error {
	adm, err := l.admin()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	dest := l.leg.DestTopic(t.Name)
	for _, name := range []string{DeadLetterTopic, dest} {
		parts, configs := int32(1), map[string]*string(nil)
		if name == dest {
			parts = t.Partitions
			configs = map[string]*string{}
			for k, v := range t.Configs {
				configs[k] = &v
			}
		}
		td, err := adm.ListTopics(ctx, name)
		if err != nil {
			return fmt.Errorf("describe %s: %w", name, err)
		}
		d, ok := td[name]
		switch {
		case !ok || d.Err != nil:
			resp, err := adm.CreateTopic(ctx, parts, -1, configs, name)
			if err == nil && resp.Err != nil && !isExists(resp.Err) {
				err = resp.Err
			}
			if err != nil {
				return fmt.Errorf("create %s with %d partitions: %w", name, parts, err)
			}
			l.log.Info("created destination topic", "leg", l.leg.ID, "topic", name, "partitions", parts)
		case int32(len(d.Partitions)) < parts:
			if _, err := adm.UpdatePartitions(ctx, int(parts), name); err != nil {
				return fmt.Errorf("grow %s to %d partitions: %w", name, parts, err)
			}
			l.log.Info("grew destination topic", "leg", l.leg.ID, "topic", name, "partitions", parts)
		}
	}
	dt := &destTopic{name: dest, partitions: t.Partitions, maxBytes: 1048588}
	if rc, err := adm.DescribeTopicConfigs(ctx, dest); err == nil {
		if c, err := rc.On(dest, nil); err == nil {
			for _, kv := range c.Configs {
				if kv.Key == "max.message.bytes" && kv.Value != nil {
					if n, err := strconv.Atoi(*kv.Value); err == nil {
						dt.maxBytes = n
					}
				}
			}
		}
	}
	l.mu.Lock()
	if l.topics == nil {
		l.topics = map[string]*destTopic{}
	}
	l.topics[t.Name] = dt
	l.mu.Unlock()
	return nil
}

// admin returns the leg's destination admin client, creating it once.
func (l *inLeg) admin() (*kadm.Client, error) {
	l.admMu.Lock()
	defer l.admMu.Unlock()
	if l.adm != nil {
		return l.adm, nil
	}
	opts, err := l.e.opts.ClusterOpts(l.leg.To)
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(opts, kgo.MetadataMinAge(250*time.Millisecond))...)
	if err != nil {
		return nil, err
	}
	l.adm = kadm.NewClient(cl)
	return l.adm, nil
}

func (l *inLeg) closeAdmin() {
	l.admMu.Lock()
	defer l.admMu.Unlock()
	if l.adm != nil {
		l.adm.Close()
		l.adm = nil
	}
}

func isExists(err error) bool { return errors.Is(err, kerr.TopicAlreadyExists) }
