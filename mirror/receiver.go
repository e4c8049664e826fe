package mirror

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/meridian-gw/meridian/internal/kraw"
	"github.com/meridian-gw/meridian/mirror/progress"
	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/transport"
)

// maxTxnBytes bounds the raw bytes one destination transaction carries.
const maxTxnBytes = 16 << 20

// maxTxnKafkaBatches bounds the Kafka batches one transaction carries as
// they are: each may cost a produce round trip (writeRaw), and short
// transactions let the sink learn soon how long those take.
const maxTxnKafkaBatches = 256

// inLeg is the receiving end of one leg: it owns the leg's sink shards, their
// queues of received batches, and the current generation. Batches are
// accepted only from the owning session and with the current Gen.
//
// Lock order: inLeg.mu, then legStats.mu.
type inLeg struct {
	leg *routing.Leg
	e   *Engine
	log *slog.Logger

	mu         sync.Mutex
	gen        uint64
	owner      *inSession
	others     []*inSession // older sessions that also carry the leg, oldest first
	needResume bool
	topics     map[string]*destTopic        // by source topic; set by Topic frames
	announced  map[string]map[string]string // source topic → configs last applied
	shards     []*shard
	writing    int           // shards inside a transaction
	notify     chan struct{} // cap 1: wakes the coordinator

	stats legStats
	// groups syncs consumer group offsets; nil when the route names none.
	groups *groupSync
	omap   *progress.OffsetMap // guarded by mu; nil until the shards are open
	fence  *progress.Fence     // guarded by mu; set while the leg is fenced

	// store is the destination's progress store, opened once by the
	// coordinator (openShards) and shared with the shards' sinks.
	store *progress.Store

	admMu sync.Mutex
	adm   *kadm.Client // destination admin, for topic preparation
}

// shard is one transactional producer of a leg and its queue.
type shard struct {
	idx    int
	sink   *sink
	queue  []queued      // guarded by inLeg.mu
	ready  bool          // guarded by inLeg.mu: open, committed state loaded
	busy   bool          // guarded by inLeg.mu: inside a transaction (its sink is in use)
	held   time.Time     // guarded by inLeg.mu: since when the queue's head waits for its topic
	notify chan struct{} // cap 1: queue changed
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

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (l *inLeg) shardOf(topic string, partition int32) *shard {
	h := fnv.New32a()
	h.Write([]byte(topic))
	return l.shards[(h.Sum32()+uint32(partition)*2654435761)%uint32(len(l.shards))]
}

// resetLocked starts a new generation: queued batches are dropped and the
// coordinator sends a Resume once no shard is inside a transaction.
func (l *inLeg) resetLocked() {
	l.gen++
	for _, sh := range l.shards {
		sh.queue, sh.held = nil, time.Time{}
	}
	l.needResume = true
	wake(l.notify)
}

// attach makes sess the leg's owner. The previous owner, if still open,
// stays a candidate: a sender racing redials over a dead path may open two
// sessions and close the later one, and the leg then falls back to the
// earlier.
func (l *inLeg) attach(sess *inSession) {
	l.mu.Lock()
	if l.owner != nil {
		l.others = append(l.others, l.owner)
	}
	l.owner = sess
	l.resetLocked()
	l.mu.Unlock()
}

// attachIfFree makes sess the leg's owner if the leg has none, else a
// candidate that the leg falls back to when its owner ends.
func (l *inLeg) attachIfFree(sess *inSession) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.owner != nil {
		l.others = append(l.others, sess)
		return
	}
	l.owner = sess
	l.resetLocked()
}

func (l *inLeg) detach(sess *inSession) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.others = slices.DeleteFunc(l.others, func(o *inSession) bool { return o == sess })
	if l.owner != sess {
		return
	}
	l.owner = nil
	for _, sh := range l.shards {
		sh.queue, sh.held = nil, time.Time{}
	}
	if n := len(l.others); n > 0 {
		l.owner, l.others = l.others[n-1], l.others[:n-1]
		l.resetLocked() // the fallback resumes from what is committed
	}
}

func (l *inLeg) enqueue(b *transport.Batch, sess *inSession) {
	l.mu.Lock()
	ok := l.owner == sess && b.Gen == l.gen && !l.needResume
	var sh *shard
	if ok {
		sh = l.shardOf(b.Topic, b.Partition)
		sh.queue = append(sh.queue, queued{b, sess})
	}
	l.mu.Unlock()
	if !ok {
		l.e.m.dropped.WithLabelValues(l.leg.ID, "stale-gen").Inc()
		return
	}
	wake(sh.notify)
}

