package quic

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/meridian-gw/meridian/internal/pki"
	"github.com/meridian-gw/meridian/transport"
)

var _ transport.Listener = (*Listener)(nil)

// Listener accepts sessions from peer gateways on one UDP socket. Every
// incoming connection is handshaken on its own goroutine (TLS, then Hello:
// version, identity, the Accept callback); a failing client is logged and
// refused, and the listener carries on.
//
// Close stops accepting but leaves sessions already returned by Accept
// running: the socket stays open until the last of them ends.
type Listener struct {
	cfg    *sessionConfig
	log    *slog.Logger
	accept transport.Accept
	name   string // this gateway's certificate name, for Welcomes and messages
	tr     *quicgo.Transport
	ln     *quicgo.EarlyListener
	pc     net.PacketConn
	ownPC  bool
	roots  *x509.CertPool // the CA of client certificates

	accepted chan *Conn
	ctx      context.Context // ends when Close starts
	cancel   context.CancelFunc
	wg       sync.WaitGroup // accept loop and handshakes
	once     sync.Once

	mu       sync.Mutex
	sessions int  // sessions alive on the socket
	closed   bool // Close has run: release the socket with the last session
	released bool
	joinable map[[32]byte]*Conn // striped sessions by join token
	caps     *caps
}

// Listen listens for sessions on addr (host:port, UDP; port 0 picks one) or,
// if opts.PacketConn is set, on that socket.
func Listen(addr string, opts ListenerOptions) (*Listener, error) {
	cfg, qconf, err := opts.Session.build("ListenerOptions", true)
	var log *slog.Logger
	if cfg != nil {
		log = cfg.log.With("component", "transport/quic", "side", "listener")
		cfg.log = log
	} else {
		log = slog.New(slog.DiscardHandler)
	}
	protos := []string{ALPN}
	if cfg != nil && cfg.striping() {
		protos = []string{ALPNStriped, ALPN}
	}
	tlsConf, terr := serverTLS(opts.TLS, log, protos)
	cp, cerr := newCaps(&opts)
	if err = errors.Join(terr, err, cerr); err != nil {
		return nil, fmt.Errorf("quic listener: %w", err)
	}
	pc, own := opts.PacketConn, opts.ClosePacketConn
	if pc == nil {
		ua, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return nil, fmt.Errorf("quic listener %s: %w", addr, err)
		}
		if pc, err = net.ListenUDP("udp", ua); err != nil {
			return nil, fmt.Errorf("quic listener: %w", err)
		}
		own = true
	}
	tr := &quicgo.Transport{Conn: pc, StatelessResetKey: resetKey(opts.TLS)}
	// An early listener hands over connections before the handshake has
	// completed, so that a Hello in 0-RTT data can be answered at once.
	ln, err := tr.ListenEarly(tlsConf, qconf)
	if err != nil {
		tr.Close()
		if own {
			pc.Close()
		}
		return nil, fmt.Errorf("quic listener %s: %w", pc.LocalAddr(), err)
	}
	l := &Listener{
		cfg: cfg, log: log.With("addr", pc.LocalAddr().String()), accept: opts.Accept,
		name: ownName(opts.TLS), tr: tr, ln: ln, pc: pc, ownPC: own, roots: opts.TLS.ClientCAs,
		accepted: make(chan *Conn, max(opts.AcceptQueue, 0)),
		joinable: map[[32]byte]*Conn{}, caps: cp,
	}
	if opts.AcceptQueue == 0 {
		l.accepted = make(chan *Conn, 16)
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.wg.Add(1)
	go l.loop()
	l.log.Info("listening", "alpn", protos, "versions", fmt.Sprintf("%d-%d", transport.VersionMin, transport.VersionMax))
	return l, nil
}

// Addr is the local UDP address.
func (l *Listener) Addr() net.Addr { return l.pc.LocalAddr() }

