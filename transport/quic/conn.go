package quic

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"slices"
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
	if f == nil {
		return errors.New("send: nil frame")
	}
	if err := c.Err(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := transport.CheckVersion(f, c.welcome.Version); err != nil {
		// The peer would refuse it and end the session.
		return fmt.Errorf("send: %w", err)
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

// Close ends the session and waits for every goroutine of the session.
//
// It sends reason to the peer as an Error frame if it is a *transport.Error,
// otherwise as a Goaway (carrying reason's text, if any), after flushing what
// Send had queued (for up to a second), and closes the QUIC connection with
// the error's code (0 for a Goaway) and message. A graceful close (Goaway)
// also finishes every stream and waits up to a second for the peer to read
// what is in flight and close the connection. Batches the peer has not
// acknowledged may still be lost; the resume protocol resends them.
//
// Safe to call more than once and from any goroutine; it always returns nil.
func (c *Conn) Close(reason error) error {
	var final transport.Frame
	var code quicgo.ApplicationErrorCode
	msg := ""
	var te *transport.Error
	switch {
	case reason == nil:
		final = &transport.Goaway{Reason: "closed"}
	case errors.As(reason, &te):
		if te.Code == 0 { // 0 means graceful on the wire
			te = &transport.Error{Code: transport.ErrCodeInternal, Message: te.Message}
		}
		final, code, msg = te, quicgo.ApplicationErrorCode(te.Code), te.Message
	default:
		final, msg = &transport.Goaway{Reason: reason.Error()}, reason.Error()
	}
	c.end(&closedError{reason: reason}, final, code, truncate(msg, 512))
	<-c.done
	return nil
}

// closedError is the cause of a session closed by this side.
type closedError struct{ reason error }

func (e *closedError) Error() string {
	if e.reason == nil {
		return transport.ErrClosed.Error()
	}
	var te *transport.Error
	if errors.As(e.reason, &te) {
		return transport.ErrClosed.Error() + " with error " + te.CodeName() + ": " + te.Message
	}
	return transport.ErrClosed.Error() + ": " + e.reason.Error()
}

func (e *closedError) Unwrap() []error {
	if e.reason == nil {
		return []error{transport.ErrClosed}
	}
	return []error{transport.ErrClosed, e.reason}
}

// goneError is the cause of a session the peer closed gracefully.
type goneError struct {
	peer, reason string
}

func (e *goneError) Error() string {
	s := transport.ErrClosed.Error() + " by " + e.peer
	if e.reason != "" {
		s += ": " + e.reason
	}
	return s
}

func (e *goneError) Unwrap() error { return transport.ErrClosed }

// end starts ending the session; the first cause wins. final, if not nil, is
// written to the control stream and code and msg go into the QUIC
// CONNECTION_CLOSE, so the peer learns why even if the frame is lost.
func (c *Conn) end(cause error, final transport.Frame, code quicgo.ApplicationErrorCode, msg string) {
	c.mu.Lock()
	if c.cause != nil {
		c.mu.Unlock()
		return
	}
	c.cause, c.final, c.closeCode, c.closeMsg = cause, final, code, msg
	c.mu.Unlock()
	c.cancel()
}

// supervise owns the session's goroutines: when the session starts ending it
// stops them in order, closes the connection and then Done.
func (c *Conn) supervise() {
	select {
	case <-c.ctx.Done():
	case <-c.qc.Context().Done():
		c.end(c.connErr(context.Cause(c.qc.Context())), nil, 0, "")
	}
	c.mu.Lock()
	final, code, msg, cause := c.final, c.closeCode, c.closeMsg, c.cause
	c.mu.Unlock()
	if code == 0 && !errors.Is(cause, transport.ErrClosed) {
		// A failure, not a close: say so on every stripe, so that a peer
		// that first sees another stripe close does not take it for a
		// graceful one.
		code, msg = quicgo.ApplicationErrorCode(transport.ErrCodeInternal), truncate(cause.Error(), 512)
	}

	// Writers flush what is queued, then stop; a peer that does not read
	// gets closeGrace.
	c.lanesMu.Lock()
	c.lanesClosed = true
	senders := []*sender{c.ctl}
	stripes := slices.Clone(c.stripes)
	for _, st := range stripes {
		senders = append(senders, st.lanes...)
		senders = append(senders, st.writers...)
	}
	c.lanesMu.Unlock()
	deadline := time.Now().Add(closeGrace)
	for _, s := range senders {
		if s != nil {
			s.stream.SetWriteDeadline(deadline)
		}
	}
	c.writers.Wait()
	if final != nil && !c.ctl.broken.Load() {
		if buf, err := c.ctl.enc.AppendFrame(nil, final); err == nil {
			if _, err := c.ctlStream.Write(buf); err == nil {
				c.framesSent.Add(1)
				c.wireBytes.Add(int64(len(buf)))
			}
		}
	}
	var closed *closedError
	if errors.As(cause, &closed) && code == 0 && c.qc.Context().Err() == nil {
		// Graceful: finish every stream and give the peer closeGrace to
		// read what is in flight and close the connection itself (or, if
		// it is closing too, to finish its streams).
		for _, s := range senders {
			if s != nil {
				s.stream.Close()
			}
		}
		timer := time.NewTimer(closeGrace)
		c.readers.wait(0, c.qc.Context().Done(), timer.C)
		timer.Stop()
	}
	close(c.stopRead)
	for _, st := range stripes {
		st.qc.CloseWithError(code, msg)
	}
	c.wg.Wait()
	c.ctlDec.Close()
	c.reo.discard()
	if c.cleanup != nil {
		c.cleanup()
	}
	if errors.Is(cause, transport.ErrClosed) {
		c.cfg.log.Debug("session closed", "reason", cause)
	} else {
		c.cfg.log.Info("session ended", "err", cause)
	}
	close(c.done)
}

// connErr explains why the first QUIC connection ended or a stream on it
// failed.
func (c *Conn) connErr(err error) error { return c.connErrOn(c.qc, err) }

// connErrOn explains why QUIC connection qc ended or a stream on it failed.
func (c *Conn) connErrOn(qc *quicgo.Conn, err error) error {
	if cerr := context.Cause(qc.Context()); cerr != nil {
		err = cerr
	}
	var (
		app   *quicgo.ApplicationError
		idle  *quicgo.IdleTimeoutError
		reset *quicgo.StatelessResetError
		te    *quicgo.TransportError
	)
	switch {
	case errors.As(err, &app) && app.Remote:
		if app.ErrorCode == 0 {
			return &goneError{peer: c.peerDesc(), reason: app.ErrorMessage}
		}
		code := uint16(transport.ErrCodeInternal)
		if app.ErrorCode <= math.MaxUint16 {
			code = uint16(app.ErrorCode)
		}
		return fmt.Errorf("%s: %w", c.peerDesc(), &transport.Error{Code: code, Message: app.ErrorMessage})
	case errors.As(err, &idle):
		return fmt.Errorf("%s: no packet for more than %s (peer silent or link down): %w", c.peerDesc(), c.cfg.idleTimeout, err)
	case errors.As(err, &reset):
		return fmt.Errorf("%s: peer no longer knows this connection (restarted?): %w", c.peerDesc(), err)
	case errors.As(err, &te):
		return fmt.Errorf("%s: QUIC connection failed: %w", c.peerDesc(), err)
	}
	return fmt.Errorf("%s: %w", c.peerDesc(), err)
}

// readFailed ends the session after a read error on a stream of stripe st.
func (c *Conn) readFailed(st *stripe, stream string, err error) {
	switch {
	case c.ctx.Err() != nil:
		// Already ending; the error is a consequence.
	case st.idx > 0 && retired(st.qc, err):
		// The stripe was retired; nothing was in flight on it.
	case errors.Is(err, transport.ErrMalformed):
		msg := stream + ": " + err.Error()
		c.end(fmt.Errorf("%s: %s: %w", c.peerDesc(), stream, err), &transport.Error{Code: transport.ErrCodeProtocol, Message: msg},
			quicgo.ApplicationErrorCode(transport.ErrCodeProtocol), truncate(msg, 512))
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		if st.qc.Context().Err() != nil {
			c.end(c.stripeErr(st, err), nil, 0, "")
		} else {
			c.end(&goneError{peer: c.peerDesc(), reason: "closed its " + stream}, nil, 0, "")
		}
	default:
		c.end(c.stripeErr(st, err), nil, 0, "")
	}
}

// stripeErr explains the failure of stripe st; errors of stripes other than
// the first name it, since a stripe's death ends the whole session.
func (c *Conn) stripeErr(st *stripe, err error) error {
	err = c.connErrOn(st.qc, err)
	if st.idx == 0 || errors.Is(err, transport.ErrClosed) {
		return err
	}
	return fmt.Errorf("stripe %d: %w", st.idx, err)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// protocolViolation ends the session because the peer broke the protocol.
func (c *Conn) protocolViolation(msg string) {
	c.end(fmt.Errorf("%s: protocol violation: %s", c.peerDesc(), msg), &transport.Error{Code: transport.ErrCodeProtocol, Message: msg},
		quicgo.ApplicationErrorCode(transport.ErrCodeProtocol), truncate(msg, 512))
}

// deliver hands a received frame to Recv, waiting while its queue is full
// until the session stops reading.
func (c *Conn) deliver(ch chan transport.Frame, f transport.Frame) bool {
	select {
	case ch <- f:
		return true
	case <-c.stopRead:
		return false
	}
}

func (c *Conn) readControl() {
	defer c.wg.Done()
	defer c.readers.done()
	goaway := ""
	for {
		f, err := c.ctlDec.ReadFrame(c.ctlReader)
		if err == io.EOF && c.ctx.Err() == nil {
			// The peer finished its side of the session: nothing more
			// follows. Let its lanes drain (briefly) before ending.
			timer := time.NewTimer(closeGrace)
			c.readers.wait(1, c.ctx.Done(), timer.C)
			timer.Stop()
			if goaway == "" {
				goaway = "closed its control stream"
			}
			c.end(&goneError{peer: c.peerDesc(), reason: goaway}, nil, 0, "")
			return
		}
		if err != nil {
			c.readFailed(c.first, "control stream", err)
			return
		}
		c.framesRecvd.Add(1)
		switch f := f.(type) {
		case *transport.Ping:
			// Answered inline: a peer that floods pings is held back by
			// the control queue, not buffered without bound. Once the
			// session is ending, pings go unanswered.
			c.ctl.send(c.ctx, &transport.Pong{Nonce: f.Nonce, SentAt: f.SentAt}, 0, false)
		case *transport.Pong:
			if sample := time.Now().UnixNano() - f.SentAt; sample > 0 {
				old := c.pingRTT.Load()
				if old == 0 {
					c.pingRTT.Store(sample)
				} else {
					c.pingRTT.Store(old + (sample-old)/8)
				}
			}
		case *transport.Hello, *transport.Welcome:
			c.protocolViolation(fmt.Sprintf("unexpected %s after the handshake", transport.TypeOf(f)))
			return
		case *transport.Batch:
			c.protocolViolation("batch on the control stream")
			return
		case *transport.Dict:
			// Stored before the ack leaves: no batch can name it before
			// the lane decoders can find it.
			if err := c.rxDicts.Add(f); err != nil {
				c.protocolViolation(err.Error())
				return
			}
			c.ctl.send(c.ctx, &transport.DictAck{ID: f.ID}, 0, false)
		case *transport.DictAck:
			if c.txDicts == nil {
				c.protocolViolation(fmt.Sprintf("ack of dictionary %d, which was never sent", f.ID))
				return
			}
			if err := c.txDicts.Ack(f.ID); err != nil {
				c.protocolViolation(err.Error())
				return
			}
		case *transport.Error:
			select {
			case c.recvCtl <- f:
			default:
			}
			c.end(fmt.Errorf("%s: %w", c.peerDesc(), f), nil, 0, "")
			return
		default:
			if g, ok := f.(*transport.Goaway); ok {
				goaway = g.Reason
			}
			if !c.deliver(c.recvCtl, f) {
				return
			}
		}
	}
}

// acceptLanes accepts the peer's lanes on stripe st and starts a reader for
// each. It returns when the stripe's connection ends; unless the peer
// retired the stripe, that ends the session.
func (c *Conn) acceptLanes(st *stripe) {
	defer c.wg.Done()
	for {
		rs, err := st.qc.AcceptUniStream(c.ctx)
		if err != nil {
			switch {
			case c.ctx.Err() != nil:
			case st.idx > 0 && retired(st.qc, err):
				c.dropStripe(st)
			default:
				c.end(c.stripeErr(st, err), nil, 0, "")
			}
			return
		}
		c.wg.Add(1)
		c.readers.add()
		go c.readLane(st, rs)
	}
}

func (c *Conn) readLane(st *stripe, rs *quicgo.ReceiveStream) {
	defer c.wg.Done()
	defer c.readers.done()
	name := fmt.Sprintf("lane %d", rs.StreamID())
	if st.idx > 0 {
		name = fmt.Sprintf("stripe %d lane %d", st.idx, rs.StreamID())
	}
	br := bufio.NewReaderSize(&countingReader{r: rs, n: &c.wireBytes}, readBufSize)
	kind, err := br.ReadByte()
	if err != nil {
		if !errors.Is(err, io.EOF) {
			c.readFailed(st, name, err)
		}
		return
	}
	switch {
	case kind == streamKindLane && !c.striped, kind == streamKindSeqLane && c.striped:
	default:
		c.protocolViolation(fmt.Sprintf("unexpected stream kind 0x%02x on %s (ALPN %s)", kind, name, c.alpn()))
		return
	}
	seqd := kind == streamKindSeqLane
	dec := transport.NewDecoder(c.cfg.limits)
	if err := dec.SetVersion(c.welcome.Version); err != nil {
		c.protocolViolation(err.Error()) // cannot happen: the handshake checked the version
		return
	}
	dec.SetDicts(c.rxDicts)
	defer dec.Close()
	for {
		var seq uint64
		var f transport.Frame
		if seqd {
			seq, f, err = readSeqFrame(br, dec)
		} else {
			f, err = dec.ReadFrame(br)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				c.readFailed(st, name, err)
			}
			return
		}
		b, ok := f.(*transport.Batch)
		if !ok {
			c.protocolViolation(fmt.Sprintf("%s frame on %s (only batches travel on lanes)", transport.TypeOf(f), name))
			return
		}
		c.framesRecvd.Add(1)
		raw := int64(b.RawSize())
		c.rawBytes.Add(raw)
		if !seqd {
			if !c.deliver(c.recvData, b) {
				return
			}
			continue
		}
		if err := c.reo.push(b, seq, raw, c.deliverBatch); err != nil {
			c.protocolViolation(fmt.Sprintf("%s: %v", name, err))
			return
		}
	}
}

// readSeqFrame reads one record of a sequenced lane: a uvarint sequence
// number, then a frame. It returns io.EOF if br ends cleanly before the
// sequence number, io.ErrUnexpectedEOF if it ends after it.
func readSeqFrame(br *bufio.Reader, dec *transport.Decoder) (uint64, transport.Frame, error) {
	seq, err := readUvarint(br)
	if err != nil {
		return 0, nil, err
	}
	f, err := dec.ReadFrame(br)
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF // a sequence number without its batch
	}
	return seq, f, err
}

// readUvarint reads a uvarint as binary.ReadUvarint does, but tells the
// errors apart: io.EOF before the first byte, io.ErrUnexpectedEOF inside
// it, read errors as they are, and one wrapping transport.ErrMalformed if
// it overflows 64 bits.
func readUvarint(br *bufio.Reader) (uint64, error) {
	var x uint64
	for i := range binary.MaxVarintLen64 {
		b, err := br.ReadByte()
		if err != nil {
			if i > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		if b < 0x80 {
			if i == binary.MaxVarintLen64-1 && b > 1 {
				break
			}
			return x | uint64(b)<<(7*i), nil
		}
		x |= uint64(b&0x7f) << (7 * i)
	}
	return 0, fmt.Errorf("%w: sequence number overflows 64 bits", transport.ErrMalformed)
}

// deliverBatch hands an in-order batch to Recv; false once the session
// stops reading.
func (c *Conn) deliverBatch(b *transport.Batch) bool { return c.deliver(c.recvData, b) }

// alpn is the negotiated binding.
func (c *Conn) alpn() string {
	if c.striped {
		return ALPNStriped
	}
	return ALPN
}

// pinger sends a Ping every ping period.
func (c *Conn) pinger() {
	defer c.wg.Done()
	if c.cfg.pingPeriod <= 0 {
		return
	}
	t := time.NewTicker(c.cfg.pingPeriod)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			p := &transport.Ping{Nonce: c.pingNonce.Add(1), SentAt: time.Now().UnixNano()}
			if err := c.ctl.send(c.ctx, p, 0, false); err != nil {
				return
			}
		}
	}
}

