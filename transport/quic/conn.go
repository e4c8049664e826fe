package quic

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/meridian-gw/meridian/transport"
)

// Stream kinds: the first byte of every unidirectional stream, and of the
// join stream of a stripe (a bidirectional stream; the control stream starts
// with a Hello frame instead, type 0x01).
const (
	streamKindLane    byte = 0x01 // batch lane (binding meridian/1)
	streamKindSeqLane byte = 0x02 // sequenced batch lane (binding meridian/1+stripes)
	streamKindJoin    byte = 0x80 // join stream of a stripe (meridian/1+stripes)
)

// codeStripeRetired, in the CONNECTION_CLOSE of a stripe other than the
// first, retires that stripe only: its sender has no batch in flight on it.
const codeStripeRetired quicgo.ApplicationErrorCode = 0x100

const (
	ctlQueue    = 64  // control frames queued for writing
	laneQueue   = 4   // batches queued for writing, per lane
	dataQueue   = 8   // batches queued for the first free writer (PlaceAny)
	recvCtlCap  = 256 // control frames waiting for Recv
	recvDataCap = 16  // batches waiting for Recv
	closeGrace  = time.Second
	readBufSize = 64 << 10
)

var _ transport.Conn = (*Conn)(nil)

// Conn is an established session: a bidirectional control stream opened by
// the dialer on the first QUIC connection, and unidirectional lanes carrying
// batches, on that connection and, with the striped binding, on further
// connections (stripes) that joined the session. It implements
// transport.Conn.
//
// # Goroutines
//
// A session runs a supervisor, which owns everything else and closes Done
// last; a reader for the control stream, one reader per incoming lane, an
// acceptor of incoming lanes per stripe, a writer per outgoing stream, a
// pinger and, on a striped dialer, the stripe controller (which dials and
// joins stripes). Close waits for all of them.
//
// # Lock order
//
// A partition's send slot (sendPart.sem), then lanesMu, then a sender's sem
// (held only to encode and enqueue one frame); reorder.mu and dialState.mu
// are leaves. mu guards the end state only and is never held while blocking.
type Conn struct {
	qc      *quicgo.Conn // the first stripe's connection: control stream, RTT
	cfg     *sessionConfig
	client  bool
	peer    string // verified gateway name of the peer (certificate Common Name)
	hello   *transport.Hello
	welcome *transport.Welcome
	// maxBatch is the largest raw batch the peer accepts (0: no check).
	maxBatch  int64
	sendCodec transport.Codec
	cleanup   func() // releases the socket (dialer) or the listener's reference

	// txDicts: dictionaries this side trains and sends (nil unless
	// Session.Dictionaries with codec zstd); rxDicts: those the peer sent.
	txDicts, rxDicts *transport.Dicts

	ctx    context.Context // ends when the session starts ending
	cancel context.CancelFunc

	ctlStream *quicgo.Stream
	ctlReader *bufio.Reader
	ctlDec    *transport.Decoder
	ctl       *sender

	// striped: the session speaks ALPNStriped (sequenced lanes, stripes may
	// join). anyPlace: this side places batches with PlaceAny (a striped
	// dialer that asked for it): encoded batches wait in dataQ for the first
	// free writer of any stripe.
	striped  bool
	anyPlace bool
	token    [32]byte   // join token of a striped session
	dial     *dialState // dialer: how to open stripes and migrate; nil on a listener

	lanesMu     sync.Mutex
	lanes       []*sender // senders of the first stripe's lanes (v1, PlacePinned, listener)
	stripes     []*stripe // stripes[0] is first; replaced, never modified in place
	first       *stripe   // stripes[0], read without the lock
	lanesClosed bool

	dataQ    chan []byte // PlaceAny: sequenced batch frames for the first free writer
	dataFree chan []byte
	encs     chan *transport.Encoder // PlaceAny: idle encoders
	encsMade atomic.Int32

	parts sendParts // per-partition sequence numbers (striped)
	reo   reorder   // receive side of sequenced lanes (striped)

	batchBytes atomic.Int64 // batch frame bytes handed to QUIC (stripe controller)
	sendWaits  atomic.Int64 // Sends that found their queue full (stripe controller)

	recvCtl  chan transport.Frame
	recvData chan transport.Frame

	rawBytes, wireBytes, framesSent, framesRecvd atomic.Int64
	pingRTT                                      atomic.Int64 // smoothed, nanoseconds
	pingNonce                                    atomic.Uint64

	mu        sync.Mutex
	cause     error
	final     transport.Frame // sent to the peer before closing, if any
	closeCode quicgo.ApplicationErrorCode
	closeMsg  string

	wg        sync.WaitGroup // readers, acceptor, pinger
	writers   sync.WaitGroup
	readers   readerSet     // control and lane readers still reading
	confirmed chan struct{} // closed once the handshake has completed
	early     bool          // the Hello came as 0-RTT data
	stopRead  chan struct{} // closed when readers must stop delivering
	done      chan struct{}
}