// Accept returns the next handshaken session. After Close it returns an
// error wrapping net.ErrClosed.
func (l *Listener) Accept(ctx context.Context) (transport.Conn, error) {
	select {
	case c := <-l.accepted:
		return c, nil
	default:
	}
	select {
	case c := <-l.accepted:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-l.ctx.Done():
		return nil, fmt.Errorf("quic listener %s: %w", l.Addr(), net.ErrClosed)
	}
}

// Close stops accepting: handshakes in progress are abandoned and sessions
// not yet taken by Accept are closed. Sessions already returned by Accept are
// not affected; the socket is closed when the last of them ends (or now, if
// there is none). Close waits for the listener's goroutines and is safe to
// call more than once.
func (l *Listener) Close() error {
	l.once.Do(func() {
		l.cancel()
		l.ln.Close()
		l.wg.Wait()
		for len(l.accepted) > 0 {
			(<-l.accepted).Close(errors.New("listener closed"))
		}
		l.mu.Lock()
		l.closed = true
		last := l.sessions == 0
		l.mu.Unlock()
		if last {
			l.release()
		}
		l.log.Info("listener closed")
	})
	return nil
}

// release closes the socket once: called by Close when no session is alive,
// or by the last session to end after Close.
func (l *Listener) release() {
	l.mu.Lock()
	if l.released {
		l.mu.Unlock()
		return
	}
	l.released = true
	l.mu.Unlock()
	l.tr.Close()
	if l.ownPC {
		l.pc.Close()
	}
}

// sessionEnded is the cleanup of a session: it forgets its join token (if
// striped) and, after Close, releases the socket with the last session.
func (l *Listener) sessionEnded(peer string, token *[32]byte) {
	l.mu.Lock()
	if l.caps.byPeer[peer]--; l.caps.byPeer[peer] <= 0 {
		delete(l.caps.byPeer, peer)
	}
	if token != nil && *token != ([32]byte{}) {
		delete(l.joinable, *token)
	}
	l.sessions--
	last := l.closed && l.sessions == 0
	l.mu.Unlock()
	if last {
		l.release()
	}
}

func (l *Listener) loop() {
	defer l.wg.Done()
	for {
		qc, err := l.ln.Accept(l.ctx)
		if err != nil {
			if l.ctx.Err() == nil {
				l.log.Error("accept loop stopped", "err", err)
			}
			return
		}
		addr := addrKey(qc.RemoteAddr())
		if over := l.startHandshake(addr); over != "" {
			l.refuseOver(qc, over, "too many handshakes in progress ("+over+")")
			continue
		}
		l.wg.Go(func() {
			defer l.endHandshake(addr)
			l.handshake(qc)
		})
	}
}

// handshake reads the first stream of a new connection: the Hello of a new
// session (answered with Welcome or Error), or the join of a stripe. Each
// step below ends the connection itself when it fails, and returns false
// (or nil).
func (l *Listener) handshake(qc *quicgo.Conn) {
	log := l.log.With("remote", qc.RemoteAddr().String())
	hctx, cancel := context.WithTimeout(l.ctx, l.cfg.handshakeTimeout)
	defer cancel()

	st, err := qc.AcceptStream(hctx)
	if err != nil {
		if qc.Context().Err() != nil {
			// The handshake failed (a refused client certificate is logged
			// by the TLS layer).
			log.Debug("handshake failed", "err", context.Cause(qc.Context()))
			return
		}
		log.Warn("handshake failed: no control stream", "err", err)
		qc.CloseWithError(quicgo.ApplicationErrorCode(transport.ErrCodeProtocol), "no control stream")
		return
	}
	p := &pending{l: l, qc: qc, st: st, log: log, hctx: hctx, fired: make(chan struct{})}
	p.stop = context.AfterFunc(hctx, func() {
		st.CancelRead(0)
		st.CancelWrite(0)
		close(p.fired)
	})
	p.counter = &countingReader{r: st, n: new(atomic.Int64)}
	p.br = bufio.NewReaderSize(p.counter, readBufSize)
	first, err := p.br.Peek(1)
	if err == nil && first[0] == streamKindJoin {
		l.join(hctx, qc, st, p.br, p.stop, p.fired, log)
		return
	}
	p.dec = transport.NewDecoder(l.cfg.limits)
	handedOver := false
	defer func() {
		if !handedOver {
			p.dec.Close()
		}
	}()
	if !p.readHello(err) || !p.identify() {
		return
	}
	w := p.decide()
	if w == nil {
		return
	}
	sent, ok := p.writeWelcome(w)
	if !ok {
		return
	}
	confirm := p.confirmation()
	if !p.stop() {
		<-p.fired
		p.timedOut("no completed handshake")
		return
	}
	handedOver = p.start(w, confirm, sent)
}

