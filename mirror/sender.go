package mirror

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/meridian-gw/meridian/chaos/profiles"
	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/transport"
)

// outPeer sends the legs routed to one remote gateway over one session at a
// time, redialling with capped, jittered backoff for as long as it runs.
type outPeer struct {
	peer *routing.Peer
	e    *Engine
	log  *slog.Logger
	legs []*outLeg

	connected atomic.Bool
	rtt       atomic.Int64 // nanoseconds
	fails     atomic.Int64
	lastErr   atomic.Pointer[string]
}

// outLeg is the sending end of one leg; its stats outlive sessions.
type outLeg struct {
	leg    *routing.Leg
	stats  legStats
	fenced atomic.Pointer[string] // why the destination refuses the leg, or nil
}

func (o *outLeg) setFenced(why string) {
	if why == "" {
		o.fenced.Store(nil)
		return
	}
	o.fenced.Store(&why)
}

func (p *outPeer) run(ctx context.Context) {
	ids := make([]string, len(p.legs))
	for i, l := range p.legs {
		ids[i] = l.leg.ID
	}
	gw := p.e.table.Gateway
	// A peer that answers with an error (refused, certificate, version) is
	// retried with capped exponential backoff and jitter up to 30 s. A path
	// that does not answer at all (a blackout, a rain fade) costs the peer
	// nothing, so it is probed again within a second: replication resumes
	// as soon as the path is back, not a long backoff later.
	refused, silent := newBackoff(200*time.Millisecond, 30*time.Second), newBackoff(100*time.Millisecond, time.Second)
	hello := func() *transport.Hello {
		return &transport.Hello{VersionMin: transport.VersionMin, VersionMax: transport.VersionMax,
			Gateway: gw.Name, Region: gw.Region.Name, Legs: ids}
	}
	pathDown := false // the last attempt or session ended without an answer
	for attempt := 1; ctx.Err() == nil; attempt++ {
		conn, err := p.dial(ctx, hello, pathDown)
		if err != nil {
			pathDown = noAnswer(err)
			if ctx.Err() != nil {
				return
			}
			p.failed(err)
			bo := refused
			if noAnswer(err) {
				bo = silent
			}
			lvl := slog.LevelDebug
			if attempt == 1 || attempt%10 == 0 {
				lvl = slog.LevelWarn
			}
			p.log.Log(ctx, lvl, "dial peer gateway", "addr", p.peer.Gateway.Advertise, "attempt", attempt, "err", err, "retry_in", bo.peek())
			if !bo.sleep(ctx) {
				return
			}
			continue
		}
		attempt = 0
		refused.reset()
		silent.reset()
		p.log.Info("link session open", "addr", conn.RemoteAddr(), "version", conn.Welcome().Version, "window", conn.Welcome().Window)
		err = p.session(ctx, conn)
		if ctx.Err() != nil {
			return
		}
		p.failed(err)
		bo := refused
		if pathDown = noAnswer(err); pathDown {
			bo = silent
		}
		p.log.Warn("link session ended; redialling", "err", err, "retry_in", bo.peek())
		if !bo.sleep(ctx) {
			return
		}
	}
}

// profile is the link's profile, or nil.
func (p *outPeer) profile() *profiles.Profile {
	if p.peer.Link == nil {
		return nil
	}
	load := p.e.opts.Profile
	if load == nil {
		load = profiles.Load
	}
	prof, err := load(p.peer.Link.Profile)
	if err != nil {
		return nil
	}
	return prof
}

// batchTarget sizes batches to the link: about 100 ms of its rate (the rate
// cap, or the rate of its profile), between 16 KiB and 1 MiB. On a thin link
// a 1 MiB batch per lane would take seconds to cross, and the destination
// would see nothing of it until it had.
func (p *outPeer) batchTarget() int64 {
	const most, least = 1 << 20, 16 << 10
	if p.peer.Link == nil {
		return most
	}
	rate := p.peer.Link.RateLimit
	if prof := p.profile(); rate == 0 && prof != nil {
		rate = prof.Params(profiles.Up).Rate
	}
	if rate == 0 {
		return most
	}
	return min(max(rate/8/10, least), most)
}

// Redials over a path that went silent overlap: a new attempt starts every
// hedgeEvery, and the oldest is abandoned once enough are pending to cover
// three round trips of the link (a handshake without 0-RTT takes two). So
// when the path comes back an attempt begins within hedgeEvery, its first
// flight (with the Hello as 0-RTT data) goes out on a working path, and
// replication resumes about one round trip later; an attempt that began
// during the outage waits on doubling retransmission timers. An attempt
// costs two 1280-byte packets and a socket.
const (
	hedgeEvery = 200 * time.Millisecond
	dialLimit  = 30 * time.Second
)

