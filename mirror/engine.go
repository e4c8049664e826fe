package mirror

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/kafkaopt"
	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/topology/profile"
	"github.com/meridian-gw/meridian/transport"
)

// Options configure an Engine. Zero values are documented per field.
type Options struct {
	// Table is the gateway's forwarding table. It must not be nil.
	Table *routing.Table
	// Dial opens a session to the peer gateway named peer (a gateway of
	// Table.Out that this gateway dials, routing.Peer.Dials), whose dialer
	// and address are the caller's to choose: one dialer per peer, since
	// each link has its own tuning. Required when Table.Out is not empty.
	Dial func(ctx context.Context, peer string, h *transport.Hello) (transport.Conn, error)
	// Listen opens the listener that accepts sessions from peer gateways,
	// deciding each with accept (the engine's). Required when the gateway
	// receives legs over a link it does not dial, or sends legs to a peer
	// that dials it (links[].dial). Bind (or Run) calls it; Run closes the listener when it
	// returns. New never does: building an engine binds nothing.
	Listen func(accept transport.Accept) (transport.Listener, error)
	// ClusterOpts returns franz-go options reaching a cluster. Nil means
	// kafkaopt.Opts with Logger.
	ClusterOpts func(*topology.Cluster) ([]kgo.Opt, error)
	// OpenSource opens the sources of legs whose source cluster is not
	// Kafka (kind amqp: package mirror/amqpsource). Nil means such legs
	// fail to start, with the reason in their status.
	OpenSource OpenSource
	// OpenWriter opens the destinations of legs whose destination cluster
	// is not Kafka (kind amqp: package mirror/amqpsink). Nil means such
	// legs never open, with the reason in their status.
	OpenWriter OpenWriter
	// Profile resolves a link's profile name (nil: the embedded profiles);
	// senders size batches from its rate.
	Profile func(name string) (*profile.Profile, error)
	// Logger receives the engine's logs. Nil discards them.
	Logger *slog.Logger
	// Registerer receives the engine's metrics. Nil registers nothing.
	Registerer prometheus.Registerer
	// Window is the credit window the receiver grants a sender, in raw
	// bytes, on links whose topology sets none (links[].window). Zero means
	// 64 MiB.
	Window int64
	// MaxBatchBytes is the largest raw batch a sender may send. Zero means
	// 1 MiB.
	MaxBatchBytes int64
	// Alive reports what gossip knows of a gateway: alive (or suspect),
	// and known false when gossip has no word of it (no gossip, or not
	// heard of yet). Nil: nothing is known. A sender skips standby
	// receivers gossip has dead (standby.go).
	Alive func(gateway string) (alive, known bool)
	// Tuning holds timings and sizes that production leaves at their
	// defaults and tests shorten. The zero value means every default.
	Tuning Tuning
}

// Tuning are an engine's timings and sizes. Each zero field means its
// default. They are per engine, so that gateways with different settings
// can run in one process.
type Tuning struct {
	// FenceRecheck is how often a fenced inbound leg looks whether its
	// fence was lifted. Zero means 10 s.
	FenceRecheck time.Duration
	// TopicWait is how long a batch waits at the head of a shard's queue
	// for its topic (or partition) to be prepared before the leg resumes
	// from what is committed. Zero means 30 s.
	TopicWait time.Duration
	// TailRanges is how many offset ranges a progress record carries
	// before they are sealed into a segment (about 0.5 KiB packed at the
	// default). Zero means 128.
	TailRanges int
	// PruneEvery is how often a sink looks for offset-map segments whose
	// destination records retention has deleted. Zero means 5 minutes.
	PruneEvery time.Duration
	// MergeAlways makes passthrough sinks merge small batches as if the
	// destination were slow and the CPUs idle. False means they merge only
	// when that is so.
	MergeAlways bool
	// MaxPendingGroupOffsets bounds, per inbound leg, the consumer group
	// offsets (group, topic, partition) waiting to be committed; offers
	// beyond it are dropped and counted. Zero means 65536.
	MaxPendingGroupOffsets int
	// Penalty is how long a peer that broke the protocol is refused after
	// its first violation; it doubles per further violation up to 64
	// times as long. Zero means 1 s.
	Penalty time.Duration
	// SourceDecompressLimit bounds what one source Kafka batch may
	// decompress to when a passthrough sender decodes it (a batch that
	// does not fit the receiver's limit). Zero means 256 MiB.
	SourceDecompressLimit int
	// ShareSession overrides the session timeout of shared legs'
	// consumer groups (routes[].share_timeout, sender_share.go): how
	// long a sending gateway that stopped heartbeating (paused, cut from
	// its source cluster) keeps its partitions before the group moves
	// them to the others. Heartbeats go every tenth of it. Zero means the
	// route's; Kafka brokers refuse less than their
	// group.min.session.timeout.ms (6 s by default).
	ShareSession time.Duration
}

