package quic

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/meridian-gw/meridian/transport"

	"github.com/meridian-gw/meridian/internal/pki"
)

// stripe is one QUIC connection of a session.
type stripe struct {
	idx        int          // 0 for the first connection; the dialer numbers the others from 1
	qc         *quicgo.Conn // immutable
	lanes      []*sender    // lane senders this side opened on it (v1, PlacePinned)
	writers    []*sender    // PlaceAny writers this side opened on it
	batchBytes atomic.Int64 // batch frame bytes handed to QUIC on it
	resumed    bool         // its TLS handshake resumed a session
}

// StripeStats describes one stripe (QUIC connection) of a session.
type StripeStats struct {
	Index            int           // 0: the first connection, which carries the control stream
	RTT              time.Duration // QUIC's smoothed RTT
	MinRTT           time.Duration
	CongestionWindow uint64 // bytes, this side's
	BytesSent        uint64 // UDP payload bytes sent, retransmissions included
	BytesLost        uint64
	BatchBytes       int64    // batch frame bytes this side handed to QUIC on the stripe
	Resumed          bool     // its TLS handshake resumed a session (no certificates sent)
	LocalAddr        net.Addr // on a dialer, the session's socket (all stripes share it)
	RemoteAddr       net.Addr
}

// StripeStats returns a snapshot per stripe, the first connection first.
func (c *Conn) StripeStats() []StripeStats {
	c.lanesMu.Lock()
	stripes := slices.Clone(c.stripes)
	c.lanesMu.Unlock()
	out := make([]StripeStats, len(stripes))
	local, remote := c.LocalAddr(), c.RemoteAddr()
	for i, st := range stripes {
		qs := st.qc.ConnectionStats()
		out[i] = StripeStats{
			Index: st.idx, RTT: qs.SmoothedRTT, MinRTT: qs.MinRTT, CongestionWindow: qs.CongestionWindow,
			BytesSent: qs.BytesSent, BytesLost: qs.BytesLost, BatchBytes: st.batchBytes.Load(),
			Resumed:   st.resumed,
			LocalAddr: local, RemoteAddr: remote,
		}
		if c.dial == nil {
			out[i].LocalAddr, out[i].RemoteAddr = st.qc.LocalAddr(), st.qc.RemoteAddr()
		}
	}
	return out
}

// Stripes is the number of QUIC connections the session runs over now.
func (c *Conn) Stripes() int {
	c.lanesMu.Lock()
	defer c.lanesMu.Unlock()
	return len(c.stripes)
}

// Striped reports whether the session speaks the striped binding
// (ALPNStriped), even if it has one stripe.
func (c *Conn) Striped() bool { return c.striped }

// joinTokenLabel is the TLS exporter label of the join token.
const joinTokenLabel = "EXPORTER-meridian-stripe-join"

// joinToken is the secret a stripe presents to join the session of the
// first connection with TLS state cs: a TLS exporter value (RFC 8446 section
// 7.5), which only the two ends of that connection know.
func joinToken(cs tls.ConnectionState) ([32]byte, error) {
	var t [32]byte
	b, err := cs.ExportKeyingMaterial(joinTokenLabel, nil, len(t))
	if err != nil {
		return t, fmt.Errorf("derive stripe join token: %w", err)
	}
	copy(t[:], b)
	return t, nil
}

// retired reports whether qc was closed (by either side) with
// codeStripeRetired; err is what an operation on it returned (the
// connection's context may be cancelled a moment later).
func retired(qc *quicgo.Conn, err error) bool {
	var app *quicgo.ApplicationError
	if errors.As(err, &app) && app.ErrorCode == codeStripeRetired {
		return true
	}
	return errors.As(context.Cause(qc.Context()), &app) && app.ErrorCode == codeStripeRetired
}

// dropStripe forgets a retired stripe.
func (c *Conn) dropStripe(st *stripe) {
	c.lanesMu.Lock()
	if i := slices.Index(c.stripes, st); i > 0 {
		// A new slice: snapshots of the old one stay valid.
		c.stripes = slices.Concat(c.stripes[:i], c.stripes[i+1:])
	}
	c.lanesMu.Unlock()
	c.cfg.log.Debug("stripe retired", "stripe", st.idx)
}

// errStripeLimit refuses a join beyond the session's stripe limit.
var errStripeLimit = errors.New("stripe limit reached")

