package mirror

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

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

// inLeg is the receiving end of one leg: its coordinator (run) opens the
// leg's sink shards and sends Resume frames; its shard loops (runShard)
// commit what sessions queued. Batches are accepted only from the owning
// session and with the current generation; state owns both.
type inLeg struct {
	leg *routing.Leg
	e   *Engine
	log *slog.Logger
	// table is the table leg was compiled in: the gateways it may be fed
	// by are that table's (routing.Leg.SentBy compares them by identity).
	table *routing.Table
	// filter is the route's filter as status shows it: the sender
	// evaluates it, so ApplyIn changes it without restarting the leg.
	filter atomic.Pointer[string]

	state legState
	stats legStats
	// groups syncs consumer group offsets; nil when the route names none.
	groups *groupSync
	// store is the destination's progress store, opened once by the
	// coordinator (openShards) and shared with the shards' sinks.
	store *progress.Store

	admMu sync.Mutex
	adm   *kadm.Client // destination admin, for topic preparation
}

func newInLeg(e *Engine, l *routing.Leg, t *routing.Table) *inLeg {
	il := &inLeg{leg: l, e: e, log: e.log, table: t}
	il.filter.Store(&l.Route.Filter)
	il.state = legState{leg: l.ID, topicWait: e.opts.Tuning.TopicWait, notify: make(chan struct{}, 1)}
	if l.SyncsGroups() {
		il.groups = newGroupSync(il)
	}
	e.m.inLegSeries(l.ID)
	return il
}

// inSession is one accepted link session.
type inSession struct {
	conn transport.Conn
	peer string
	win  *recvWindow // the credit window granted in the Welcome
}

// enqueue queues b from sess, or returns why sess broke its credit window
// (b is then dropped and the session must end).
func (l *inLeg) enqueue(b *transport.Batch, sess *inSession) error {
	cost := batchCost(b)
	if err := sess.win.charge(cost); err != nil {
		return err
	}
	sh := l.state.enqueue(b, sess, cost)
	if sh == nil {
		sess.win.release(cost) // stale: dropped now, the Resume releases it at the sender
		l.e.m.dropped.WithLabelValues(l.leg.ID, "stale-gen").Inc()
		return nil
	}
	wake(sh.notify)
	return nil
}

// offsetMap is the leg's in-memory offset map, or nil.
func (l *inLeg) offsetMap() *progress.OffsetMap { return l.state.offsetMap() }