// lane returns the sender of lane i, opening its stream on first use.
func (c *Conn) lane(i int) (*sender, error) {
	c.lanesMu.Lock()
	defer c.lanesMu.Unlock()
	return c.laneLocked(i)
}

// laneLocked returns lane i of the first stripe, opening it on first use.
func (c *Conn) laneLocked(i int) (*sender, error) {
	if s := c.lanes[i]; s != nil {
		return s, nil
	}
	if c.lanesClosed {
		if err := c.Err(); err != nil {
			return nil, err
		}
		return nil, transport.ErrClosed
	}
	s, err := c.openLane(c.first, fmt.Sprintf("lane %d", i), laneQueue, nil, nil)
	if err != nil {
		return nil, err
	}
	c.lanes[i] = s
	return s, nil
}

// openLanesLocked opens a dialer's lanes on a stripe: lane senders with a
// queue each (v1, PlacePinned), or writers that take batches from dataQ
// (PlaceAny).
func (c *Conn) openLanesLocked(st *stripe) error {
	name := func(i int) string {
		if st.idx == 0 {
			return fmt.Sprintf("lane %d", i)
		}
		return fmt.Sprintf("stripe %d lane %d", st.idx, i)
	}
	for i := range c.cfg.lanes {
		var err error
		switch {
		case c.anyPlace:
			var s *sender
			if s, err = c.openLane(st, name(i), 0, c.dataQ, c.dataFree); err == nil {
				st.writers = append(st.writers, s)
			}
		case st.idx == 0:
			_, err = c.laneLocked(i)
		default:
			var s *sender
			if s, err = c.openLane(st, name(i), laneQueue, nil, nil); err == nil {
				st.lanes = append(st.lanes, s)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// openLane opens a lane stream on stripe st and starts its writer. With q
// nil the sender has its own queue of depth; otherwise it takes frames from
// the shared q (and recycles buffers into free).
func (c *Conn) openLane(st *stripe, name string, depth int, q, free chan []byte) (*sender, error) {
	rs, err := st.qc.OpenUniStream()
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, c.stripeErr(st, err))
	}
	kind := streamKindLane
	if c.striped {
		kind = streamKindSeqLane
	}
	var enc *transport.Encoder
	if q == nil {
		if enc, err = c.newEncoder(); err != nil {
			rs.CancelWrite(0)
			return nil, err
		}
	}
	// The kind byte goes out at once (a fresh stream always has flow-control
	// credit for it), so the peer sees the lane before its first batch.
	if _, err := rs.Write([]byte{kind}); err != nil {
		rs.CancelWrite(0)
		return nil, fmt.Errorf("open %s: %w", name, c.stripeErr(st, err))
	}
	s := newSender(c, name, depth, enc, rs)
	s.st = st
	if q != nil {
		s.q, s.free, s.shared = q, free, true
	}
	c.writers.Add(1)
	go s.run()
	return s, nil
}

// newEncoder returns an encoder for batches this side sends.
func (c *Conn) newEncoder() (*transport.Encoder, error) {
	return transport.NewEncoderOptions(c.sendCodec, transport.EncoderOptions{Level: c.cfg.level, Dicts: c.txDicts})
}

// laneOf maps a batch to a lane by FNV-1a of (leg, topic, partition), so
// that one partition's batches always share a stream and stay in order.
func laneOf(b *transport.Batch, lanes int) int {
	if lanes <= 1 {
		return 0
	}
	return int(partHash(b) % uint64(lanes))
}

// partHash is FNV-1a of (leg, 0xff, topic, 0xff, partition as 4
// little-endian bytes).
func partHash(b *transport.Batch) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	for i := 0; i < len(b.Leg); i++ {
		h = (h ^ uint64(b.Leg[i])) * prime
	}
	h = (h ^ 0xff) * prime
	for i := 0; i < len(b.Topic); i++ {
		h = (h ^ uint64(b.Topic[i])) * prime
	}
	h = (h ^ 0xff) * prime
	p := uint32(b.Partition)
	for range 4 {
		h = (h ^ uint64(p&0xff)) * prime
		p >>= 8
	}
	return h
}

// sendStream is the part of a QUIC send stream a sender uses.
type sendStream interface {
	io.WriteCloser // Close finishes the send direction only
	SetWriteDeadline(time.Time) error
}

// sender serializes frames onto one stream: callers encode under sem and
// queue the bytes; run writes them. A PlaceAny writer (shared) has no queue
// of its own: it takes encoded batches from the session's dataQ.
type sender struct {
	c      *Conn
	st     *stripe // nil for the control stream
	name   string
	sem    chan struct{} // held while encoding and queueing one frame
	enc    *transport.Encoder
	q      chan []byte
	free   chan []byte
	shared bool
	stream sendStream
	broken atomic.Bool // a write failed, perhaps part-way through a frame
}

func newSender(c *Conn, name string, depth int, enc *transport.Encoder, st sendStream) *sender {
	return &sender{
		c: c, name: name, enc: enc, stream: st,
		sem:  make(chan struct{}, 1),
		q:    make(chan []byte, depth),
		free: make(chan []byte, depth+1),
	}
}

// send encodes f and queues it. A batch on a sequenced lane (seqd) is
// preceded by its partition sequence number seq.
func (s *sender) send(ctx context.Context, f transport.Frame, seq uint64, seqd bool) error {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.c.ctx.Done():
		return s.c.Err()
	}
	defer func() { <-s.sem }()

	var buf []byte
	select {
	case buf = <-s.free:
	default:
	}
	var err error
	raw := 0
	b, isBatch := f.(*transport.Batch)
	start := 0
	if isBatch {
		buf = buf[:0]
		if seqd {
			buf = binary.AppendUvarint(buf, seq)
			start = len(buf)
		}
		buf, raw, err = s.enc.AppendBatch(buf, b)
		if err == nil && s.c.maxBatch > 0 && int64(raw) > s.c.maxBatch {
			err = fmt.Errorf("%d raw bytes exceed the peer's MaxBatchBytes of %d", raw, s.c.maxBatch)
		}
		if err != nil {
			s.recycle(buf)
			return fmt.Errorf("send batch %s/%d seq %d: %w", b.Topic, b.Partition, b.Seq, err)
		}
	} else {
		buf, err = s.enc.AppendFrame(buf[:0], f)
		if err != nil {
			s.recycle(buf)
			return fmt.Errorf("send %s: %w", transport.TypeOf(f), err)
		}
	}
	select {
	case s.q <- buf:
	default:
		if isBatch {
			s.c.sendWaits.Add(1)
		}
		select {
		case s.q <- buf:
		case <-ctx.Done():
			s.recycle(buf)
			return ctx.Err()
		case <-s.c.ctx.Done():
			return s.c.Err()
		}
	}
	s.c.framesSent.Add(1)
	s.c.wireBytes.Add(int64(len(buf)))
	if isBatch {
		b.WireSize = len(buf) - start
		s.c.rawBytes.Add(int64(raw))
	}
	return nil
}