func (t Tuning) withDefaults() Tuning {
	if t.FenceRecheck <= 0 {
		t.FenceRecheck = 10 * time.Second
	}
	if t.TopicWait <= 0 {
		t.TopicWait = 30 * time.Second
	}
	if t.TailRanges <= 0 {
		t.TailRanges = 128
	}
	if t.PruneEvery <= 0 {
		t.PruneEvery = 5 * time.Minute
	}
	if t.MaxPendingGroupOffsets <= 0 {
		t.MaxPendingGroupOffsets = 65536
	}
	if t.Penalty <= 0 {
		t.Penalty = penaltyFirst
	}
	if t.SourceDecompressLimit <= 0 {
		t.SourceDecompressLimit = sourceDecompressLimit
	}
	return t
}

// Engine runs one gateway's legs: it reads the source of outbound legs and
// sends them to peer gateways, and writes the batches of inbound legs to
// their destination clusters, exactly once.
type Engine struct {
	opts  Options
	table *routing.Table
	log   *slog.Logger
	m     *metrics
	// inMu guards in, which ApplyIn changes, and the receivers' state:
	// receiving (true from Run's start until it stops its receivers),
	// recvCtx and inStops (each running coordinator's stop, which waits).
	// Lock order: inMu, then legState.mu.
	inMu      sync.RWMutex
	in        map[string]*inLeg
	receiving bool
	recvCtx   context.Context
	inStops   map[*inLeg]func()
	receivers sync.WaitGroup
	// lookupTable is the table whose gateways Accept knows (ApplyIn
	// replaces it with the new table's).
	lookupTable atomic.Pointer[routing.Table]

	// outMu guards out, which ApplyOut replaces, and the senders' state:
	// sending (true from Run's start until ctx ends), sendCtx and stops
	// (each running sender's stop, which waits). A leaf.
	outMu   sync.Mutex
	out     []*outPeer
	sending bool
	sendCtx context.Context
	stops   map[*outPeer]func()
	senders sync.WaitGroup
	start   atomic.Int64 // Run's start, Unix nanoseconds; 0 before Run (Status reads it from other goroutines)

	lnMu sync.Mutex
	ln   transport.Listener // set by Bind; nil when not bound or the gateway receives nothing

	rttMu sync.Mutex
	rtts  map[string]*atomic.Int64 // inbound peers' RTT

	penalties penalties // peers that broke the protocol, refused by Accept for a while
}