// attachStripe adds connection qc, which joined the session as stripe idx:
// a dialer opens its lanes on it, either side accepts the peer's.
func (c *Conn) attachStripe(qc *quicgo.Conn, idx int) error {
	c.lanesMu.Lock()
	defer c.lanesMu.Unlock()
	if c.lanesClosed {
		return fmt.Errorf("session ending")
	}
	if len(c.stripes) >= c.cfg.maxStripes {
		return fmt.Errorf("%w: the session has %d stripes, the most this gateway takes", errStripeLimit, len(c.stripes))
	}
	for _, st := range c.stripes {
		if st.idx == idx {
			return fmt.Errorf("stripe %d already joined", idx)
		}
	}
	// (Read now: on a dialer, quic-go's ConnectionState races with Migrate.)
	st := &stripe{idx: idx, qc: qc, resumed: qc.ConnectionState().TLS.DidResume}
	if c.client {
		if err := c.openLanesLocked(st); err != nil {
			return err
		}
	}
	c.stripes = append(c.stripes, st)
	c.wg.Add(1)
	go c.acceptLanes(st)
	return nil
}

// dialState is what a dialer's session keeps to open stripes and migrate:
// the socket and QUIC transport all its connections share, and the TLS and
// QUIC configs to dial with.
type dialState struct {
	addr  string
	raddr *net.UDPAddr
	tls   *tls.Config // ServerName pinned; offers ALPNStriped only
	qconf *quicgo.Config

	// mu is held (shared) while a stripe dials and joins, and exclusively
	// by Migrate, so that no stripe joins on the socket being left.
	mu  sync.RWMutex
	tr  *quicgo.Transport
	pc  net.PacketConn
	old []*quicgo.Transport // left by Migrate; closed with the session
	// oldPC are the sockets of old.
	oldPC      []net.PacketConn
	local      atomic.Pointer[net.Addr] // pc.LocalAddr()
	migrations int
	migrateMu  sync.Mutex // one Migrate at a time

	path   pathWatch
	source netip.Addr // the route's local address when last checked; owned by watchPath
}

// localAddr is the address of the session's current socket.
func (ds *dialState) localAddr() net.Addr { return *ds.local.Load() }

// release closes every transport and socket of the session (after its
// connections have closed).
func (ds *dialState) release() {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	for i, tr := range ds.old {
		tr.Close()
		ds.oldPC[i].Close()
	}
	ds.old, ds.oldPC = nil, nil
	ds.tr.Close()
	ds.pc.Close()
}

// runStripes is the stripe controller of a striped dialer: it opens the
// initial stripes and, with MaxStripes above Stripes, grows the session
// (see growth). Joins run concurrently with the measurement (a handshake
// that loses packets on a lossy link can take several probe timeouts); it
// waits for them before returning, when the session ends.
func (c *Conn) runStripes() {
	defer c.wg.Done()
	g := newGrowth(c.cfg.stripes, c.cfg.maxStripes)
	log := c.cfg.log.With("max_stripes", c.cfg.maxStripes)
	var (
		joins   sync.WaitGroup
		pending atomic.Int32 // joins in progress
		failed  atomic.Int32 // joins failed since the last epoch
		limited atomic.Bool  // the peer refused a join: it takes no more stripes
		lastErr atomic.Pointer[error]
		next    int // the last stripe index used
		fails   int // epochs in a row with failed joins
		backoff time.Duration
	)
	defer joins.Wait()
	for {
		if limited.Load() {
			if g.max > c.Stripes() {
				log.Info("peer takes no more stripes", "stripes", c.Stripes())
			}
			g.capAt(c.Stripes())
		}
		if !c.anyPlace {
			// Pinned partitions use one stripe each: more stripes than
			// partitions carry nothing.
			g.max = min(c.cfg.maxStripes, max(g.min, c.parts.count()))
		}
		if backoff == 0 {
			for have := c.Stripes() + int(pending.Load()); have < g.target && pending.Load() < maxJoins; have++ {
				next++
				idx := next
				pending.Add(1)
				joins.Go(func() {
					defer pending.Add(-1)
					if err := c.openStripe(idx); err != nil && c.ctx.Err() == nil {
						if errors.Is(err, errStripeLimit) {
							limited.Store(true)
						}
						failed.Add(1)
						lastErr.Store(&err)
					}
				})
			}
		}
		// Measure one epoch.
		epoch := c.epoch()
		bytes0, waits0 := c.batchBytes.Load(), c.sendWaits.Load()
		t := time.NewTimer(max(epoch, backoff))
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if n := failed.Swap(0); n > 0 && !limited.Load() {
			fails++
			lvl := slog.LevelDebug
			if fails == 1 || fails%10 == 0 {
				lvl = slog.LevelWarn
			}
			log.Log(context.Background(), lvl, "cannot open stripes", "want", g.target, "have", c.Stripes(), "failed", n, "err", *lastErr.Load(), "epochs_failing", fails)
			backoff = min(max(2*backoff, time.Second), 30*time.Second)
		} else {
			fails, backoff = 0, 0
		}
		srtt, minRTT := c.pathRTT()
		s := sample{
			stripes: c.Stripes(),
			rate:    float64(c.batchBytes.Load()-bytes0) / max(epoch, backoff).Seconds(),
			demand:  c.sendWaits.Load() > waits0 || (c.dataQ != nil && len(c.dataQ) > 0),
			srtt:    srtt, minRTT: minRTT,
		}
		before := g.target
		g.update(s)
		log.Debug("stripe epoch", "stripes", s.stripes, "target", g.target, "grew", g.target != before, "rate_mbps", s.rate*8/1e6,
			"demand", s.demand, "srtt", srtt, "min_rtt", minRTT, "hold", g.hold, "joining", pending.Load())
	}
}