// maxHedged is how many redial attempts may be pending at once.
func (p *outPeer) maxHedged() int {
	rtt := 200 * time.Millisecond
	if prof := p.profile(); prof != nil {
		rtt = max(rtt, prof.RTT()+prof.Up.Jitter+prof.Down.Jitter)
	}
	return min(max(int((3*rtt+hedgeEvery-1)/hedgeEvery), 4), 16)
}

// dial opens a session, racing staggered attempts when hedge is set. The
// first session wins; later ones are closed (the receiver then falls back
// to the winner). It returns the last error if every attempt failed.
func (p *outPeer) dial(ctx context.Context, hello func() *transport.Hello, hedge bool) (transport.Conn, error) {
	if !hedge {
		dctx, cancel := context.WithTimeout(ctx, dialLimit)
		defer cancel()
		return p.e.opts.Dialer.Dial(dctx, p.peer.Gateway.Advertise, hello())
	}
	type result struct {
		id   int
		conn transport.Conn
		err  error
	}
	dctx, cancel := context.WithTimeout(ctx, dialLimit)
	defer cancel()
	results := make(chan result, 64)
	var wg sync.WaitGroup
	pending := map[int]context.CancelFunc{} // by attempt, oldest has the lowest id
	next := 0
	launch := func() {
		id := next
		next++
		actx, acancel := context.WithCancel(dctx)
		pending[id] = acancel
		wg.Go(func() {
			c, err := p.e.opts.Dialer.Dial(actx, p.peer.Gateway.Advertise, hello())
			results <- result{id, c, err}
		})
	}
	// Losers finish after the winner is chosen: close what they open.
	var winner transport.Conn
	defer func() {
		cancel()
		go func() { wg.Wait(); close(results) }()
		for r := range results {
			if r.conn != nil && r.conn != winner {
				r.conn.Close(nil)
			}
		}
	}()
	most := p.maxHedged()
	launch()
	tick := time.NewTicker(hedgeEvery)
	defer tick.Stop()
	var lastErr error
	for {
		select {
		case r := <-results:
			_, mine := pending[r.id]
			delete(pending, r.id)
			if !mine { // abandoned by us
				if r.conn != nil {
					r.conn.Close(nil)
				}
				continue
			}
			if r.err == nil {
				winner = r.conn
				return r.conn, nil
			}
			lastErr = r.err
			if !noAnswer(r.err) || dctx.Err() != nil {
				return nil, r.err
			}
			if len(pending) == 0 {
				launch()
			}
		case <-tick.C:
			if len(pending) >= most {
				oldest := next
				for id := range pending {
					oldest = min(oldest, id)
				}
				pending[oldest]()
				delete(pending, oldest)
			}
			launch()
		case <-dctx.Done():
			if lastErr == nil {
				lastErr = dctx.Err()
			}
			return nil, lastErr
		}
	}
}

