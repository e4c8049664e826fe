package amqp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/meridian-gw/meridian/transport"
)

// sessionProp is the application property that names a message's session.
const sessionProp = "meridian-session"

const recvQueue = 64 // decoded frames waiting for Recv

var _ transport.Conn = (*Conn)(nil)

// Conn is one session over the broker. It implements transport.Conn.
//
// # Goroutines
//
// A dialer's session runs a reader (the control receiver), a confirmer
// (waits for the broker's outcome of each message sent, in order) and a
// pinger; a listener's session runs a pinger, and the listener's reader of
// the data address delivers to it. Close waits for them all.
type Conn struct {
	id      string // session id, in every message's sessionProp
	client  bool
	hello   *transport.Hello
	welcome *transport.Welcome
	addrs   Addresses
	broker  string
	log     *slog.Logger
	timing  Timing
	maxRaw  int64 // peer's MaxBatchBytes (dialer); 0: no check

	// sendMu orders messages: they reach the broker in the order their
	// Sends took it, so one caller's frames (a partition's batches) stay
	// in order. Frames are encoded (compressed) before, in the caller's
	// goroutine with an encoder of encs, so that concurrent callers (one
	// per partition pipeline) compress in parallel.
	sendMu sync.Mutex
	encs   *encoderPool
	// send hands one encoded frame to the broker. A dialer's returns once
	// the transfer is queued (its confirmer waits for the outcome); a
	// listener's waits for the broker's outcome.
	send func(ctx context.Context, m *goamqp.Message) error

	dec  *transport.Decoder // used by one reading goroutine only
	body bodyReader         // dec's, as dec
	recv chan transport.Frame

	// Listener side: data messages not yet settled.
	settleMu  sync.Mutex
	unsettled map[uint64]held // by batch Seq
	resumeGen map[string]uint64
	settle    func(m *goamqp.Message) // accepts m (nil on a dialer)

	lastRecv atomic.Int64 // Unix nanoseconds
	lastSent atomic.Int64
	rtt      atomic.Int64
	nonce    atomic.Uint64

	rawBytes, wireBytes, framesSent, framesRecvd atomic.Int64

	ctx    context.Context // ends when the session starts ending
	cancel context.CancelFunc
	wg     sync.WaitGroup
	onEnd  func() // closes the dialer's connection or unregisters from the listener
	// flow describes this side's AMQP flow state (credit, messages held or
	// in flight) for errors about a silent peer; nil: nothing to say.
	flow func() string

	mu    sync.Mutex
	cause error
	once  sync.Once
	ended chan struct{} // closed by end, before cleanup
	done  chan struct{}
}

// held is a received batch message that waits for its Ack.
type held struct {
	m   *goamqp.Message
	leg string
	gen uint64
}

func newSessionID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func newConn(id string, client bool, codec transport.Codec, lim transport.Limits, t Timing, log *slog.Logger) (*Conn, error) {
	encs, err := newEncoderPool(codec, runtime.GOMAXPROCS(0))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Conn{
		id: id, client: client, encs: encs, dec: transport.NewDecoder(lim), timing: t, log: log,
		recv: make(chan transport.Frame, recvQueue), ctx: ctx, cancel: cancel,
		unsettled: map[uint64]held{}, resumeGen: map[string]uint64{},
		ended: make(chan struct{}), done: make(chan struct{}),
	}
	now := time.Now().UnixNano()
	c.lastRecv.Store(now)
	c.lastSent.Store(now)
	return c, nil
}

// message wraps an encoded frame.
//
// The handshake's messages (Hello, Welcome) expire after the handshake
// timeout: a Hello nobody answered in time belongs to a dial that has
// given up, and a receiver that starts later must not open sessions for
// the Hellos of every failed dial queued meanwhile.
func (c *Conn) message(frame []byte, t transport.FrameType) *goamqp.Message {
	subject := t.String()
	m := &goamqp.Message{
		Data:                  [][]byte{frame},
		Properties:            &goamqp.MessageProperties{Subject: &subject},
		ApplicationProperties: map[string]any{sessionProp: c.id},
	}
	if (t == transport.FrameHello || t == transport.FrameWelcome) && c.timing.Handshake > 0 {
		m.Header = &goamqp.MessageHeader{TTL: c.timing.Handshake}
	}
	return m
}