// New checks opts and builds an engine. It binds and dials nothing: Bind
// and Run do.
func New(opts Options) (*Engine, error) {
	if opts.Table == nil {
		return nil, errors.New("mirror: Options.Table is nil")
	}
	if (len(opts.Table.Out) > 0 || len(opts.Table.Relays) > 0) && opts.Dial == nil {
		return nil, errors.New("mirror: gateway sends legs but Options.Dial is nil")
	}
	if accepts(opts.Table) && opts.Listen == nil {
		return nil, errors.New("mirror: gateway receives legs or is dialled by peers but Options.Listen is nil")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ClusterOpts == nil {
		log := opts.Logger
		opts.ClusterOpts = func(c *topology.Cluster) ([]kgo.Opt, error) { return kafkaopt.Opts(c, log) }
	}
	if opts.Window <= 0 {
		opts.Window = 64 << 20
	}
	if opts.MaxBatchBytes <= 0 {
		opts.MaxBatchBytes = 1 << 20
	}
	opts.Tuning = opts.Tuning.withDefaults()
	e := &Engine{
		opts: opts, table: opts.Table,
		log:     opts.Logger.With("component", "mirror"),
		m:       newMetrics(opts.Registerer),
		in:      map[string]*inLeg{},
		rtts:    map[string]*atomic.Int64{},
		stops:   map[*outPeer]func(){},
		inStops: map[*inLeg]func(){},
	}
	e.penalties.first = opts.Tuning.Penalty
	e.lookupTable.Store(opts.Table)
	for _, l := range opts.Table.In {
		e.in[l.ID] = newInLeg(e, l, opts.Table)
	}
	for _, p := range opts.Table.Out {
		e.out = append(e.out, e.newOutPeer(p, e.dial))
	}
	return e, nil
}

func (e *Engine) newOutPeer(p *routing.Peer, dial func(context.Context, *topology.Gateway, *transport.Hello) (transport.Conn, error)) *outPeer {
	op := &outPeer{peer: p, e: e, log: e.log.With("peer", p.Gateway.Name), incoming: make(chan *half, 1), dialPeer: dial}
	e.m.peerSeries(p.Gateway.Name, "sender")
	for _, l := range p.Legs {
		op.legs = append(op.legs, &outLeg{leg: l, writers: newWriterIDs(l.LoopWriters)})
	}
	op.path = newPathSwitch(op)
	op.recv = newReceiverChoice(op)
	return op
}

// ErrNotLive is returned by ApplyOut for a change it cannot make while
// the engine runs; the caller restarts the engine instead.
var ErrNotLive = errors.New("mirror: the change cannot apply to the running engine")

// ErrCarried is the ErrNotLive of ApplyIn for a leg it would stop that a
// session still carries. A sender reloaded just before (the documented
// order) has closed that session already, and the receiver detaches it a
// moment later: the caller may retry.
var ErrCarried = fmt.Errorf("%w: a leg it would stop is carried by a session", ErrNotLive)

// ApplyOut replaces the peers the engine sends to with table's while it
// runs: the running sender of each peer for which same(old, new) holds
// keeps running, untouched; the others stop (draining as on shutdown:
// they stop reading and wait for acknowledgements) and the new ones
// start, dialling with dial. Every leg a new sender carries resumes from
// the progress at its destination, so records stay exactly once. It
// returns the names of the peers stopped or started, sorted.
//
// Only what the engine sends may change: table's inbound legs must be the
// engine's (the caller compares them). It returns ErrNotLive, changing
// nothing, when the engine is not running, or when a peer that dials this
// gateway (routing.Peer.Dials false, whose sessions the listener hands
// over) would change.
func (e *Engine) ApplyOut(table *routing.Table, same func(old, new *routing.Peer) bool,
	dial func(ctx context.Context, peer string, h *transport.Hello) (transport.Conn, error)) ([]string, error) {
	d := func(ctx context.Context, peer *topology.Gateway, h *transport.Hello) (transport.Conn, error) {
		return dial(ctx, peer.Name, h)
	}
	e.outMu.Lock()
	if !e.sending {
		e.outMu.Unlock()
		return nil, fmt.Errorf("%w: not running", ErrNotLive)
	}
	old := map[string]*outPeer{}
	for _, p := range e.out {
		old[p.peer.Gateway.Name] = p
	}
	var next, started []*outPeer
	kept := map[*outPeer]bool{}
	var names []string
	for _, np := range table.Out {
		if op := old[np.Gateway.Name]; op != nil && same(op.peer, np) {
			next = append(next, op)
			kept[op] = true
			continue
		}
		if op := old[np.Gateway.Name]; !np.Dials || op != nil && !op.peer.Dials {
			e.outMu.Unlock()
			return nil, fmt.Errorf("%w: peer %s dials this gateway", ErrNotLive, np.Gateway.Name)
		}
		started = append(started, e.newOutPeer(np, d))
		next = append(next, started[len(started)-1])
		names = append(names, np.Gateway.Name)
	}
	for _, op := range e.out {
		if !kept[op] && !op.peer.Dials {
			e.outMu.Unlock()
			return nil, fmt.Errorf("%w: peer %s dials this gateway", ErrNotLive, op.peer.Gateway.Name)
		}
	}
	var stops []func()
	for _, op := range e.out {
		if kept[op] {
			continue
		}
		stops = append(stops, e.stops[op])
		delete(e.stops, op)
		if !slices.Contains(names, op.peer.Gateway.Name) {
			names = append(names, op.peer.Gateway.Name)
		}
	}
	// The new senders start once the old ones of the same peers have
	// drained: two senders of one leg would race for its progress.
	e.out = next
	e.outMu.Unlock()
	for _, stop := range stops {
		stop()
	}
	e.outMu.Lock()
	if e.sending {
		for _, op := range started {
			e.startSenderLocked(op)
		}
	}
	e.outMu.Unlock()
	sort.Strings(names)
	return names, nil
}

// inLeg is the inbound leg id, if the engine receives it.
func (e *Engine) inLeg(id string) (*inLeg, bool) {
	e.inMu.RLock()
	defer e.inMu.RUnlock()
	l, ok := e.in[id]
	return l, ok
}

// startReceiverLocked starts l's coordinator under the receivers'
// context; e.inStops[l] stops it and waits. e.inMu must be held and
// e.receiving true.
func (e *Engine) startReceiverLocked(l *inLeg) {
	ctx, cancel := context.WithCancel(e.recvCtx)
	done := make(chan struct{})
	e.receivers.Go(func() {
		defer close(done)
		l.run(ctx)
	})
	e.inStops[l] = func() { cancel(); <-done }
}

// ApplyIn changes the legs the engine receives to table's while it runs:
// legs added start their coordinator (which resumes from the progress at
// the destination), legs removed stop theirs (finishing the transaction
// in progress), legs whose print differs (same(old, new) false) do both;
// the others keep running untouched (same may ignore the route's filter,
// which only the sender evaluates: the status shows the new one). It returns ErrNotLive, changing
// nothing, when the engine is not running or a leg it would stop is
// carried by a session (reload the senders first when removing a leg).
// Sessions are decided with table's gateways from now on.
func (e *Engine) ApplyIn(table *routing.Table, same func(old, new *routing.Leg) bool) (added, removed []string, err error) {
	next := map[string]*routing.Leg{}
	for _, l := range table.In {
		next[l.ID] = l
	}
	e.inMu.Lock()
	if !e.receiving {
		e.inMu.Unlock()
		return nil, nil, fmt.Errorf("%w: not running", ErrNotLive)
	}
	var gone []*inLeg
	for id, l := range e.in {
		if n, ok := next[id]; ok && same(l.leg, n) {
			continue
		}
		if !l.state.idle() {
			e.inMu.Unlock()
			return nil, nil, fmt.Errorf("%w: leg %s", ErrCarried, id)
		}
		gone = append(gone, l)
	}
	for id, l := range e.in {
		if n, ok := next[id]; ok && same(l.leg, n) {
			l.filter.Store(&n.Route.Filter) // same may ignore what only the sender uses
		}
	}
	var stops []func()
	for _, l := range gone {
		delete(e.in, l.leg.ID)
		if stop := e.inStops[l]; stop != nil {
			stops = append(stops, stop)
		}
		delete(e.inStops, l)
		removed = append(removed, l.leg.ID)
	}
	e.lookupTable.Store(table)
	e.inMu.Unlock()
	// A changed leg's new coordinator starts once the old one has ended:
	// two coordinators of one leg would race for its transactional IDs.
	for _, stop := range stops {
		stop()
	}
	e.inMu.Lock()
	defer e.inMu.Unlock()
	for id, n := range next {
		if _, ok := e.in[id]; ok {
			continue
		}
		l := newInLeg(e, n, table)
		e.in[id] = l
		if e.receiving {
			e.startReceiverLocked(l)
		}
		added = append(added, id)
	}
	sort.Strings(added)
	sort.Strings(removed)
	return added, removed, nil
}

// startSenderLocked starts p's sender under the engine's sending context;
// e.stops[p] stops it and waits. e.outMu must be held and e.sending true.
func (e *Engine) startSenderLocked(p *outPeer) {
	ctx, cancel := context.WithCancel(e.sendCtx)
	done := make(chan struct{})
	e.senders.Go(func() {
		defer close(done)
		p.run(ctx)
	})
	e.stops[p] = func() { cancel(); <-done }
}

// peers is the peers the engine sends to now.
func (e *Engine) peers() []*outPeer {
	e.outMu.Lock()
	defer e.outMu.Unlock()
	return e.out
}

// accepts reports whether a gateway with table t accepts sessions: it
// receives a leg over a link whose sessions the other side opens, or it
// sends legs to a peer that dials it.
func accepts(t *routing.Table) bool {
	for _, l := range t.In {
		if l.Link.Dial != t.Gateway.Region {
			return true
		}
	}
	for _, p := range t.Out {
		if !p.Dials {
			return true
		}
	}
	return t.Relaying
}

// Bind opens the listener for peer gateways when the engine accepts
// sessions (Options.Listen), so that a caller can learn Addr before Run.
// Run calls it too. Idempotent: a second call returns nil and binds
// nothing.
func (e *Engine) Bind() error {
	e.lnMu.Lock()
	defer e.lnMu.Unlock()
	if e.ln != nil || !accepts(e.table) {
		return nil
	}
	ln, err := e.opts.Listen(e.Accept)
	if err != nil {
		return fmt.Errorf("listen for peer gateways: %w", err)
	}
	e.ln = ln
	return nil
}

// listener is the bound listener, or nil.
func (e *Engine) listener() transport.Listener {
	e.lnMu.Lock()
	defer e.lnMu.Unlock()
	return e.ln
}

// Addr is the address the engine listens on once bound, or nil.
func (e *Engine) Addr() net.Addr {
	if ln := e.listener(); ln != nil {
		return ln.Addr()
	}
	return nil
}

// dial opens a session to a peer gateway through Options.Dial.
func (e *Engine) dial(ctx context.Context, peer *topology.Gateway, h *transport.Hello) (transport.Conn, error) {
	return e.opts.Dial(ctx, peer.Name, h)
}

// Accept is the transport.Accept callback of the engine's listener: it takes
// sessions whose legs are all routed to this gateway and may all be fed by
// the peer (authorize). It has no side effect but metrics: a Hello may come
// as replayable 0-RTT data.
func (e *Engine) Accept(h *transport.Hello) (*transport.Welcome, error) {
	if left, ok := e.penalties.refused(offender(h)); ok { // relay.go: a relayed session's origin
		e.m.refused.WithLabelValues(h.Gateway, "penalty").Inc()
		return nil, &transport.Error{Code: transport.ErrCodeLimit,
			Message: fmt.Sprintf("gateway %s broke the protocol: its sessions are refused for another %s", offender(h), left.Round(time.Millisecond))}
	}
	if w, ok, err := e.acceptRelay(h); ok {
		return w, err
	}
	if terr := e.authorize(h); terr != nil {
		return nil, terr
	}
	if terr := e.authorizeReceive(h); terr != nil {
		return nil, terr
	}
	return &transport.Welcome{
		Gateway: e.table.Gateway.Name, Region: e.table.Gateway.Region.Name,
		Window: e.window(h.Legs), MaxBatchBytes: e.opts.MaxBatchBytes,
		Send: slices.Clone(h.Receive),
	}, nil
}

// awaiting is the peer named gateway that dials this gateway to receive
// its legs, or nil.
func (e *Engine) awaiting(gateway string) *outPeer {
	for _, p := range e.peers() {
		if !p.peer.Dials && p.peer.Gateway.Name == gateway {
			return p
		}
	}
	return nil
}

// authorizeReceive checks the legs a dialler asks to receive (a version 4
// Hello's Receive): each must be a leg this gateway sends to the
// dialler's gateway over a link the dialler dials. A peer is never
// trusted for more than its own legs.
func (e *Engine) authorizeReceive(h *transport.Hello) *transport.Error {
	if len(h.Receive) == 0 {
		return nil
	}
	p := e.awaiting(h.Gateway)
	for _, id := range h.Receive {
		if p == nil || !p.peer.SendsLeg(id) {
			msg := "gateway " + h.Gateway + " asked to receive leg " + strconv.Quote(id) + ", which gateway " + e.table.Gateway.Name +
				" does not send it over a link it dials"
			e.m.refused.WithLabelValues(h.Gateway, "foreign_receive").Inc()
			e.log.Warn("refused link session", "peer", h.Gateway, "reason", "foreign_receive", "err", msg)
			return &transport.Error{Code: transport.ErrCodeForbidden, Message: msg}
		}
	}
	return nil
}

// window is the credit window granted to a session carrying legs: the
// window of their link when the topology sets one (links[].window), the
// engine's otherwise. Legs of several links (one peer on two links) get the
// smallest window set among them.
func (e *Engine) window(legs []string) int64 {
	var w int64
	for _, id := range legs {
		l, ok := e.inLeg(id)
		if !ok {
			continue // removed since Accept looked
		}
		if lw := l.leg.Link.Window; lw > 0 && (w == 0 || lw < w) {
			w = lw
		}
	}
	if w == 0 {
		return e.opts.Window
	}
	return w
}

// Run binds (see Bind) and runs the engine until ctx ends, then drains:
// senders stop reading and wait briefly for in-flight batches to be
// acknowledged, receivers finish the transaction in progress. It returns
// when every goroutine it started has ended, or at once if it cannot bind.
func (e *Engine) Run(ctx context.Context) error {
	if err := e.Bind(); err != nil {
		return err
	}
	e.start.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	// Receivers keep committing for a moment after ctx ends, so that a
	// sender's drain can complete.
	rctx, rcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer rcancel()
	e.inMu.Lock()
	e.recvCtx, e.receiving = rctx, true
	for _, l := range e.in {
		e.startReceiverLocked(l)
	}
	e.inMu.Unlock()
	var sessions sync.WaitGroup
	ln := e.listener()
	if ln != nil {
		wg.Go(func() {
			for {
				conn, err := ln.Accept(ctx)
				if err != nil {
					if ctx.Err() == nil {
						e.log.Error("accept link session", "err", err)
					}
					return
				}
				sessions.Go(func() { e.serveConn(rctx, conn) })
			}
		})
	}
	e.outMu.Lock()
	e.sendCtx, e.sending = ctx, true
	for _, p := range e.out {
		e.startSenderLocked(p)
	}
	e.outMu.Unlock()
	<-ctx.Done()
	e.log.Info("stopping: draining links")
	e.outMu.Lock()
	e.sending = false // no sender starts after this
	e.outMu.Unlock()
	e.senders.Wait()
	if ln != nil {
		ln.Close()
	}
	// Give peers' senders time to drain into us, then stop.
	e.inMu.Lock()
	e.receiving = false // no coordinator starts after this
	receives := len(e.in) > 0
	e.inMu.Unlock()
	t := time.NewTimer(drainGrace(receives))
	<-t.C
	rcancel()
	sessions.Wait()
	wg.Wait()
	e.receivers.Wait()
	e.log.Info("stopped")
	return nil
}

func drainGrace(receives bool) time.Duration {
	if receives {
		return 500 * time.Millisecond
	}
	return 0
}

// trackRTT copies the session's RTT into the peer gauge (and into dst when not
// nil) every second until the returned stop func is called; stop waits.
func (e *Engine) trackRTT(peer string, conn transport.Conn, dst ...*atomic.Int64) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var v *atomic.Int64
	if len(dst) > 0 && dst[0] != nil {
		v = dst[0]
	} else {
		e.rttMu.Lock()
		if e.rtts[peer] == nil {
			e.rtts[peer] = &atomic.Int64{}
		}
		v = e.rtts[peer]
		e.rttMu.Unlock()
	}
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			rtt := conn.Stats().RTT
			v.Store(int64(rtt))
			e.m.rtt.WithLabelValues(peer).Set(rtt.Seconds())
			select {
			case <-ctx.Done():
				return
			case <-conn.Done():
				return
			case <-t.C:
			}
		}
	})
	return func() { cancel(); wg.Wait() }
}