// noAnswer reports whether err says the peer did not answer at all (a
// timeout, as opposed to a refusal): the path is down, not the peer.
func noAnswer(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

func (p *outPeer) failed(err error) {
	p.fails.Add(1)
	s := err.Error()
	p.lastErr.Store(&s)
	p.e.m.sessionFails.WithLabelValues(p.peer.Gateway.Name, "sender").Inc()
}

// session runs the legs over one established session until it ends.
func (p *outPeer) session(ctx context.Context, conn transport.Conn) error {
	p.connected.Store(true)
	p.lastErr.Store(nil)
	p.e.m.sessions.WithLabelValues(p.peer.Gateway.Name, "sender").Inc()
	defer func() {
		p.connected.Store(false)
		p.e.m.sessions.WithLabelValues(p.peer.Gateway.Name, "sender").Dec()
	}()
	w := conn.Welcome()
	maxFrame := w.MaxBatchBytes
	if maxFrame <= 0 {
		maxFrame = 1 << 20
	}
	maxBatch := min(maxFrame, p.batchTarget())
	top := math.MinInt
	for _, l := range p.legs {
		top = max(top, l.leg.Route.Priority)
	}
	var rate int64
	if p.peer.Link != nil {
		rate = p.peer.Link.RateLimit
	}
	cr := newCredit(w.Window, top, rate)
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	runners := map[string]*legRunner{}
	for _, l := range p.legs {
		lr := &legRunner{out: l, p: p, conn: conn, cr: cr, maxBatch: maxBatch, maxFrame: maxFrame,
			resume: make(chan *transport.Resume, 1), ready: map[string]chan string{}}
		runners[l.leg.ID] = lr
		wg.Go(func() { lr.run(sctx) })
	}
	stopRTT := p.e.trackRTT(p.peer.Gateway.Name, conn, &p.rtt)
	// Frames are read with rctx, which outlives ctx by a short drain: when the
	// gateway stops, the legs stop sending, and acks for what is in flight
	// are still read so the receiver's commits are seen.
	rctx, rcancel := context.WithCancel(context.WithoutCancel(ctx))
	ended := make(chan struct{})
	var drain sync.WaitGroup
	drain.Go(func() {
		defer rcancel()
		select {
		case <-ended:
		case <-ctx.Done():
			cancel()
			dctx, dcancel := context.WithTimeout(rctx, 5*time.Second)
			cr.drained(dctx)
			dcancel()
		}
	})
	err := p.recvLoop(rctx, conn, cr, runners)
	close(ended)
	drain.Wait()
	cancel()
	wg.Wait()
	stopRTT()
	conn.Close(nil)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (p *outPeer) recvLoop(ctx context.Context, conn transport.Conn, cr *credit, runners map[string]*legRunner) error {
	for {
		f, err := conn.Recv(ctx)
		if err != nil {
			return err
		}
		switch f := f.(type) {
		case *transport.Fenced:
			if lr := runners[f.Leg]; lr != nil {
				p.log.Warn("leg is fenced at its destination; not reading its source", "leg", f.Leg, "epoch", f.Epoch, "reason", f.Reason)
				lr.out.setFenced(fmt.Sprintf("%s (route epoch %d)", f.Reason, f.Epoch))
				select { // latest wins: nil stops the pump
				case <-lr.resume:
				default:
				}
				lr.resume <- nil
			}
		case *transport.Resume:
			if lr := runners[f.Leg]; lr != nil {
				lr.out.setFenced("")
				select { // latest wins
				case <-lr.resume:
				default:
				}
				lr.resume <- f
			}
		case *transport.Ack:
			cr.ack(f.Seqs)
		case *transport.Credit:
			cr.setWindow(f.Window)
		case *transport.TopicReady:
			if lr := runners[f.Leg]; lr != nil {
				lr.topicReady(f)
			}
		case *transport.Error:
			return f
		case *transport.Goaway:
			return fmt.Errorf("peer is going away: %s", f.Reason)
		}
	}
}

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
			kgo.ConsumeResetOffset(reset),
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
	for i, cl := range clients {
		srcs[i] = kgoAdder{cl, reset}
		runs[i] = func(ctx context.Context) error { return lr.pipeline(ctx, cl, rs.Gen) }
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
func (lr *legRunner) pipeline(ctx context.Context, cl *kgo.Client, gen uint64) error {
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
			sendErr = lr.sendRecords(ctx, &rb, gen, fp.Topic, fp.Partition, fp.HighWatermark, fp.Records, -1, next)
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
}

// sendRecords sends the records of a partition at offsets from and later
// (from < 0: all) as batches of at most the credit's batch limit, skipping
// transaction markers. The last batch ends at next, and is sent even when
// empty, so that the receiver's position moves past what carried nothing.
func (lr *legRunner) sendRecords(ctx context.Context, rb *recordBatcher, gen uint64, topic string, partition int32, hwm int64, recs []*kgo.Record, from, next int64) error {
	leg := lr.out.leg
	rb.batch = rb.batch[:0]
	size := int64(0)
	limit := lr.cr.batchLimit(lr.maxBatch)
	flush := func(next int64) error {
		b := &transport.Batch{
			Leg: leg.ID, Gen: gen, Topic: topic, Partition: partition,
			NextOffset: next, HighWatermark: hwm,
			Records: append([]transport.Record(nil), rb.batch...),
		}
		rb.batch, size = rb.batch[:0], 0
		return lr.send(ctx, b)
	}
	for _, r := range recs {
		if r.Attrs.IsControl() || r.Offset < from {
			continue // a transaction marker: no data, but it moves next
		}
		tr := transport.Record{Offset: r.Offset, Timestamp: r.Timestamp.UnixMilli(), Key: r.Key, Value: r.Value}
		if nh := len(r.Headers); nh > 0 {
			// Headers share one backing array per fetch.
			if cap(rb.hdrs)-len(rb.hdrs) < nh {
				rb.hdrs = make([]transport.Header, 0, max(nh, 4096))
			}
			start := len(rb.hdrs)
			for _, h := range r.Headers {
				rb.hdrs = append(rb.hdrs, transport.Header{Key: h.Key, Value: h.Value})
			}
			tr.Headers = rb.hdrs[start:len(rb.hdrs):len(rb.hdrs)]
		}
		// An upper estimate of the record's share of RawSize, for
		// splitting; credit is taken on the exact RawSize.
		rsz := int64(recordSize(&tr) + 16 + 4*len(tr.Headers))
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

// send takes credit for a batch and writes it.
func (lr *legRunner) send(ctx context.Context, b *transport.Batch) error {
	seq, err := lr.cr.acquire(ctx, b.Leg, lr.out.leg.Route.Priority, int64(b.RawSize()))
	if err != nil {
		return err
	}
	b.Seq = seq
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

// discoverer finds the leg's topics and partitions at the source, announces
// new ones to the receiver and adds them to the consumer.
type discoverer struct {
	lr        *legRunner
	srcs      []partitionAdder // the pipelines' sources; partitions are dealt round-robin
	next      int
	adm       *kadm.Client
	positions map[tp]int64
	// progressed: topics with a position in the Resume (built by known).
	progressed map[string]bool
	consumed   map[string]int32             // topic → partitions being consumed
	announced  map[string]map[string]string // topic → configs last announced
}

func (d *discoverer) loop(ctx context.Context) {
	t := time.NewTicker(d.lr.out.leg.Discover())
	defer t.Stop()
	for {
		if err := d.once(ctx); err != nil && ctx.Err() == nil {
			d.lr.p.log.Warn("topic discovery", "leg", d.lr.out.leg.ID, "err", err)
			d.lr.out.stats.setErr(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (d *discoverer) once(ctx context.Context) error {
	leg := d.lr.out.leg
	td, err := d.adm.ListTopics(ctx)
	if err != nil {
		return fmt.Errorf("list source topics: %w", err)
	}
	var names []string
	for _, name := range td.Names() {
		if td[name].Err == nil && leg.Match(name) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil
	}
	// One request for every routed topic's configs: a change reaches the
	// destination within one discovery interval, like a partition added.
	configs, err := d.topicConfigs(ctx, names...)
	if err != nil {
		return err
	}
	// Announce every new or changed topic at once, so that a session's
	// start costs one round trip whatever the number of topics. A topic
	// with committed progress at the destination (a position in the
	// Resume) was prepared there before: its partitions are consumed at
	// once and the receiver holds their batches until the announcement is
	// through. A new topic is consumed only once its destination is ready.
	type announcement struct {
		t     *transport.Topic
		ready <-chan string
		had   int32 // partitions consumed before
	}
	var pending []announcement
	var errs []error
	for _, name := range names {
		n := int32(len(td[name].Partitions))
		cfg := configs[name]
		if n <= d.consumed[name] && maps.Equal(cfg, d.announced[name]) {
			continue
		}
		t := &transport.Topic{Leg: leg.ID, Name: name, Partitions: n, Configs: cfg}
		ready, err := d.announce(ctx, t)
		if err != nil {
			return err // the session is gone
		}
		a := announcement{t: t, ready: ready, had: d.consumed[name]}
		if d.known(name) {
			d.consume(name, n)
		}
		pending = append(pending, a)
	}
	for _, a := range pending {
		name, n := a.t.Name, a.t.Partitions
		if err := d.await(ctx, a.t, a.ready); err != nil {
			errs = append(errs, err)
			continue
		}
		if d.announced == nil {
			d.announced = map[string]map[string]string{}
		}
		if n <= a.had {
			d.lr.p.log.Info("source topic configs changed", "leg", leg.ID, "topic", name, "configs", a.t.Configs)
		}
		d.announced[name] = a.t.Configs
		d.consume(name, n)
	}
	return errors.Join(errs...)
}

// known reports whether the destination has committed progress for topic:
// the receiver prepared its destination before.
func (d *discoverer) known(topic string) bool {
	if d.progressed == nil {
		d.progressed = map[string]bool{}
		for k := range d.positions {
			d.progressed[k.Topic] = true
		}
	}
	return d.progressed[topic]
}

// consume adds the partitions of topic below n that are not consumed yet,
// from their resume positions.
func (d *discoverer) consume(name string, n int32) {
	if n <= d.consumed[name] {
		return
	}
	for p := d.consumed[name]; p < n; p++ {
		at := int64(-1)
		if o, ok := d.positions[tp{Topic: name, Partition: p}]; ok {
			at = o
		}
		d.srcs[d.next%len(d.srcs)].add(name, p, at)
		d.next++
	}
	d.lr.p.log.Info("mirroring topic", "leg", d.lr.out.leg.ID, "topic", name, "dest", d.lr.out.leg.DestTopic(name), "partitions", n)
	d.consumed[name] = n
}

// topicConfigs returns the non-default, non-sensitive configs of topics.
func (d *discoverer) topicConfigs(ctx context.Context, topics ...string) (map[string]map[string]string, error) {
	rcs, err := d.adm.DescribeTopicConfigs(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("describe source topic configs: %w", err)
	}
	out := map[string]map[string]string{}
	for _, rc := range rcs {
		if rc.Err != nil {
			return nil, fmt.Errorf("describe source topic %s configs: %w", rc.Name, rc.Err)
		}
		m := map[string]string{}
		for _, c := range rc.Configs {
			if c.Source == kmsg.ConfigSourceDynamicTopicConfig && !c.Sensitive && c.Value != nil {
				m[c.Key] = *c.Value
			}
		}
		out[rc.Name] = m
	}
	return out, nil
}

// announce sends a Topic frame; the receiver's TopicReady comes on the
// channel returned.
func (d *discoverer) announce(ctx context.Context, t *transport.Topic) (<-chan string, error) {
	ch := make(chan string, 1)
	d.lr.mu.Lock()
	d.lr.ready[t.Name] = ch
	d.lr.mu.Unlock()
	if err := d.lr.conn.Send(ctx, t); err != nil {
		return nil, fmt.Errorf("announce topic %s: %w", t.Name, err)
	}
	return ch, nil
}

// await waits for the receiver's answer to the announcement of t.
func (d *discoverer) await(ctx context.Context, t *transport.Topic, ready <-chan string) error {
	tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	select {
	case <-tctx.Done():
		return fmt.Errorf("announce topic %s: no answer from receiver: %w", t.Name, tctx.Err())
	case e := <-ready:
		if e != "" {
			return fmt.Errorf("destination topic for %s: %s", t.Name, e)
		}
		return nil
	}
}

// groupPollInterval is how often a sender reads the source groups' committed
// offsets; a change reaches the destination within about this much plus a
// round trip.
const groupPollInterval = 500 * time.Millisecond

// watchGroups sends the committed offsets of the leg's source consumer groups
// to the receiver whenever they change (all of them once per session).
func (lr *legRunner) watchGroups(ctx context.Context, adm *kadm.Client) {
	leg := lr.out.leg
	sent := map[transport.GroupOffset]bool{} // offsets the receiver has been told
	t := time.NewTicker(groupPollInterval)
	defer t.Stop()
	for {
		if err := lr.sendGroupOffsets(ctx, adm, sent); err != nil && ctx.Err() == nil {
			lr.p.log.Warn("read source consumer groups", "leg", leg.ID, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (lr *legRunner) sendGroupOffsets(ctx context.Context, adm *kadm.Client, sent map[transport.GroupOffset]bool) error {
	leg := lr.out.leg
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		return err
	}
	var groups []string
	for _, g := range listed.Groups() {
		if leg.MatchGroup(g) {
			groups = append(groups, g)
		}
	}
	if len(groups) == 0 {
		return nil
	}
	f := &transport.Groups{Leg: leg.ID}
	now := map[transport.GroupOffset]bool{}
	var ferr error
	for _, r := range adm.FetchManyOffsets(ctx, groups...) {
		if r.Err != nil {
			ferr = errors.Join(ferr, fmt.Errorf("group %s: %w", r.Group, r.Err))
			continue
		}
		r.Fetched.Each(func(o kadm.OffsetResponse) {
			if o.Err != nil || o.At < 0 || !leg.Match(o.Topic) {
				return
			}
			g := transport.GroupOffset{Group: r.Group, Topic: o.Topic, Partition: o.Partition, Offset: o.At}
			now[g] = true
			if !sent[g] {
				f.Offsets = append(f.Offsets, g)
			}
		})
	}
	if len(f.Offsets) > 0 {
		if err := lr.conn.Send(ctx, f); err != nil {
			return fmt.Errorf("send group offsets: %w", err)
		}
	}
	clear(sent)
	maps.Copy(sent, now)
	return ferr
}