// maxJoins caps the stripe joins in progress at once.
const maxJoins = 32

// epoch is how long the controller measures between decisions: three
// smoothed RTTs (new stripes need a few RTTs to ramp up), at least 200 ms.
func (c *Conn) epoch() time.Duration {
	srtt, _ := c.pathRTT()
	return max(3*srtt, 200*time.Millisecond)
}

// pathRTT is the median smoothed RTT over the stripes (they share one
// path; a young stripe's estimate is still rough, so no single stripe
// decides) and the first stripe's minimum RTT, the path's base RTT: it was
// measured before any stripe loaded the link, while later stripes may have
// been born with the bottleneck queue full.
func (c *Conn) pathRTT() (srtt, minRTT time.Duration) {
	c.lanesMu.Lock()
	stripes := slices.Clone(c.stripes)
	c.lanesMu.Unlock()
	var srtts []time.Duration
	for _, st := range stripes {
		if qs := st.qc.ConnectionStats(); qs.SmoothedRTT > 0 {
			srtts = append(srtts, qs.SmoothedRTT)
		}
	}
	if len(srtts) == 0 {
		return 0, 0
	}
	slices.Sort(srtts)
	return srtts[len(srtts)/2], c.first.qc.ConnectionStats().MinRTT
}

// openStripe dials a new QUIC connection to the peer on the session's
// socket and joins it to the session as stripe idx: a join stream carrying
// the join token and idx, answered by one byte 0x00 (or the peer closes the
// connection with an error code and reason).
func (c *Conn) openStripe(idx int) error { return c.joinStripe(idx, c.token) }

// joinStripe is openStripe presenting token.
func (c *Conn) joinStripe(idx int, token [32]byte) error {
	ds := c.dial
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.handshakeTimeout)
	defer cancel()
	ds.mu.RLock()
	defer ds.mu.RUnlock()
	qc, err := ds.tr.Dial(ctx, ds.raddr, ds.tls, ds.qconf)
	if err != nil {
		return fmt.Errorf("stripe %d: %w", idx, explainDialError(ds.addr, c.cfg, err))
	}
	// Abandon the connection without ending the session; the peer may have
	// attached it already.
	abandon := func(err error) error {
		qc.CloseWithError(codeStripeRetired, "join abandoned")
		return fmt.Errorf("stripe %d: %w", idx, err)
	}
	cs := qc.ConnectionState().TLS
	if cs.NegotiatedProtocol != ALPNStriped {
		return abandon(fmt.Errorf("peer chose ALPN %q, not %s", cs.NegotiatedProtocol, ALPNStriped))
	}
	if peer := pki.PeerName(cs); peer != c.peer {
		return abandon(fmt.Errorf("peer certificate is for %q, the session's peer is %q", peer, c.peer))
	}
	st, err := qc.OpenStreamSync(ctx)
	if err != nil {
		return abandon(fmt.Errorf("open join stream: %w", err))
	}
	if dl, ok := ctx.Deadline(); ok {
		st.SetDeadline(dl)
	}
	msg := make([]byte, 0, 1+len(token)+binary.MaxVarintLen64)
	msg = append(msg, streamKindJoin)
	msg = append(msg, token[:]...)
	msg = binary.AppendUvarint(msg, uint64(idx))
	var ack [1]byte
	if _, err = st.Write(msg); err == nil {
		_, err = io.ReadFull(st, ack[:])
	}
	if err != nil {
		var app *quicgo.ApplicationError
		if errors.As(context.Cause(qc.Context()), &app) && app.Remote {
			err = fmt.Errorf("join refused (%d): %s", app.ErrorCode, app.ErrorMessage)
			if app.ErrorCode == codeStripeLimit || app.ErrorCode == codeStripeLimitV1 {
				err = fmt.Errorf("join refused: %w", errStripeLimit)
			}
		}
		return abandon(err)
	}
	if ack[0] != 0 {
		return abandon(fmt.Errorf("join answered 0x%02x", ack[0]))
	}
	st.Close()
	if err := c.attachStripe(qc, idx); err != nil {
		return abandon(err)
	}
	return nil
}