// run is the leg's coordinator: it opens the shards (and reopens a failed
// one), loads the committed progress, and sends Resume frames once no shard
// is inside a transaction. It returns when ctx ends and every shard loop has.
func (l *inLeg) run(ctx context.Context) {
	opts, err := l.e.opts.ClusterOpts(l.leg.To)
	if err != nil {
		l.log.Error("destination cluster options", "err", err)
		return
	}
	l.mu.Lock()
	rounds := &roundTimes{} // one destination: the shards share what they learn of it
	for i := range progress.Shards {
		l.shards = append(l.shards, &shard{idx: i, notify: make(chan struct{}, 1),
			sink: &sink{leg: l.leg, shard: i, opts: opts, tuning: l.e.opts.Tuning, log: l.log, m: l.e.m, rounds: rounds}})
	}
	shards := l.shards
	l.mu.Unlock()
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		for _, sh := range shards {
			sh.sink.close()
		}
		l.closeAdmin()
		l.store.Close()
	}()
	for _, sh := range shards {
		wg.Go(func() { l.runShard(ctx, sh) })
	}
	if l.groups != nil {
		wg.Go(func() { l.groups.run(ctx) })
	}
	bo := newBackoff(100*time.Millisecond, 30*time.Second)
	wasFenced := false
	var toldFenced *inSession // the session last told the leg is fenced
	for {
		if err := l.openShards(ctx, opts); err != nil {
			if ctx.Err() != nil {
				return
			}
			l.stats.setErr(err)
			if errors.Is(err, ErrFenced) {
				// Failed over: this leg must not write. Tell the sender, and
				// look again now and then, in case a failback lifts it.
				if !wasFenced {
					l.log.Warn("leg is fenced at its destination; not writing", "leg", l.leg.ID, "err", err)
				}
				wasFenced = true
				l.mu.Lock()
				owner, fence := l.owner, l.fence
				l.mu.Unlock()
				if owner != nil && owner != toldFenced && fence != nil {
					if err := owner.conn.Send(ctx, &transport.Fenced{Leg: l.leg.ID, Epoch: fence.Epoch, Reason: fence.Reason}); err == nil {
						toldFenced = owner
					}
				}
				select {
				case <-ctx.Done():
					return
				case <-l.notify: // a new session: tell it at once
				case <-time.After(l.e.opts.Tuning.FenceRecheck):
				}
				continue
			}
			l.log.Warn("open destination", "leg", l.leg.ID, "err", err, "retry_in", bo.peek())
			if !bo.sleep(ctx) {
				return
			}
			continue
		}
		if wasFenced {
			l.log.Info("leg fence lifted; writing again", "leg", l.leg.ID)
			wasFenced = false
		}
		bo.reset()
		l.mu.Lock()
		var rs *transport.Resume
		owner := l.owner
		allReady := true
		for _, sh := range l.shards {
			allReady = allReady && sh.ready
		}
		if l.needResume && owner != nil && l.writing == 0 && allReady {
			l.needResume = false
			rs = &transport.Resume{Leg: l.leg.ID, Gen: l.gen}
			for _, sh := range l.shards {
				for k, p := range sh.sink.committed {
					rs.Positions = append(rs.Positions, transport.Position{Topic: k.Topic, Partition: k.Partition, NextOffset: p.Next})
				}
			}
			for _, sh := range l.shards {
				wake(sh.notify) // they may now take work
			}
		}
		l.mu.Unlock()
		if rs != nil {
			l.e.m.resumes.WithLabelValues(l.leg.ID).Inc()
			if err := owner.conn.Send(ctx, rs); err != nil {
				l.log.Debug("send resume", "leg", l.leg.ID, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-l.notify:
		}
	}
}

// openShards opens every shard that is not ready, then loads their committed
// progress. Every producer is initialised (aborting what a predecessor left
// open) before progress is read, so the read sees all that is committed.
func (l *inLeg) openShards(ctx context.Context, opts []kgo.Opt) error {
	l.mu.Lock()
	var todo []*shard
	for _, sh := range l.shards {
		if !sh.ready && !sh.busy { // a busy shard's sink is in use: later
			todo = append(todo, sh)
		}
	}
	l.mu.Unlock()
	if len(todo) == 0 {
		return nil
	}
	if l.store == nil {
		store, err := progress.Open(ctx, opts)
		if err != nil {
			return err
		}
		l.store = store
	}
	for _, sh := range todo {
		sh.sink.store = l.store
		if err := sh.sink.open(ctx); err != nil {
			return err
		}
	}
	st, err := l.store.Load(ctx, l.leg.ID)
	if err != nil {
		return err
	}
	if f := st.Fence(l.leg.ID); f != nil {
		// Every shard reopens and reloads once the fence is lifted: none
		// keeps a fenced producer or positions from before.
		l.mu.Lock()
		l.fence = f
		for _, sh := range l.shards {
			sh.ready = false
			if !sh.busy {
				sh.sink.close()
			}
		}
		l.mu.Unlock()
		return fmt.Errorf("%w: %s (route epoch %d, since %s)", ErrFenced, f.Reason, f.Epoch, time.UnixMilli(f.At).UTC().Format(time.RFC3339))
	}
	var omap *progress.OffsetMap
	if l.groups != nil {
		omap = st.OffsetMap(l.leg.ID)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fence = nil
	if omap != nil {
		l.omap = omap
	}
	for _, sh := range todo {
		sh.sink.committed = map[tp]*progress.Record{}
		sh.sink.segs = map[tp][]progress.SegRef{}
	}
	for k, p := range st.Progress(l.leg.ID) {
		if sh := l.shardOf(k.Topic, k.Partition); !sh.ready {
			sh.sink.committed[k] = p
		}
	}
	for k, refs := range st.Segments(l.leg.ID) {
		if sh := l.shardOf(k.Topic, k.Partition); !sh.ready {
			sh.sink.segs[k] = refs
		}
	}
	for _, sh := range todo {
		sh.ready = true
		l.stats.restore(sh.sink.committed)
	}
	l.stats.setErr(nil)
	return nil
}

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
			l.mu.Lock()
			if l.needResume || !sh.ready || len(sh.queue) == 0 {
				l.mu.Unlock()
				break
			}
			var (
				take        []queued
				size, kafka int
			)
			for len(sh.queue) > 0 && size < maxTxnBytes && kafka < maxTxnKafkaBatches {
				q := sh.queue[0]
				if !l.preparedLocked(q.b) {
					break // its topic's announcement is still in hand
				}
				sh.queue = sh.queue[1:]
				take = append(take, q)
				size += q.b.RawSize()
				if q.b.Kafka != nil {
					kafka += kraw.Count(q.b.Kafka)
				}
			}
			if len(take) == 0 {
				if l.holdLocked(sh) {
					l.mu.Unlock()
					break
				}
				l.mu.Unlock()
				continue
			}
			sh.held = time.Time{}
			topics := make(map[string]*destTopic, len(l.topics))
			for k, v := range l.topics {
				topics[k] = v
			}
			l.writing++
			sh.busy = true
			l.mu.Unlock()

			batches := make([]*transport.Batch, len(take))
			for i, q := range take {
				batches[i] = q.b
			}
			tctx, cancel := context.WithTimeout(wctx, 2*time.Minute)
			res, err := sh.sink.write(tctx, batches, topics)
			cancel()

			l.mu.Lock()
			l.writing--
			sh.busy = false
			if err != nil {
				sh.ready = false
				sh.sink.close() // reopen, and reload what is really committed
				l.resetLocked()
			} else if !sh.ready {
				// Marked for reopening (a fence) while it wrote.
				sh.sink.close()
				wake(l.notify)
			} else if l.writing == 0 && l.needResume {
				wake(l.notify)
			}
			l.mu.Unlock()
			if err != nil {
				l.stats.setErr(err)
				l.log.Warn("destination transaction failed; resuming sender from committed progress",
					"leg", l.leg.ID, "shard", sh.idx, "batches", len(batches), "err", err)
				continue
			}
			l.stats.setErr(nil)
			l.stats.committedTxn(res, batches, sh.sink.committed)
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

// preparedLocked reports whether b's destination topic and partition are
// prepared. A sender consumes a topic it has progress for while announcing
// it, so its batches may overtake the announcement.
func (l *inLeg) preparedLocked(b *transport.Batch) bool {
	dt := l.topics[b.Topic]
	return dt != nil && b.Partition < dt.partitions
}

// holdLocked keeps the head of sh's queue waiting for its topic to be
// prepared, and reports true while it may wait. After Tuning.TopicWait it gives
// up: the leg resumes from what is committed, as after a failed
// transaction.
func (l *inLeg) holdLocked(sh *shard) bool {
	now := time.Now()
	topicWait := l.e.opts.Tuning.TopicWait
	if sh.held.IsZero() {
		sh.held = now
		time.AfterFunc(topicWait, func() { wake(sh.notify) })
		return true
	}
	if now.Sub(sh.held) < topicWait {
		return true
	}
	sh.held = time.Time{}
	b := sh.queue[0].b
	err := fmt.Errorf("topic %q partition %d was not announced within %s", b.Topic, b.Partition, topicWait)
	l.stats.setErr(err)
	l.log.Warn("batch for a topic not prepared; resuming sender from committed progress", "leg", l.leg.ID, "err", err)
	l.resetLocked()
	return false
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
		}
	}
	// A session whose Hello came as 0-RTT data (which an attacker can
	// replay, and a sender's hedged redials after an outage all send) takes
	// only the legs nobody holds, at once: the Resume then leaves before
	// the handshake completes. It never displaces a live session, even
	// once confirmed (a losing redial completes its handshake as it is
	// closed); it waits as a candidate and gets the leg when the holder
	// ends.
	if t, ok := conn.(transport.Tentative); ok && t.Tentative() {
		for _, l := range legs {
			l.attachIfFree(sess)
		}
	} else {
		for _, l := range legs {
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
		case *transport.Groups:
			if l := e.in[f.Leg]; l != nil && l.groups != nil {
				l.groups.offer(f)
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
			if err == nil {
				err = resp.Err
			}
			if isExists(err) {
				continue // created meanwhile by someone else (another leg, say)
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
	rcs, err := adm.DescribeTopicConfigs(ctx, dest)
	if err != nil {
		return fmt.Errorf("describe %s configs: %w", dest, err)
	}
	rc, err := rcs.On(dest, nil)
	if err != nil {
		return fmt.Errorf("describe %s configs: %w", dest, err)
	}
	current := map[string]string{}
	for _, kv := range rc.Configs {
		if kv.Value == nil {
			continue
		}
		if kv.Key == "max.message.bytes" {
			if n, err := strconv.Atoi(*kv.Value); err == nil {
				dt.maxBytes = n
			}
		}
		if kv.Source == kmsg.ConfigSourceDynamicTopicConfig {
			current[kv.Key] = *kv.Value
		}
	}
	// Follow the source's configs: set what differs, and remove what the
	// source itself stopped overriding (an override set only at the
	// destination is left alone).
	l.mu.Lock()
	prev := l.announced[t.Name]
	l.mu.Unlock()
	var alters []kadm.AlterConfig
	for k, v := range t.Configs {
		if cur, ok := current[k]; !ok || cur != v {
			alters = append(alters, kadm.AlterConfig{Op: kadm.SetConfig, Name: k, Value: &v})
		}
	}
	for k := range prev {
		if _, still := t.Configs[k]; !still {
			if _, set := current[k]; set {
				alters = append(alters, kadm.AlterConfig{Op: kadm.DeleteConfig, Name: k})
			}
		}
	}
	if len(alters) > 0 {
		resp, err := adm.AlterTopicConfigs(ctx, alters, dest)
		if err == nil {
			_, err = resp.On(dest, nil)
			if err == nil {
				for _, r := range resp {
					err = errors.Join(err, r.Err)
				}
			}
		}
		if err != nil {
			return fmt.Errorf("apply source configs to %s: %w", dest, err)
		}
		for _, a := range alters {
			if a.Name == "max.message.bytes" && a.Value != nil {
				if n, err := strconv.Atoi(*a.Value); err == nil {
					dt.maxBytes = n
				}
			}
		}
		l.log.Info("destination topic configs follow the source", "leg", l.leg.ID, "topic", dest, "changes", len(alters))
	}
	l.mu.Lock()
	if l.topics == nil {
		l.topics = map[string]*destTopic{}
		l.announced = map[string]map[string]string{}
	}
	l.topics[t.Name] = dt
	l.announced[t.Name] = t.Configs
	for _, sh := range l.shards {
		if len(sh.queue) > 0 {
			wake(sh.notify) // batches that overtook the announcement
		}
	}
	l.mu.Unlock()
	return nil
}

// offsetMap is the leg's in-memory offset map, or nil.
func (l *inLeg) offsetMap() *progress.OffsetMap {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.omap
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