func (s *sender) recycle(buf []byte) {
	if buf == nil || cap(buf) > 4<<20 {
		return
	}
	select {
	case s.free <- buf[:0]:
	default:
	}
}

// run writes queued frames until the session ends, then flushes what is
// still queued (bounded by the write deadline the supervisor sets).
func (s *sender) run() {
	defer s.c.writers.Done()
	for {
		select {
		case buf := <-s.q:
			if !s.write(buf) {
				return
			}
			s.recycle(buf)
		case <-s.c.ctx.Done():
			for {
				select {
				case buf := <-s.q:
					if !s.write(buf) {
						return
					}
				default:
					return
				}
			}
		}
	}
}

func (s *sender) write(buf []byte) bool {
	if _, err := s.stream.Write(buf); err != nil {
		s.broken.Store(true)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			werr := s.c.connErr(err)
			if s.st != nil {
				werr = s.c.stripeErr(s.st, err)
			}
			s.c.end(fmt.Errorf("write %s: %w", s.name, werr), nil, 0, "")
		}
		return false
	}
	if s.st != nil {
		s.c.batchBytes.Add(int64(len(buf)))
		s.st.batchBytes.Add(int64(len(buf)))
	}
	return true
}

// countingReader counts the bytes read through it into n.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n.Add(int64(n))
	return n, err
}

// readerSet counts the readers still reading, for waits with a deadline.
type readerSet struct {
	mu      sync.Mutex
	n       int
	changed chan struct{} // closed and replaced on every change
}

func (r *readerSet) add() {
	r.mu.Lock()
	r.n++
	r.mu.Unlock()
}

func (r *readerSet) done() {
	r.mu.Lock()
	r.n--
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// wait waits until at most n readers remain, stop is closed or timeout
// fires; it reports whether the count was reached.
func (r *readerSet) wait(n int, stop <-chan struct{}, timeout <-chan time.Time) bool {
	for {
		r.mu.Lock()
		if r.n <= n {
			r.mu.Unlock()
			return true
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-stop:
			return false
		case <-timeout:
			return false
		}
	}
}