// confirmer is implemented by a Conn whose handshake may complete after
// it was accepted (quic: a Hello in 0-RTT data).
type confirmer interface{ Confirmed() <-chan struct{} }

// serveConn serves an accepted session: the dialler's legs to this
// gateway (serveSession), and, on a duplex session (version 4, the
// Welcome lists legs to send back), this gateway's legs to the dialler,
// whose outPeer takes the sending half (outPeer.offer) once the
// handshake is complete: a replayed 0-RTT Hello never gets data.
func (e *Engine) serveConn(ctx context.Context, conn transport.Conn) {
	w, h := conn.Welcome(), conn.Hello()
	if paths, ok, terr := e.relayPaths(h); ok {
		if terr != nil {
			conn.Close(terr)
			return
		}
		e.relaySession(ctx, conn, paths) // relay.go
		return
	}
	if w.Version < transport.VersionDuplex || len(w.Send) == 0 {
		// Not for a relay feeding another gateway's legs, nor for a Hello
		// with no legs at all (a sender probing its direct link while its
		// legs relay, relay_path.go).
		if p := e.awaiting(h.Gateway); p != nil && len(p.legs) > 0 && h.Origin == "" && len(h.Legs) > 0 {
			e.log.Warn("peer dialled without asking for the legs this gateway sends it: they wait (it speaks protocol version < 4, or its topology differs)",
				"peer", h.Gateway, "version", w.Version, "legs", len(p.legs))
		}
		e.serveSession(ctx, conn)
		return
	}
	p := e.awaiting(h.Gateway)
	if p == nil { // Accept checked Receive; a listener that skipped it is refused all the same
		conn.Close(&transport.Error{Code: transport.ErrCodeForbidden, Message: "gateway " + e.table.Gateway.Name + " sends gateway " + h.Gateway + " nothing"})
		return
	}
	sw := &transport.Welcome{Version: w.Version, Gateway: h.Gateway, Region: h.Region,
		Window: h.RecvWindow, MaxBatchBytes: h.RecvMaxBatchBytes}
	d := newDuplex(conn, h, sw, h, w)
	var wg sync.WaitGroup
	wg.Go(func() {
		if c, ok := conn.(confirmer); ok && d.send.Tentative() {
			select {
			case <-c.Confirmed():
			case <-conn.Done():
				return
			}
		}
		p.offer(d.send)
	})
	e.serveSession(ctx, d.recv)
	d.close(nil)
	wg.Wait()
}