// pending is a connection in its Hello/Welcome exchange on a listener.
type pending struct {
	l    *Listener
	qc   *quicgo.Conn
	st   *quicgo.Stream // the control stream
	log  *slog.Logger
	hctx context.Context // ends at the handshake timeout
	// stop disarms the handshake timeout; it returns false if the timeout
	// has fired (or is firing: then fired is closed once it has).
	stop  func() bool
	fired chan struct{}

	counter *countingReader
	br      *bufio.Reader
	dec     *transport.Decoder

	// Set by readHello and identify.
	hello *transport.Hello
	cs    quicgo.ConnectionState
	early bool   // the Hello came as 0-RTT data
	peer  string // the client's verified gateway name
}

// refuse answers with an Error frame and closes the connection; the code
// and message also travel in CONNECTION_CLOSE in case the frame is lost.
func (p *pending) refuse(e *transport.Error) {
	p.log.Warn("refused session", "code", e.CodeName(), "reason", e.Message)
	if buf, err := transport.AppendFrame(nil, e); err == nil {
		p.st.Write(buf)
	}
	p.qc.CloseWithError(quicgo.ApplicationErrorCode(e.Code), e.Message)
}

// timedOut closes a connection whose handshake timeout fired while it
// waited for what.
func (p *pending) timedOut(what string) {
	if p.l.ctx.Err() != nil {
		p.qc.CloseWithError(0, "listener closed")
		return
	}
	p.log.Warn("handshake failed: "+what+" in time", "timeout", p.l.cfg.handshakeTimeout)
	p.qc.CloseWithError(quicgo.ApplicationErrorCode(transport.ErrCodeProtocol), what)
}

// readHello reads the first frame, which must be a Hello; peekErr is the
// error of peeking at the stream's first byte.
func (p *pending) readHello(peekErr error) bool {
	var f transport.Frame
	err := peekErr
	if err == nil {
		f, err = p.dec.ReadHandshake(p.br)
	}
	if err != nil {
		if !p.stop() {
			<-p.fired
			p.timedOut("no hello")
			return false
		}
		if errors.Is(err, transport.ErrMalformed) {
			p.refuse(&transport.Error{Code: transport.ErrCodeProtocol, Message: "malformed hello: " + err.Error()})
			return false
		}
		if p.qc.Context().Err() != nil {
			p.log.Debug("handshake failed", "err", context.Cause(p.qc.Context()))
			return false
		}
		p.log.Warn("handshake failed: no hello", "err", err)
		p.qc.CloseWithError(quicgo.ApplicationErrorCode(transport.ErrCodeProtocol), "no hello")
		return false
	}
	hello, ok := f.(*transport.Hello)
	if !ok {
		p.stop()
		p.refuse(&transport.Error{Code: transport.ErrCodeProtocol, Message: fmt.Sprintf("expected hello, got %s", transport.TypeOf(f))})
		return false
	}
	p.hello = hello
	return true
}

// identify finds the client's identity: from the session ticket if the
// Hello came as 0-RTT data (the ticket was issued to a verified client,
// and the chain is verified again here), else from its certificate once
// the handshake has completed.
func (p *pending) identify() bool {
	p.cs = p.qc.ConnectionState()
	p.early = p.cs.Used0RTT
	if !p.early {
		if err := p.l.awaitHandshake(p.hctx, p.qc); err != nil {
			if !p.stop() {
				<-p.fired
			}
			if err == errConnFailed {
				p.log.Debug("handshake failed", "err", context.Cause(p.qc.Context()))
				return false
			}
			p.timedOut("no completed handshake")
			return false
		}
		p.cs = p.qc.ConnectionState()
	} else if err := verifyClient(p.cs.TLS, p.l.roots); err != nil {
		p.stop()
		p.log.Warn("refused 0-RTT session", "err", err)
		p.qc.CloseWithError(quicgo.ApplicationErrorCode(transport.ErrCodeIdentity), "client certificate not trusted")
		return false
	}
	p.peer = pki.PeerName(p.cs.TLS)
	p.log = p.log.With("peer", p.peer)
	return true
}