// codeStripeLimit closes a join connection the listener refuses because the
// session has as many stripes as it takes: transport.ErrCodeLimit, as for
// every cap. Listeners before it sent codeStripeLimitV1, which dialers
// still take as the same.
const (
	codeStripeLimit   = quicgo.ApplicationErrorCode(transport.ErrCodeLimit)
	codeStripeLimitV1 = quicgo.ApplicationErrorCode(0x101)
)

// Adaptive striping.
const (
	// growRTT: no growth while the smoothed RTT exceeds this multiple of the
	// minimum RTT (a queue is building at the bottleneck: the link is full).
	growRTT = 1.25
	// payoffGain: when the stripe count has doubled since the reference
	// point, the smoothed rate must have risen by this factor, or growth
	// stops for holdEpochs.
	payoffGain = 1.3
	// holdEpochs: after growth did not pay, wait at least this many epochs
	// before growing again, and then only once the rate has moved by
	// holdMove (the bottleneck changed).
	holdEpochs = 8
	holdMove   = 0.3
)

// sample is what the controller saw over one epoch.
type sample struct {
	stripes      int
	rate         float64 // batch bytes handed to QUIC per second
	demand       bool    // a Send waited for queue space, or batches were queued
	srtt, minRTT time.Duration
}

// growth decides the stripe count of a session. It starts at the minimum
// and grows while the senders are held back (demand: every writer is busy,
// so the stripes' congestion windows are the limit) and the RTT shows no
// queue at the bottleneck (so the link has room): it doubles the count up
// to a quarter of the ceiling, then adds a quarter per step, one step per
// epoch once the last step's stripes have (nearly all) joined.
//
// The rate is a noisy signal on a long lossy path: a new stripe starts
// with a congestion window above what the loss rate lets it keep, so a
// step's gain shows at once and fades over several RTTs, and one epoch's
// rate swings by a third. So it is averaged over two epochs and judged only
// over a doubling: when the count has doubled since the reference point,
// the rate must have risen by payoffGain, else something other than the
// stripes' windows holds the senders back (CPU, the receiver) and growth
// stops until the rate moves by holdMove (at least holdEpochs). The count
// never shrinks.
type growth struct {
	min, max, target int
	fast             int     // double below this count
	last, rate       float64 // the previous epoch's rate; the mean of the last two
	seen             bool
	refStripes       int // reference point of the payoff check (0: none)
	refRate          float64
	hold             int     // epochs to wait before growing again
	held             bool    // growth did not pay: wait for the rate to move
	heldRate         float64 // the rate then
}

func newGrowth(minStripes, maxStripes int) *growth {
	return &growth{min: minStripes, max: maxStripes, target: minStripes, fast: max(4, maxStripes/4)}
}

// capAt stops growth at n stripes (the peer takes no more).
func (g *growth) capAt(n int) {
	g.max = max(n, 1)
	g.target = min(g.target, g.max)
}

func (g *growth) update(s sample) {
	if !g.seen {
		g.last, g.seen = s.rate, true
	}
	g.rate, g.last = (g.last+s.rate)/2, s.rate
	if s.stripes < g.target-g.target/8 {
		return // stripes still joining: nothing to judge yet
	}
	if g.hold > 0 {
		g.hold--
		return
	}
	if g.held {
		if math.Abs(g.rate-g.heldRate) < holdMove*g.heldRate {
			return
		}
		g.held, g.refStripes = false, 0
	}
	if g.refStripes == 0 {
		g.refStripes, g.refRate = s.stripes, g.rate
	}
	if s.stripes >= 2*g.refStripes {
		if g.rate < payoffGain*g.refRate {
			g.hold, g.held, g.heldRate = holdEpochs, true, g.rate
			return
		}
		g.refStripes, g.refRate = s.stripes, g.rate
	}
	congested := s.minRTT > 0 && float64(s.srtt) > growRTT*float64(s.minRTT)
	if !s.demand || congested || g.target >= g.max {
		return
	}
	step := max(1, g.target/4)
	if g.target < g.fast {
		step = g.target
	}
	g.target = min(g.max, g.target+step)
}