type connParams struct {
	qc        *quicgo.Conn
	striped   bool
	token     [32]byte          // join token (striped)
	register  func(*Conn) error // a listener's striped session: makes it joinable, once confirmed
	confirm   func() error      // a tentative session (0-RTT Hello): waits for the handshake
	dial      *dialState        // dialer only
	cfg       *sessionConfig
	client    bool
	peer      string
	hello     *transport.Hello
	welcome   *transport.Welcome
	maxBatch  int64
	sendCodec transport.Codec
	recvLimit transport.Limits
	stream    *quicgo.Stream
	reader    *bufio.Reader   // reads stream through counter
	counter   *countingReader // counts into a handshake counter until newConn redirects it
	dec       *transport.Decoder
	cleanup   func()
	// handshake traffic, for the stats
	hsSent, hsRecvd, hsSentBytes int64
}

// newConn builds and starts a session whose handshake has completed, or, on
// a listener given p.confirm, a tentative one whose Hello came in 0-RTT data
// (see Confirmed).
func newConn(p connParams) *Conn {
	c := &Conn{
		qc: p.qc, cfg: p.cfg, client: p.client, peer: p.peer, hello: p.hello, welcome: p.welcome,
		maxBatch: p.maxBatch, sendCodec: p.sendCodec, cleanup: p.cleanup,
		ctlStream: p.stream, ctlReader: p.reader, ctlDec: p.dec,
		striped: p.striped, dial: p.dial,
		recvCtl:  make(chan transport.Frame, recvCtlCap),
		recvData: make(chan transport.Frame, recvDataCap),
		stopRead: make(chan struct{}),
		done:     make(chan struct{}),
	}
	c.anyPlace = c.striped && c.client && p.cfg.placement == PlaceAny
	c.rxDicts = transport.NewRecvDicts()
	if p.cfg.dicts && p.sendCodec == transport.CodecZstd && p.welcome != nil && p.welcome.Version >= transport.VersionDicts {
		c.txDicts = transport.NewSendDicts()
	}
	first := &stripe{idx: 0, qc: p.qc, resumed: p.qc.ConnectionState().TLS.DidResume}
	if !c.anyPlace {
		c.lanes = make([]*sender, p.cfg.lanes)
		first.lanes = c.lanes // the same senders: lane i of the first stripe is lanes[i]
	}
	c.stripes, c.first = []*stripe{first}, first
	if c.striped {
		c.token = p.token
		// Batches this side receives are bounded by the window it
		// granted (a listener, in its Welcome); a dialer grants none.
		window := int64(0)
		if !p.client {
			window = p.welcome.Window
		}
		c.reo.init(p.recvLimit.MaxBatchBytes, window)
		if c.anyPlace {
			// A short queue: a free writer takes the next batch at once,
			// and batches do not wait in the sender while a stripe could
			// carry them.
			c.dataQ = make(chan []byte, dataQueue)
			c.dataFree = make(chan []byte, dataQueue+maxEncoders)
			c.encs = make(chan *transport.Encoder, maxEncoders)
		}
	}
	c.readers.changed = make(chan struct{})
	c.cfg = &sessionConfig{}
	*c.cfg = *p.cfg
	c.cfg.limits = p.recvLimit
	if c.client {
		// A dialer's logger usually names its peer already.
		c.cfg.log = p.cfg.log.With("remote", c.RemoteAddr().String())
	} else {
		c.cfg.log = p.cfg.log.With("peer", c.peer, "remote", c.RemoteAddr().String())
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wireBytes.Store(p.counter.n.Load() + p.hsSentBytes)
	p.counter.n = &c.wireBytes // before the control reader starts
	c.framesSent.Store(p.hsSent)
	c.framesRecvd.Store(p.hsRecvd)

	c.confirmed = make(chan struct{})
	if p.confirm == nil {
		if p.register != nil {
			if err := p.register(c); err != nil {
				c.end(fmt.Errorf("%s: %w", c.peerDesc(), err), nil, quicgo.ApplicationErrorCode(transport.ErrCodeInternal), "")
			}
		}
		close(c.confirmed)
	} else {
		c.early = true
		c.wg.Add(1)
		go c.confirm(p.confirm, p.register)
	}
	// Control frames are never batches: a codec-less encoder suffices.
	enc, _ := transport.NewEncoder(transport.CodecNone)
	c.ctl = newSender(c, "control stream", ctlQueue, enc, p.stream)
	// Control frames (acks, credit, pings) go before batch data on the
	// first connection: they never wait behind the lanes.
	p.stream.SetPriority(1, false)
	c.writers.Add(1)
	go c.ctl.run()

	c.wg.Add(3)
	c.readers.add()
	go c.readControl()
	go c.acceptLanes(c.first)
	go c.pinger()
	if c.dial != nil && c.dial.path.every > 0 {
		c.wg.Add(1)
		go c.watchPath()
	}
	if c.client {
		// The dialer opens all its lanes up front: streams are free until
		// used, and the peer sees each one when its kind byte arrives.
		c.lanesMu.Lock()
		err := c.openLanesLocked(c.first)
		c.lanesMu.Unlock()
		if err != nil {
			c.end(fmt.Errorf("%s: %w", c.peerDesc(), err), nil, 0, "")
		}
		if c.striped && c.cfg.maxStripes > 1 {
			c.wg.Add(1)
			go c.runStripes()
		}
	}
	go c.supervise()
	return c
}

// confirm waits for a tentative session's handshake, then makes the
// session joinable and closes confirmed; it ends the session if the
// handshake does not complete.
func (c *Conn) confirm(wait func() error, register func(*Conn) error) {
	defer c.wg.Done()
	err := wait()
	if err == nil && register != nil {
		err = register(c)
	}
	if err != nil {
		c.end(fmt.Errorf("%s: %w", c.peerDesc(), err), nil, quicgo.ApplicationErrorCode(transport.ErrCodeProtocol), "no completed handshake")
		return
	}
	c.cfg.log.Debug("0-RTT session confirmed")
	close(c.confirmed)
}

// Confirmed is closed once the peer has completed the handshake. A
// listener hands over a session whose Hello came as 0-RTT data before that
// (so that its first answers travel in the server's first flight); such a
// Hello can be replayed by an attacker, who cannot complete the handshake,
// so until Confirmed the session must not displace anything. A session
// that is never confirmed ends within the handshake timeout. On a dialer,
// and for a Hello after the handshake, Confirmed is closed from the start.
func (c *Conn) Confirmed() <-chan struct{} { return c.confirmed }

// Tentative reports whether the peer's Hello came as 0-RTT data (see
// Confirmed and transport.Tentative).
func (c *Conn) Tentative() bool { return c.early }

func (c *Conn) peerDesc() string {
	if c.peer == "" {
		return "peer " + c.RemoteAddr().String()
	}
	return "peer " + c.peer + " (" + c.RemoteAddr().String() + ")"
}

// Hello returns what the dialer said when opening the session.
func (c *Conn) Hello() *transport.Hello { return c.hello }

// Welcome returns what the listener answered.
func (c *Conn) Welcome() *transport.Welcome { return c.welcome }

// PeerName is the peer gateway's name as verified by mutual TLS (its
// certificate's Common Name). On the listening side it equals Hello().Gateway.
func (c *Conn) PeerName() string { return c.peer }

// RemoteAddr is the peer's UDP address.
// (quic-go's own address methods race with connection migration on the
// dialing side, which therefore answers from what it dialed.)
func (c *Conn) RemoteAddr() net.Addr {
	if c.dial != nil {
		return c.dial.raddr
	}
	return c.qc.RemoteAddr()
}

// LocalAddr is this side's UDP address.
// After Migrate it is the new socket's address.
func (c *Conn) LocalAddr() net.Addr {
	if c.dial != nil {
		return c.dial.localAddr()
	}
	return c.qc.LocalAddr()
}

// Done is closed when the session has ended and all its goroutines have
// returned.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err says why the session ended, or nil while it runs. After a graceful end
// (Close, or the peer's Goaway) it wraps transport.ErrClosed; an Error frame
// from the peer is wrapped as a *transport.Error.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cause
}