// decide agrees on the version, checks that the Hello names the gateway of
// the client certificate and asks the Accept callback. It returns the
// Welcome to send, zero fields filled in, or nil after refusing.
func (p *pending) decide() *transport.Welcome {
	l, hello := p.l, p.hello
	version, common := transport.NegotiateVersion(hello.VersionMin, hello.VersionMax)
	if !common {
		p.stop()
		p.refuse(&transport.Error{Code: transport.ErrCodeVersion, Message: fmt.Sprintf(
			"no common protocol version (receiver %s speaks %d-%d, sender %s speaks %d-%d)",
			orUnnamed(l.name), transport.VersionMin, transport.VersionMax, orUnnamed(hello.Gateway), hello.VersionMin, hello.VersionMax)})
		return nil
	}
	p.dec.SetVersion(version) // within this build's range: NegotiateVersion chose it
	if hello.Gateway != p.peer {
		p.stop()
		p.refuse(&transport.Error{Code: transport.ErrCodeIdentity, Message: fmt.Sprintf(
			"hello names gateway %q but its certificate is for %q", hello.Gateway, p.peer)})
		return nil
	}
	// Concurrent handshakes of one peer may all pass this check: they are
	// few (MaxHandshakesPerAddr), and the next one is refused.
	l.mu.Lock()
	n := l.caps.byPeer[p.peer]
	l.mu.Unlock()
	if n >= l.caps.perPeer {
		p.stop()
		l.caps.refused.WithLabelValues(CapSessionsPerPeer).Inc()
		p.refuse(&transport.Error{Code: transport.ErrCodeLimit, Message: fmt.Sprintf(
			"gateway %s has %d sessions open, the most this gateway takes from one peer", p.peer, n)})
		return nil
	}
	// Accept may see a Hello that arrived as 0-RTT data, which an attacker
	// can replay: the callback must decide without side effects (a routing
	// check). The session itself is handed over only after the handshake.
	w := &transport.Welcome{}
	if l.accept != nil {
		var err error
		w, err = l.accept(hello)
		if err != nil || w == nil {
			var te *transport.Error
			switch {
			case errors.As(err, &te):
			case err != nil:
				te = &transport.Error{Code: transport.ErrCodeInternal, Message: err.Error()}
			default:
				te = &transport.Error{Code: transport.ErrCodeInternal, Message: "accept returned no welcome"}
			}
			p.stop()
			p.refuse(te)
			return nil
		}
		cp := *w
		w = &cp
	}
	w.Version = version
	if w.Gateway == "" {
		w.Gateway = l.name
	}
	if w.Window == 0 {
		w.Window = transport.DefaultWindow
	}
	if w.MaxBatchBytes <= 0 || w.MaxBatchBytes > int64(l.cfg.limits.MaxBatchBytes) {
		w.MaxBatchBytes = int64(l.cfg.limits.MaxBatchBytes)
	}
	return w
}

// writeWelcome sends w and returns its size on the wire.
func (p *pending) writeWelcome(w *transport.Welcome) (int, bool) {
	buf, err := transport.AppendFrame(nil, w)
	if err == nil {
		_, err = p.st.Write(buf)
	}
	if err != nil {
		if !p.stop() {
			<-p.fired
		}
		p.log.Warn("handshake failed: write welcome", "err", err)
		p.qc.CloseWithError(quicgo.ApplicationErrorCode(transport.ErrCodeInternal), "")
		return 0, false
	}
	return len(buf), true
}