// sessionOf returns a message's session id ("" if none).
func sessionOf(m *goamqp.Message) string {
	s, _ := m.ApplicationProperties[sessionProp].(string)
	return s
}

// bodyReader reads message bodies for a Decoder, reusing its buffer: one
// per reading goroutine (a bufio.Reader of a body's size per message was
// 64 KiB allocated and copied for every batch).
type bodyReader struct {
	src bytes.Reader
	br  *bufio.Reader
}

func (b *bodyReader) reset(body []byte) *bufio.Reader {
	b.src.Reset(body)
	if b.br == nil {
		b.br = bufio.NewReaderSize(&b.src, 64<<10)
	} else {
		b.br.Reset(&b.src)
	}
	return b.br
}

// decodeMessage reads the one frame of a message body, with br (nil: a
// reader of its own).
func decodeMessage(dec *transport.Decoder, br *bodyReader, m *goamqp.Message, handshake bool) (transport.Frame, int, error) {
	if len(m.Data) != 1 {
		return nil, 0, fmt.Errorf("%w: message has %d data sections, want 1", transport.ErrMalformed, len(m.Data))
	}
	body := m.Data[0]
	if br == nil {
		br = &bodyReader{}
	}
	r := br.reset(body)
	var f transport.Frame
	var err error
	if handshake {
		f, err = dec.ReadHandshake(r)
	} else {
		f, err = dec.ReadFrame(r)
	}
	if err != nil {
		return nil, 0, err
	}
	if rest := r.Buffered() + br.src.Len(); rest > 0 {
		return nil, 0, fmt.Errorf("%w: %d bytes after the frame", transport.ErrMalformed, rest)
	}
	return f, len(body), nil
}

// sendFrame encodes f and hands it to the broker, in call order.
func (c *Conn) sendFrame(ctx context.Context, f transport.Frame) error {
	if err := c.Err(); err != nil {
		return err
	}
	e, err := c.encs.get(ctx, c.ended)
	if err != nil {
		return err
	}
	e.buf, err = e.enc.AppendFrame(e.buf[:0], f)
	frame := append([]byte(nil), e.buf...) // go-amqp keeps it until sent
	c.encs.put(e)
	if err != nil {
		return fmt.Errorf("send %s: %w", transport.TypeOf(f), err)
	}
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	if err := c.Err(); err != nil {
		return err
	}
	if b, ok := f.(*transport.Batch); ok {
		b.WireSize = len(frame)
		c.rawBytes.Add(int64(b.RawSize()))
	}
	if err := c.send(ctx, c.message(frame, transport.TypeOf(f))); err != nil {
		if ctx.Err() == nil {
			err = fmt.Errorf("send %s to %s: %w", transport.TypeOf(f), c.dataOrControl(true), err)
			c.end(err)
		}
		return err
	}
	c.wireBytes.Add(int64(len(frame)))
	c.framesSent.Add(1)
	c.lastSent.Store(time.Now().UnixNano())
	return nil
}

// encoderPool lends a session's encoders: at most max, made on demand
// (a zstd encoder holds its window and tables, so an idle session keeps
// one), each with its scratch buffer.
type encoderPool struct {
	codec transport.Codec
	free  chan *pooledEncoder
	made  atomic.Int32
}

type pooledEncoder struct {
	enc *transport.Encoder
	buf []byte
}

func newEncoderPool(codec transport.Codec, n int) (*encoderPool, error) {
	p := &encoderPool{codec: codec, free: make(chan *pooledEncoder, max(1, min(n, 8)))}
	enc, err := transport.NewEncoder(codec) // the first, so a bad codec fails the session at once
	if err != nil {
		return nil, err
	}
	p.made.Store(1)
	p.free <- &pooledEncoder{enc: enc}
	return p, nil
}

