package mirror

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-gw/meridian/internal/kraw"
	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/topology/profile"
	"github.com/meridian-gw/meridian/transport"
)

// outPeer sends the legs routed to one remote gateway over one session at a
// time, redialling with capped, jittered backoff for as long as it runs.
type outPeer struct {
	peer *routing.Peer
	e    *Engine
	log  *slog.Logger
	legs []*outLeg
	// dialPeer opens a session to peer: the engine's Options.Dial, or the
	// one ApplyOut was given with the peer.
	dialPeer func(ctx context.Context, peer *topology.Gateway, h *transport.Hello) (transport.Conn, error)

	connected atomic.Bool
	rtt       atomic.Int64 // nanoseconds
	fails     atomic.Int64
	lastErr   atomic.Pointer[string]
	// A peer this gateway does not dial (peer.Dials false) sends its legs
	// over the sessions the peer opens (duplex.go): the listener hands
	// each session's sending half to incoming (offer), and run serves
	// them one at a time, newest first.
	mu       sync.Mutex
	incoming chan *half
	cur      *half // the half being served; nil between sessions
	// path switches the legs onto the peer's relay path while the direct
	// link is down (relay_path.go); nil when the peer has none.
	path *pathSwitch
	// recv chooses among the peer and its standby receivers
	// (standby.go); nil when the peer has none.
	recv *receiverChoice
}

// outLeg is the sending end of one leg; its stats outlive sessions.
type outLeg struct {
	leg    *routing.Leg
	stats  legStats
	fenced atomic.Pointer[string] // why the destination refuses the leg, or nil
	// filterErrs counts the records the leg's filter failed on (filter.go).
	filterErrs atomic.Int64
	// malformed counts records with a malformed origin header, and
	// writers are the loop writers' producer IDs (loops.go; nil: none).
	malformed atomic.Int64
	writers   *writerIDs
	// share is the running session's share group membership (shared
	// legs, sender_share.go); nil between sessions.
	share atomic.Pointer[shareGroup]
}

func (o *outLeg) setFenced(why string) {
	if why == "" {
		o.fenced.Store(nil)
		return
	}
	o.fenced.Store(&why)
}