// confirmation returns, for a Hello in 0-RTT data, what waits for the
// handshake to complete; nil otherwise. Such a Hello was answered in the
// server's first flight. The session is handed over at once, tentatively:
// it is confirmed when the client has finished the handshake, and closed
// if it does not within the handshake timeout (a replay cannot).
// Conn.Confirmed says which.
func (p *pending) confirmation() func() error {
	if !p.early {
		return nil
	}
	qc, timeout := p.qc, p.l.cfg.handshakeTimeout
	deadline, _ := p.hctx.Deadline()
	return func() error {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		select {
		case <-qc.HandshakeComplete():
			if qc.Context().Err() != nil {
				return errConnFailed
			}
			return nil
		case <-t.C:
			return fmt.Errorf("no completed handshake within %s after a 0-RTT hello", timeout)
		case <-qc.Context().Done():
			return errConnFailed
		}
	}
}

// start builds the session and hands it to Accept. It returns false, the
// connection closed, if the listener closed meanwhile; true once the
// session owns the control stream's decoder.
func (p *pending) start(w *transport.Welcome, confirm func() error, sent int) bool {
	l, hello, qc := p.l, p.hello, p.qc
	codec := l.cfg.codec
	if len(hello.Codecs) > 0 && !slices.Contains(hello.Codecs, codec) {
		codec = transport.CodecNone
	}
	recvLimit := l.cfg.limits
	recvLimit.MaxBatchBytes = int(w.MaxBatchBytes)
	cs := p.cs
	if !p.early {
		cs = qc.ConnectionState()
	}
	striped := cs.TLS.NegotiatedProtocol == ALPNStriped

	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		qc.CloseWithError(0, "listener closed")
		return false
	}
	l.caps.byPeer[p.peer]++
	l.sessions++
	l.mu.Unlock()
	var (
		token    [32]byte
		tokenRef *[32]byte
		register func(*Conn) error
	)
	if striped {
		// Stripes join with a secret of the completed handshake: a
		// tentative session registers once it is confirmed.
		tokenRef = &token
		register = func(c *Conn) error {
			t, err := joinToken(qc.ConnectionState().TLS)
			if err != nil {
				return err
			}
			l.mu.Lock()
			token = t
			l.joinable[t] = c
			l.mu.Unlock()
			return nil
		}
	}
	c := newConn(connParams{
		qc: qc, striped: striped, cfg: l.cfg, client: false, peer: p.peer, hello: hello, welcome: w,
		sendCodec: codec, recvLimit: recvLimit, register: register, confirm: confirm,
		stream: p.st, reader: p.br, counter: p.counter, dec: p.dec, cleanup: func() { l.sessionEnded(p.peer, tokenRef) },
		hsSent: 1, hsRecvd: 1, hsSentBytes: int64(sent),
	})
	c.cfg.log.Info("session accepted", "version", w.Version, "legs", hello.Legs, "region", hello.Region,
		"alpn", cs.TLS.NegotiatedProtocol, "zero_rtt", p.early)
	select {
	case l.accepted <- c:
	case <-l.ctx.Done():
		c.Close(errors.New("listener closed"))
	}
	return true
}