// run is the leg's coordinator: it opens the shards (and reopens a failed
// one), loads the committed progress, and sends Resume frames once no shard
// is inside a transaction. It returns when ctx ends and every shard loop has.
func (l *inLeg) run(ctx context.Context) {
	var opts []kgo.Opt
	if !external(l.leg) {
		var err error
		if opts, err = l.e.opts.ClusterOpts(l.leg.To); err != nil {
			l.log.Error("destination cluster options", "err", err)
			return
		}
	}
	rounds := &roundTimes{} // one destination: the shards share what they learn of it
	var shards []*shard
	for i := range progress.Shards {
		shards = append(shards, &shard{idx: i, notify: make(chan struct{}, 1),
			sink: &sink{leg: l.leg, shard: i, opts: opts, tuning: l.e.opts.Tuning, log: l.log, m: l.e.m, rounds: rounds,
				dec: kraw.NewDecompressor(int(l.e.opts.MaxBatchBytes))}})
	}
	l.state.setShards(shards)
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		for _, sh := range shards {
			sh.sink.close()
		}
		l.closeAdmin()
		if l.store != nil {
			l.store.Close()
		}
	}()
	for _, sh := range shards {
		wg.Go(func() { l.runShard(ctx, sh) })
	}
	if l.groups != nil {
		wg.Go(func() { l.groups.run(ctx) })
	}
	bo := newBackoff(100*time.Millisecond, 30*time.Second)
	var fw fenceWatch
	retry := txnRetry{bo: newBackoff(txnRetryMin, txnRetryMax)}
	for {
		if !retry.wait(ctx, l) {
			return
		}
		if l.state.idle() {
			// No session carries the leg: its shards are opened (or a
			// failed one reopened) only when one comes. Opening
			// initialises the producers, which fences whichever gateway
			// of the region writes the leg now: a standby receiver
			// (standby.go) must not fence the one the senders use, nor
			// a gateway that wakes up from a pause with a failed
			// transaction the one that took the leg over.
			select {
			case <-ctx.Done():
				return
			case <-l.state.notify:
			}
			continue
		}
		if err := l.openShards(ctx, opts); err != nil {
			if ctx.Err() != nil {
				return
			}
			l.stats.setErr(err)
			if errors.Is(err, ErrFenced) {
				if !l.waitFenced(ctx, &fw, err) {
					return
				}
				continue
			}
			l.log.Warn("open destination", "leg", l.leg.ID, "err", err, "retry_in", bo.peek())
			if !bo.sleep(ctx) {
				return
			}
			continue
		}
		if fw.fenced {
			l.e.m.fenced.WithLabelValues(l.leg.ID).Set(0)
			l.log.Info("leg fence lifted; writing again", "leg", l.leg.ID)
			fw.fenced, fw.told = false, nil
		}
		bo.reset()
		l.state.probeDue()
		for _, d := range l.state.resumeDue() {
			l.e.m.resumes.WithLabelValues(l.leg.ID).Inc()
			if err := d.sess.conn.Send(ctx, d.rs); err != nil {
				l.log.Debug("send resume", "leg", l.leg.ID, "peer", d.sess.peer, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-l.state.notify:
		}
	}
}

// txnRetry spaces the coordinator's reopening of shards whose destination
// transaction failed (and so the Resume that retries it): capped, jittered
// backoff from txnRetryMin to txnRetryMax over the failures since the last
// commit, so that a destination that refuses every transaction is not
// hammered with new producers.
type txnRetry struct {
	bo     *backoff
	seen   int64 // failed transactions already waited for
	streak int   // the failure streak when last waited
}

const (
	txnRetryMin = 200 * time.Millisecond
	txnRetryMax = 30 * time.Second
)

// wait sleeps before retrying when a transaction failed since the last
// call; it reports false when ctx ended.
func (r *txnRetry) wait(ctx context.Context, l *inLeg) bool {
	streak, total := l.stats.txnFailures()
	if total <= r.seen {
		return true
	}
	if streak < r.streak+int(total-r.seen) {
		r.bo.reset() // a transaction committed in between: a new streak
	}
	r.seen, r.streak = total, streak
	l.e.m.txnRetries.WithLabelValues(l.leg.ID).Inc()
	lvl := slog.LevelDebug
	if streak == 1 || streak%10 == 0 {
		lvl = slog.LevelWarn
	}
	l.log.Log(ctx, lvl, "destination transactions failing; retrying after backoff", "leg", l.leg.ID,
		"failed_since_commit", streak, "retry_in", r.bo.peek())
	return r.bo.sleep(ctx)
}

// fenceWatch is what the coordinator remembers of a fence between looks.
type fenceWatch struct {
	fenced bool
	told   map[*inSession]bool // the sessions told the leg is fenced
}

// waitFenced handles a fenced leg (failed over: it must not write). It tells
// the owner, then waits for a new session or Tuning.FenceRecheck before
// the coordinator looks again, in case a failback lifted the fence. It
// reports false when ctx ended.
func (l *inLeg) waitFenced(ctx context.Context, fw *fenceWatch, err error) bool {
	if !fw.fenced {
		l.log.Warn("leg is fenced at its destination; not writing", "leg", l.leg.ID, "err", err)
	}
	fw.fenced = true
	if fw.told == nil {
		fw.told = map[*inSession]bool{}
	}
	// The owner and every sharer (share.go) stop reading the source.
	sessions, fence := l.state.feeders()
	for _, sess := range sessions {
		if fence == nil || fw.told[sess] {
			continue
		}
		if err := sess.conn.Send(ctx, &transport.Fenced{Leg: l.leg.ID, Epoch: fence.Epoch, Reason: fence.Reason}); err == nil {
			fw.told[sess] = true
		}
	}
	select {
	case <-ctx.Done():
		return false
	case <-l.state.notify: // a new session: tell it at once
	case <-time.After(l.e.opts.Tuning.FenceRecheck):
	}
	return true
}

// openShards opens every shard that is not ready, then loads their committed
// progress. Every producer is initialised (aborting what a predecessor left
// open) before progress is read, so the read sees all that is committed.
func (l *inLeg) openShards(ctx context.Context, opts []kgo.Opt) error {
	todo := l.state.toOpen()
	if len(todo) == 0 {
		return nil
	}
	if external(l.leg) {
		return l.openExternal(ctx, todo)
	}
	if l.store == nil {
		store, err := progress.Open(ctx, opts)
		if err != nil {
			return l.openErr(err)
		}
		l.store = store
	}
	topics := l.state.destTopics()
	for _, sh := range todo {
		sh.sink.store = l.store
		if err := sh.sink.open(ctx, topics); err != nil {
			return l.openErr(err)
		}
	}
	st, err := l.store.Load(ctx, l.leg.ID)
	if err != nil {
		return l.openErr(err)
	}
	if len(st.Unsettled) > 0 {
		l.log.Warn("progress loaded while a transaction still held the progress topic back: progress committed after it began is not seen, and the records it covers may be written again",
			"leg", l.leg.ID, "partitions", st.Unsettled)
	}
	if f := st.Fence(l.leg.ID); f != nil {
		l.state.fenced(f)
		l.e.m.fenced.WithLabelValues(l.leg.ID).Set(1)
		return fmt.Errorf("%w: %s (route epoch %d, since %s)", ErrFenced, f.Reason, f.Epoch, time.UnixMilli(f.At).UTC().Format(time.RFC3339))
	}
	var omap *progress.OffsetMap
	if l.groups != nil {
		omap = st.OffsetMap(l.leg.ID)
	}
	l.state.opened(todo, st, omap, l.stats.restore)
	l.stats.setErr(nil)
	return nil
}