// Status is a gateway's state for /status and `meridian status`.
type Status struct {
	Gateway       string       `json:"gateway"`
	Region        string       `json:"region"`
	UptimeSeconds float64      `json:"uptime_seconds"`
	Peers         []PeerStatus `json:"peers"`
	Legs          []LegStatus  `json:"legs"`
}

// PeerStatus is a peer gateway this one sends to.
type PeerStatus struct {
	Gateway string `json:"gateway"`
	Address string `json:"address"`
	Link    string `json:"link"`
	Profile string `json:"profile"`
	// Passthrough: the link forwards Kafka record batches as they are.
	Passthrough bool    `json:"passthrough,omitempty"`
	Connected   bool    `json:"connected"`
	RTTMillis   float64 `json:"rtt_ms"`
	Failures    int64   `json:"session_failures"`
	LastError   string  `json:"last_error,omitempty"`
	// DialledBy names the gateway that opens the link's sessions: this
	// one, or the peer (a site behind NAT that dials out).
	DialledBy string `json:"dialled_by"`
	// Receives counts the legs this gateway receives from the peer over
	// the sessions it dials (duplex, protocol version 4).
	Receives int `json:"receives,omitempty"`
	// Path is how the peer's legs travel now: "direct", or "via REGION"
	// while its link is down (docs/relays.md; Connected and RTT are then
	// the relayed session's). Empty when the peer has no relay path.
	Path string `json:"path,omitempty"`
	// Standby names the standby receiver of the peer's region that the
	// legs go to while the peer does not answer (or gossip has it dead);
	// empty while they go to the peer.
	Standby string `json:"standby,omitempty"`
}