// awaitHandshake waits until qc's handshake has completed. It returns
// ctx's error if ctx ends first, or errConnFailed if the connection fails
// (a refused client certificate: the TLS layer has logged why).
func (l *Listener) awaitHandshake(ctx context.Context, qc *quicgo.Conn) error {
	select {
	case <-qc.HandshakeComplete():
		if qc.Context().Err() != nil {
			return errConnFailed
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-qc.Context().Done():
		return errConnFailed
	}
}

var errConnFailed = errors.New("connection failed")

// join attaches a connection that opened with a join stream to the striped
// session whose join token it presents. It answers one byte 0x00, or closes
// the connection with an error code and the reason. Joins wait for the
// handshake to complete (they are never taken from 0-RTT data).
func (l *Listener) join(hctx context.Context, qc *quicgo.Conn, st *quicgo.Stream, br *bufio.Reader, stop func() bool, fired chan struct{}, log *slog.Logger) {
	refuse := func(code quicgo.ApplicationErrorCode, msg string) {
		if !stop() {
			<-fired
		}
		log.Warn("refused stripe", "reason", msg)
		qc.CloseWithError(code, msg)
	}
	if qc.ConnectionState().TLS.NegotiatedProtocol != ALPNStriped {
		refuse(quicgo.ApplicationErrorCode(transport.ErrCodeProtocol), "join on a connection without ALPN "+ALPNStriped)
		return
	}
	if err := l.awaitHandshake(hctx, qc); err != nil {
		refuse(quicgo.ApplicationErrorCode(transport.ErrCodeProtocol), "join: no completed handshake: "+err.Error())
		return
	}
	token, idx, err := readJoin(br)
	if err != nil {
		refuse(quicgo.ApplicationErrorCode(transport.ErrCodeProtocol), "join: "+err.Error())
		return
	}
	peer := pki.PeerName(qc.ConnectionState().TLS)
	l.mu.Lock()
	c := l.joinable[token]
	l.mu.Unlock()
	switch {
	case c == nil:
		refuse(quicgo.ApplicationErrorCode(transport.ErrCodeProtocol), "join: no such session (it ended?)")
		return
	case c.peer != peer:
		refuse(quicgo.ApplicationErrorCode(transport.ErrCodeIdentity), fmt.Sprintf("join: certificate is for %q, the session's peer is %q", peer, c.peer))
		return
	}
	if err := c.attachStripe(qc, idx); err != nil {
		code := quicgo.ApplicationErrorCode(transport.ErrCodeProtocol)
		if errors.Is(err, errStripeLimit) {
			code = codeStripeLimit
			l.caps.refused.WithLabelValues(CapStripesPerSession).Inc()
		}
		refuse(code, "join: "+err.Error())
		return
	}
	if !stop() {
		<-fired // timed out just now: the stripe is attached, let the dialer give up on it
		return
	}
	if _, err := st.Write([]byte{0}); err == nil {
		st.Close()
	}
	c.cfg.log.Debug("stripe joined", "stripe", idx) // the logger carries remote
}

// maxStripeIndex bounds the stripe number of a join.
const maxStripeIndex = 1 << 20

// readJoin reads a join stream's message: the kind byte 0x80, the 32-byte
// join token, the uvarint stripe number (1 to maxStripeIndex).
func readJoin(br *bufio.Reader) (token [32]byte, idx int, err error) {
	var msg [1 + 32]byte
	if _, err := io.ReadFull(br, msg[:]); err != nil {
		return token, 0, fmt.Errorf("truncated join: %w", err)
	}
	if msg[0] != streamKindJoin {
		return token, 0, fmt.Errorf("not a join stream (kind 0x%02x)", msg[0])
	}
	n, err := binary.ReadUvarint(br)
	if err != nil {
		return token, 0, fmt.Errorf("malformed join: stripe number: %w", err)
	}
	if n == 0 || n > maxStripeIndex {
		return token, 0, fmt.Errorf("malformed join: stripe number %d not in 1-%d", n, maxStripeIndex)
	}
	copy(token[:], msg[1:])
	return token, int(n), nil
}

func orUnnamed(name string) string {
	if name == "" {
		return "(unnamed)"
	}
	return name
}

// resetKey derives the QUIC stateless-reset key from the gateway's private
// key, so it is the same after a restart: a restarted receiver can then reset
// the connections its predecessor held, and senders redial at once instead
// of waiting out the idle timeout. Nil (no resets) if there is no key.
func resetKey(c *tls.Config) *quicgo.StatelessResetKey {
	if c == nil || len(c.Certificates) == 0 || c.Certificates[0].PrivateKey == nil {
		return nil
	}
	der, err := x509.MarshalPKCS8PrivateKey(c.Certificates[0].PrivateKey)
	if err != nil {
		return nil
	}
	h := sha256.New()
	h.Write([]byte("meridian quic stateless reset v1\x00"))
	h.Write(der)
	var k quicgo.StatelessResetKey
	copy(k[:], h.Sum(nil))
	return &k
}