func (p *encoderPool) get(ctx context.Context, ended <-chan struct{}) (*pooledEncoder, error) {
	select {
	case e := <-p.free:
		return e, nil
	default:
	}
	if n := p.made.Add(1); int(n) <= cap(p.free) {
		enc, err := transport.NewEncoder(p.codec)
		if err != nil {
			p.made.Add(-1)
			return nil, err
		}
		return &pooledEncoder{enc: enc}, nil
	}
	p.made.Add(-1)
	select {
	case e := <-p.free:
		return e, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-ended:
		return nil, transport.ErrClosed
	}
}

func (p *encoderPool) put(e *pooledEncoder) {
	if cap(e.buf) > 4<<20 {
		e.buf = nil // a rare huge frame: do not keep its buffer
	}
	p.free <- e // never blocks: at most cap(free) are out
}

// dataOrControl names the address this side sends on (out) or reads.
func (c *Conn) dataOrControl(out bool) string {
	if c.client == out {
		return c.addrs.Data
	}
	return c.addrs.Control
}

// Send sends f to the peer through the broker. Frames arrive in the order
// sent (one queue per direction), so a partition's batches stay in order.
// On a dialer Send returns once the message is handed to go-amqp and
// blocks while MaxInFlight messages wait for the broker's outcome, or while
// the broker grants no link credit: a slow or full broker holds the
// sender back. A batch over the peer's Welcome.MaxBatchBytes is refused
// and the session continues. Safe for concurrent use.
//
// On a listener, an Ack first accepts (settles) the messages of the
// batches it lists, then travels to the dialer; a Resume or Fenced for a
// leg accepts the messages of the leg's batches that the engine drops.
func (c *Conn) Send(ctx context.Context, f transport.Frame) error {
	if err := transport.CheckSend(ctx, f, c.welcome.Version, c.Err()); err != nil {
		return err
	}
	switch f := f.(type) {
	case *transport.Hello, *transport.Welcome:
		return fmt.Errorf("send %s: only the handshake sends it", transport.TypeOf(f))
	case *transport.Dict, *transport.DictAck:
		return fmt.Errorf("send %s: the amqp binding uses no dictionaries", transport.TypeOf(f))
	case *transport.Batch:
		if c.maxRaw > 0 && int64(f.RawSize()) > c.maxRaw {
			return fmt.Errorf("send batch: %d raw bytes exceed the peer's limit of %d", f.RawSize(), c.maxRaw)
		}
	case *transport.Ack:
		if !c.client {
			c.settleAcked(f.Seqs)
		}
	case *transport.Resume:
		if !c.client {
			c.settleLeg(f.Leg, f.Gen)
		}
	case *transport.Fenced:
		if !c.client {
			c.settleLeg(f.Leg, ^uint64(0))
		}
	}
	return c.sendFrame(ctx, f)
}

// settleAcked accepts the messages of acknowledged batches: their records
// are committed at the destination.
func (c *Conn) settleAcked(seqs []uint64) {
	c.settleMu.Lock()
	var ms []*goamqp.Message
	for _, s := range seqs {
		if h, ok := c.unsettled[s]; ok {
			ms = append(ms, h.m)
			delete(c.unsettled, s)
		}
	}
	c.settleMu.Unlock()
	for _, m := range ms {
		c.settle(m)
	}
}

// settleLeg accepts the messages of leg's batches older than gen, which
// the engine drops (PROTOCOL.md section 8), and makes later ones of an
// older Gen settle on arrival.
func (c *Conn) settleLeg(leg string, gen uint64) {
	c.settleMu.Lock()
	if gen != ^uint64(0) {
		c.resumeGen[leg] = gen
	}
	var ms []*goamqp.Message
	for s, h := range c.unsettled {
		if h.leg == leg && h.gen < gen {
			ms = append(ms, h.m)
			delete(c.unsettled, s)
		}
	}
	c.settleMu.Unlock()
	for _, m := range ms {
		c.settle(m)
	}
}

// settleAll accepts every held message: the session ended, its batches
// are worthless (the next session resumes from the destination).
func (c *Conn) settleAll() {
	c.settleMu.Lock()
	ms := make([]*goamqp.Message, 0, len(c.unsettled))
	for s, h := range c.unsettled {
		ms = append(ms, h.m)
		delete(c.unsettled, s)
	}
	c.settleMu.Unlock()
	for _, m := range ms {
		c.settle(m)
	}
}