// Status returns a snapshot. Safe for concurrent use.
func (e *Engine) Status() Status {
	st := Status{Gateway: e.table.Gateway.Name, Region: e.table.Gateway.Region.Name}
	if ns := e.start.Load(); ns != 0 {
		st.UptimeSeconds = time.Since(time.Unix(0, ns)).Seconds()
	}
	for _, p := range e.peers() {
		ps := PeerStatus{
			Gateway: p.peer.Gateway.Name, Address: p.peer.Gateway.Advertise,
			Link: p.peer.Link.Name, Profile: p.peer.Link.Profile, Passthrough: p.peer.Link.Passthrough,
			Connected: p.connected.Load(), RTTMillis: float64(p.rtt.Load()) / 1e6, Failures: p.fails.Load(),
		}
		if s := p.lastErr.Load(); s != nil {
			ps.LastError = *s
		}
		ps.DialledBy, ps.Receives = e.table.Gateway.Name, len(p.peer.Receive)
		if p.path != nil {
			ps.Path, _, _, _ = p.path.status()
		}
		if !p.peer.Dials {
			ps.DialledBy = p.peer.Gateway.Name
		}
		if t := p.recv.target(); t != nil && t != p.peer.Gateway {
			ps.Standby = t.Name // the legs go to a standby receiver (standby.go)
		}
		st.Peers = append(st.Peers, ps)
		for _, l := range p.legs {
			ls := LegStatus{Leg: l.leg.ID, Route: l.leg.Route.Name, Direction: "out", From: l.leg.From.Ref(), To: l.leg.To.Ref(),
				Peer: p.dialTarget().Name, Connected: ps.Connected, Filter: l.leg.Route.Filter}
			l.stats.fill(&ls)
			if why := l.fenced.Load(); why != nil {
				ls.Fenced = *why
			}
			if l.leg.Shared() {
				ls.ShareGroup = l.leg.ShareGroup()
				if g := l.share.Load(); g != nil {
					ls.SharedPartitions = tpNames(slices.Collect(maps.Keys(g.owns())))
				}
			}
			p.pathStatus(&ls) // relay_path.go
			st.Legs = append(st.Legs, ls)
		}
	}
	e.inMu.RLock()
	ins := make([]*inLeg, 0, len(e.in))
	for _, l := range e.in {
		ins = append(ins, l)
	}
	e.inMu.RUnlock()
	for _, l := range ins {
		owner, fence := l.state.ownerAndFence()
		ls := LegStatus{Leg: l.leg.ID, Route: l.leg.Route.Name, Direction: "in", From: l.leg.From.Ref(), To: l.leg.To.Ref(), Connected: owner != nil,
			Filter: *l.filter.Load()}
		if fence != nil {
			ls.Fenced = fmt.Sprintf("%s (route epoch %d, since %s)", fence.Reason, fence.Epoch, time.UnixMilli(fence.At).UTC().Format(time.RFC3339))
		}
		if l.groups != nil {
			var gerr string
			ls.SyncedGroups, ls.ActiveGroups, gerr = l.groups.status()
			if gerr != "" {
				ls.LastError = gerr
			}
		}
		if owner != nil {
			ls.Peer = owner.peer
			ls.Path = owner.path(e.lookupTable.Load()) // relay_path.go
		}
		ls.Quarantined, _ = l.state.quarantineStatus()
		ls.Shares = l.state.shareStatus()
		if owner != nil || len(ls.Shares) > 0 {
			ls.Connected = true
		}
		l.stats.fill(&ls)
		st.Legs = append(st.Legs, ls)
	}
	sort.Slice(st.Legs, func(i, j int) bool {
		if st.Legs[i].Leg != st.Legs[j].Leg {
			return st.Legs[i].Leg < st.Legs[j].Leg
		}
		return st.Legs[i].Direction < st.Legs[j].Direction
	})
	return st
}