func (p *outPeer) run(ctx context.Context) {
	if !p.peer.Dials {
		p.await(ctx)
		return
	}
	ids := make([]string, len(p.legs))
	for i, l := range p.legs {
		ids[i] = l.leg.ID
	}
	var receive, shared []string
	for _, l := range p.peer.Receive {
		receive = append(receive, l.ID)
	}
	for _, l := range p.legs {
		if l.leg.Shared() {
			shared = append(shared, l.leg.ID)
		}
	}
	gw := p.e.table.Gateway
	// A peer that answers with an error (refused, certificate, version) is
	// retried with capped exponential backoff and jitter up to 30 s. A path
	// that does not answer at all (a blackout, a rain fade) costs the peer
	// nothing, so it is probed again within a second: replication resumes
	// as soon as the path is back, not a long backoff later.
	refused, silent := newBackoff(200*time.Millisecond, 30*time.Second), newBackoff(100*time.Millisecond, time.Second)
	hello := func() *transport.Hello {
		h := &transport.Hello{VersionMin: transport.VersionMin, VersionMax: transport.VersionMax,
			Gateway: gw.Name, Region: gw.Region.Name, Legs: ids}
		if t := p.recv.target(); len(receive) > 0 && (t == nil || t == p.peer.Gateway) {
			// (A standby receiver is asked for nothing: it is not the
			// peer whose legs these are.)
			// Version 4: the peer's legs to us ride back on this session.
			h.Receive = receive
			h.RecvWindow, h.RecvMaxBatchBytes = p.e.window(receive), p.e.opts.MaxBatchBytes
		}
		// Version 5: the legs this gateway shares with its region's.
		h.Shared = shared
		return h
	}
	pathDown := false // the last attempt or session ended without an answer
	lastFailed := false
	defer p.path.stop()
	for attempt := 1; ctx.Err() == nil; attempt++ {
		// A receiver that failed gives the legs to a standby of its
		// region, if the peer has one (standby.go); only when every one
		// of them failed is the link itself down.
		p.recv.pick(lastFailed)
		// A direct link declared down sends the legs via the relay
		// path, if the peer has one (relay_path.go).
		relayed := p.path.relayed(ctx, pathDown && p.recv.allFailed())
		var conn transport.Conn
		var err error
		if relayed {
			conn, err = p.dialRelay(ctx, ids)
		} else {
			conn, err = p.dial(ctx, hello, pathDown)
		}
		if err != nil {
			pathDown = noAnswer(err) && !relayed
			lastFailed = !relayed
			if ctx.Err() != nil {
				return
			}
			if relayed {
				p.path.relayFailed(err) // the next relay path, if any
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
			p.log.Log(ctx, lvl, "dial peer gateway", "addr", p.peer.Gateway.Advertise, "relayed", relayed, "attempt", attempt, "err", err, "retry_in", bo.peek())
			if !bo.sleep(ctx) {
				return
			}
			continue
		}
		attempt = 0
		lastFailed = false
		if !relayed {
			p.recv.ok()
		}
		refused.reset()
		silent.reset()
		p.log.Info("link session open", "addr", conn.RemoteAddr(), "version", conn.Welcome().Version, "window", conn.Welcome().Window,
			"receive", conn.Welcome().Send, "relayed", relayed)
		sctx, end := ctx, context.CancelFunc(func() {})
		var watch sync.WaitGroup
		if !relayed && p.recv.onStandby() {
			// Back to the preferred receiver once gossip has it alive.
			sctx, end = context.WithCancel(ctx)
			watch.Go(func() { p.recv.watchBack(sctx, end) })
		}
		if relayed {
			// The probe ends this session (end) when the direct link
			// has been healthy for its hold-down.
			sctx, end = context.WithCancel(ctx)
			if !p.path.serving(end) {
				end()
				conn.Close(nil)
				continue
			}
		}
		err = p.serve(sctx, conn)
		if relayed {
			p.path.serving(nil)
		}
		back := sctx.Err() != nil && ctx.Err() == nil
		end()
		watch.Wait()
		if ctx.Err() != nil {
			return
		}
		if back {
			pathDown = false // the legs go back to the direct link (or preferred receiver) at once
			continue
		}
		if relayed {
			p.path.relayFailed(err)
		}
		p.failed(err)
		lastFailed = !relayed && err != nil
		bo := refused
		if noAnswer(err) {
			bo = silent
		}
		pathDown = noAnswer(err) && !relayed // a silent relay path does not declare the direct link down
		p.log.Warn("link session ended; redialling", "err", err, "retry_in", bo.peek())
		if !bo.sleep(ctx) {
			return
		}
	}
}

// serve runs a session this gateway dialled: its legs to the peer, and,
// when the peer agreed to send legs back (a version 4 Welcome listing
// them), the peer's legs to this gateway over the same connection
// (duplex.go): the receiving half is served by the engine's serveSession
// as if the peer had dialled. It returns when the session has ended and
// both halves are done.
func (p *outPeer) serve(ctx context.Context, conn transport.Conn) error {
	w := conn.Welcome()
	if w.Version < transport.VersionDuplex || len(w.Send) == 0 {
		if len(p.peer.Receive) > 0 {
			p.log.Warn("peer sends nothing back over this session: the legs it should send this gateway wait (it speaks protocol version < 4, or refuses them)",
				"version", w.Version, "legs", len(p.peer.Receive))
		}
		return p.session(ctx, conn)
	}
	h, gw := conn.Hello(), p.e.table.Gateway
	// The receiving half's Hello names the peer we dialled (the transport
	// checked its certificate) and the legs it will send; serveSession
	// authorizes them like any sender's.
	rh := &transport.Hello{VersionMin: w.Version, VersionMax: w.Version, Gateway: p.peer.Gateway.Name,
		Region: p.peer.Gateway.Region.Name, Legs: w.Send}
	rw := &transport.Welcome{Version: w.Version, Gateway: gw.Name, Region: gw.Region.Name,
		Window: h.RecvWindow, MaxBatchBytes: h.RecvMaxBatchBytes}
	d := newDuplex(conn, h, w, rh, rw)
	var wg sync.WaitGroup
	wg.Go(func() {
		// Its context outlives ctx: the sending half drains first, then
		// closes the connection, which ends this half.
		p.e.serveSession(context.WithoutCancel(ctx), d.recv)
		conn.Close(nil)
	})
	err := p.session(ctx, d.send)
	d.close(nil)
	wg.Wait()
	return err
}

// await serves the sessions a peer that this gateway does not dial opens
// to it: each one's sending half carries this gateway's legs to the
// peer, until the session ends and the next one arrives.
func (p *outPeer) await(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case h := <-p.incoming:
			select {
			case <-h.Done():
				continue // ended while it waited
			default:
			}
			p.mu.Lock()
			p.cur = h
			p.mu.Unlock()
			p.log.Info("link session open (dialled by the peer)", "addr", h.RemoteAddr(), "version", h.Welcome().Version,
				"window", h.Welcome().Window)
			err := p.session(ctx, h)
			p.mu.Lock()
			if p.cur == h {
				p.cur = nil
			}
			p.mu.Unlock()
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				p.failed(err)
				p.log.Warn("link session ended; waiting for the peer to dial again", "err", err)
			}
		}
	}
}