// Held is how many received batch messages wait for their Ack (listener).
func (c *Conn) Held() int {
	c.settleMu.Lock()
	defer c.settleMu.Unlock()
	return len(c.unsettled)
}

// handle decodes one message of this session and delivers its frame. keep
// says the session holds m (a listener's batch, settled on its Ack, or by
// the session when it ends); the caller settles every other message. ok is
// false once the session has ended.
func (c *Conn) handle(m *goamqp.Message) (keep bool, ok bool) {
	f, n, err := decodeMessage(c.dec, &c.body, m, false)
	if err != nil {
		c.protocolError(fmt.Errorf("decode message from %s: %w", c.dataOrControl(false), err))
		return false, false
	}
	c.lastRecv.Store(time.Now().UnixNano())
	c.wireBytes.Add(int64(n))
	c.framesRecvd.Add(1)
	switch f := f.(type) {
	case *transport.Ping:
		ctx, cancel := context.WithTimeout(c.ctx, c.timing.IdleTimeout)
		c.Send(ctx, &transport.Pong{Nonce: f.Nonce, SentAt: f.SentAt})
		cancel()
		return false, true
	case *transport.Pong:
		if f.SentAt > 0 {
			s := time.Since(time.Unix(0, f.SentAt))
			if old := c.rtt.Load(); old > 0 {
				s = (7*time.Duration(old) + s) / 8
			}
			c.rtt.Store(int64(s))
		}
		return false, true
	case *transport.Hello, *transport.Welcome, *transport.Dict, *transport.DictAck:
		c.protocolError(fmt.Errorf("unexpected %s frame in session", transport.TypeOf(f)))
		return false, false
	case *transport.Error:
		select {
		case c.recv <- f:
		default:
		}
		c.end(fmt.Errorf("peer %s: %w", c.peerName(), f))
		return false, false
	case *transport.Batch:
		c.rawBytes.Add(int64(f.RawSize()))
		if !c.client {
			c.settleMu.Lock()
			if f.Gen >= c.resumeGen[f.Leg] {
				c.unsettled[f.Seq] = held{m: m, leg: f.Leg, gen: f.Gen}
				keep = true
			}
			c.settleMu.Unlock()
		}
	case *transport.Goaway:
		if !c.deliver(f) {
			return false, false
		}
		c.end(fmt.Errorf("%w: peer %s is going away: %s", transport.ErrClosed, c.peerName(), f.Reason))
		return false, false
	}
	if !c.deliver(f) {
		if keep {
			c.settleAll() // m among them: the caller must not settle it again
		}
		return keep, false
	}
	return keep, true
}

func (c *Conn) deliver(f transport.Frame) bool {
	select {
	case c.recv <- f:
		return true
	case <-c.ended:
		return false
	}
}

func (c *Conn) peerName() string {
	if c.client {
		return c.welcome.Gateway
	}
	return c.hello.Gateway
}

// protocolError ends the session with Error protocol, telling the peer.
func (c *Conn) protocolError(err error) {
	c.log.Warn("protocol error", "err", err)
	ctx, cancel := context.WithTimeout(context.Background(), c.timing.CloseTimeout)
	c.sendFrame(ctx, &transport.Error{Code: transport.ErrCodeProtocol, Message: err.Error()})
	cancel()
	c.end(err)
}

// pinger sends a Ping when nothing was sent for KeepAlive, and ends the
// session when nothing arrived for IdleTimeout.
func (c *Conn) pinger() {
	defer c.wg.Done()
	t := time.NewTicker(c.timing.KeepAlive / 2)
	defer t.Stop()
	for {
		select {
		case <-c.ended:
			return
		case <-t.C:
		}
		now := time.Now()
		if idle := now.Sub(time.Unix(0, c.lastRecv.Load())); idle > c.timing.IdleTimeout {
			var state string
			if c.flow != nil {
				state = "; " + c.flow()
			}
			c.end(fmt.Errorf("no message from peer %s on %s for %s (idle timeout%s)", c.peerName(), c.dataOrControl(false), idle.Round(time.Millisecond), state))
			return
		}
		if now.Sub(time.Unix(0, c.lastSent.Load())) >= c.timing.KeepAlive {
			ctx, cancel := context.WithTimeout(c.ctx, c.timing.IdleTimeout)
			c.Send(ctx, &transport.Ping{Nonce: c.nonce.Add(1), SentAt: now.UnixNano()})
			cancel()
		}
	}
}