// Stats returns a snapshot of the session's counters. RTT is QUIC's smoothed
// RTT, or the Ping/Pong estimate before QUIC has one.
func (c *Conn) Stats() transport.ConnStats {
	rtt := c.qc.ConnectionStats().SmoothedRTT
	if rtt == 0 {
		rtt = time.Duration(c.pingRTT.Load())
	}
	return transport.ConnStats{
		RTT:         rtt,
		RawBytes:    c.rawBytes.Load(),
		WireBytes:   c.wireBytes.Load(),
		FramesSent:  c.framesSent.Load(),
		FramesRecvd: c.framesRecvd.Load(),
	}
}

// Send queues f for the peer. Batches go on the lane of their (leg, topic,
// partition) or, on a striped session placing with PlaceAny, to the first
// free writer of any stripe, with a sequence number that restores the
// partition's order at the peer; they are compressed with the session
// codec. Other frames go in order on the control stream. Send returns once
// the frame is encoded and queued: it blocks while that stream's queue is
// full (the peer reads slowly, or QUIC flow control holds it back) until
// ctx ends or the session ends. A batch whose raw size exceeds the peer's
// Welcome.MaxBatchBytes is refused with an error and the session continues.
// Safe for concurrent use; batches on different lanes are encoded in
// parallel.
func (c *Conn) Send(ctx context.Context, f transport.Frame) error {
	if err := transport.CheckSend(ctx, f, c.welcome.Version, c.Err()); err != nil {
		return err
	}
	switch f := f.(type) {
	case *transport.Batch:
		if c.txDicts != nil {
			if d := c.txDicts.Observe(f); d != nil {
				// Batches use it only after the peer's DictAck.
				if err := c.ctl.send(ctx, d, 0, false); err != nil {
					return err
				}
			}
		}
		if c.striped {
			return c.sendSequenced(ctx, f)
		}
		s, err := c.lane(laneOf(f, len(c.lanes)))
		if err != nil {
			return err
		}
		return s.send(ctx, f, 0, false)
	case *transport.Hello, *transport.Welcome:
		return fmt.Errorf("send %s: only the handshake sends it", transport.TypeOf(f))
	case *transport.Dict, *transport.DictAck:
		return fmt.Errorf("send %s: only the session sends it", transport.TypeOf(f))
	case *transport.Credit:
		// The reorder buffer may hold what the peer may send: raise its
		// bound before the peer can use the new window.
		c.reo.credit(f.Window)
		return c.ctl.send(ctx, f, 0, false)
	default:
		return c.ctl.send(ctx, f, 0, false)
	}
}

// Recv returns the next frame from the peer, control frames and batches
// merged (batches of one partition in order). Ping and Pong are handled by
// the session and never returned. An Error frame from the peer is returned as
// a frame and also ends the session. When the session has ended, Recv still
// returns the frames that had arrived, then Err().
//
// Frames are buffered only a little (recvDataCap batches): a slow caller
// holds back the peer through QUIC flow control.
func (c *Conn) Recv(ctx context.Context) (transport.Frame, error) {
	select {
	case f := <-c.recvCtl:
		return f, nil
	case f := <-c.recvData:
		return f, nil
	default:
	}
	select {
	case f := <-c.recvCtl:
		return f, nil
	case f := <-c.recvData:
		return f, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.done:
		select {
		case f := <-c.recvCtl:
			return f, nil
		case f := <-c.recvData:
			return f, nil
		default:
			return nil, c.Err()
		}
	}
}

// alpn is the negotiated binding.
func (c *Conn) alpn() string {
	if c.striped {
		return ALPNStriped
	}
	return ALPN
}