// offer hands await the sending half of a session the peer opened. A
// newer session of the peer displaces the one being served (the peer
// has one session at a time: it has given up on the older one) and any
// still waiting.
func (p *outPeer) offer(h *half) {
	select {
	case <-h.Done():
		return // a losing hedged redial, closed by the dialler already
	default:
	}
	p.mu.Lock()
	displaced := p.cur
	var waiting *half
	select {
	case waiting = <-p.incoming:
	default:
	}
	p.incoming <- h
	p.mu.Unlock()
	// Closing waits for the session's goroutines: not under mu.
	for _, old := range []*half{displaced, waiting} {
		if old != nil {
			old.Close(nil)
		}
	}
}

// profile is the link's profile, or nil.
func (p *outPeer) profile() *profile.Profile {
	if p.peer.Link == nil {
		return nil
	}
	load := p.e.opts.Profile
	if load == nil {
		load = profile.Load
	}
	prof, err := load(p.peer.Link.Profile)
	if err != nil {
		return nil
	}
	return prof
}

// batchTarget sizes batches to the link: about 100 ms of its data rate
// (topology.Link.DataRate), between 16 KiB and 1 MiB. On a thin link
// a 1 MiB batch per lane would take seconds to cross, and the destination
// would see nothing of it until it had.
func (p *outPeer) batchTarget() int64 {
	const most, least = 1 << 20, 16 << 10
	if p.peer.Link == nil {
		return most
	}
	rate := p.peer.Link.DataRateFrom(p.profile(), p.peer.Dials)
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
		return p.dialPeer(dctx, p.dialTarget(), hello())
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
			c, err := p.dialPeer(actx, p.dialTarget(), hello())
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
	legs := p.sessionLegs(conn)
	top := math.MinInt
	for _, l := range legs {
		top = max(top, l.leg.Route.Priority)
	}
	cr := newCredit(w.Window, top, p.rateLimit(conn))
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	runners := map[string]*legRunner{}
	for _, l := range legs {
		lr := &legRunner{out: l, p: p, conn: conn, cr: cr, maxBatch: maxBatch, maxFrame: maxFrame,
			fit: kraw.NewDecompressor(int(maxFrame)), unpack: kraw.NewDecompressor(p.e.opts.Tuning.SourceDecompressLimit),
			resume: make(chan *transport.Resume, 1), ready: map[string]chan string{}}
		if l.leg.Shared() && p.peer.Dials && w.Version >= transport.VersionShare && slices.Contains(conn.Hello().Shared, l.leg.ID) {
			lr.share = newShareGroup(lr)
		}
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

// sessionLegs are the legs a session carries: all of the peer's when this
// gateway dialled, else those the peer asked for in its Hello (which
// Accept checked are the peer's): a leg the dialler does not know would
// end the session as foreign at its end.
func (p *outPeer) sessionLegs(conn transport.Conn) []*outLeg {
	if p.peer.Dials {
		return p.legs
	}
	var legs []*outLeg
	for _, l := range p.legs {
		if slices.Contains(conn.Hello().Receive, l.leg.ID) {
			legs = append(legs, l)
		}
	}
	return legs
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
			for _, lr := range runners {
				lr.acks.ack(f.Seqs)
			}
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