// end records why the session ends (the first cause wins) and starts
// ending it; finish completes it.
func (c *Conn) end(err error) {
	c.mu.Lock()
	if c.cause == nil {
		if err == nil {
			err = transport.ErrClosed
		}
		c.cause = err
	}
	c.mu.Unlock()
	c.once.Do(func() {
		close(c.ended)
		c.cancel()
		go func() {
			c.wg.Wait()
			if c.onEnd != nil {
				c.onEnd()
			}
			if !c.client {
				c.settleAll()
			}
			close(c.done)
		}()
	})
}

// Recv returns the next frame from the peer. Ping and Pong are handled by
// the session. After the session ended it returns what had arrived, then
// Err().
func (c *Conn) Recv(ctx context.Context) (transport.Frame, error) {
	select {
	case f := <-c.recv:
		return f, nil
	default:
	}
	select {
	case f := <-c.recv:
		return f, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.ended:
		select {
		case f := <-c.recv:
			return f, nil
		default:
			return nil, c.Err()
		}
	}
}

// Close ends the session: with an Error frame to the peer when err is a
// *transport.Error, otherwise with a Goaway, then closes what the session
// owns (every close bounded by Timing.CloseTimeout) and waits for its
// goroutines. Safe to call more than once.
func (c *Conn) Close(err error) error {
	select {
	case <-c.ended:
	default:
		var final transport.Frame
		var terr *transport.Error
		if errors.As(err, &terr) {
			final = terr
		} else {
			reason := "closed"
			if err != nil {
				reason = err.Error()
			}
			final = &transport.Goaway{Reason: reason}
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.timing.CloseTimeout)
		c.sendFrame(ctx, final)
		cancel()
		if err == nil {
			err = transport.ErrClosed
		} else if terr == nil {
			err = fmt.Errorf("%w: %w", transport.ErrClosed, err)
		}
		c.end(err)
	}
	<-c.done
	return nil
}

// Hello is the dialer's Hello.
func (c *Conn) Hello() *transport.Hello { return c.hello }

// Welcome is the listener's Welcome.
func (c *Conn) Welcome() *transport.Welcome { return c.welcome }

// Done is closed once the session has ended and its goroutines returned.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err says why the session ended, or nil while it runs.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cause
}

// ID is the session's id (the meridian-session property of its messages).
func (c *Conn) ID() string { return c.id }

// Stats returns the session's counters; RTT is the Ping/Pong estimate
// through the broker.
func (c *Conn) Stats() transport.ConnStats {
	return transport.ConnStats{
		RTT:         time.Duration(c.rtt.Load()),
		RawBytes:    c.rawBytes.Load(),
		WireBytes:   c.wireBytes.Load(),
		FramesSent:  c.framesSent.Load(),
		FramesRecvd: c.framesRecvd.Load(),
	}
}

// RemoteAddr names the broker and the address the peer's frames come from.
func (c *Conn) RemoteAddr() net.Addr { return Addr{Broker: c.broker, Address: c.dataOrControl(false)} }

// Addr is a broker address as a net.Addr: network "amqp", string
// "BROKER-URL ADDRESS".
type Addr struct{ Broker, Address string }

func (a Addr) Network() string { return "amqp" }
func (a Addr) String() string  { return a.Broker + " " + a.Address }

// closeBounded runs close and waits for it at most d.
func closeBounded(d time.Duration, close func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	ch := make(chan error, 1)
	go func() { ch <- close(ctx) }()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return fmt.Errorf("close: no answer within %s", d)
	}
}

func nowNano() int64 { return time.Now().UnixNano() }
