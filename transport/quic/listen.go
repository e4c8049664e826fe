package quic

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"

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
	ln     *quicgo.Listener
	pc     net.PacketConn
	ownPC  bool

	accepted chan *Conn
	ctx      context.Context // ends when Close starts
	cancel   context.CancelFunc
	wg       sync.WaitGroup // accept loop and handshakes
	once     sync.Once

	mu       sync.Mutex
	sessions int  // sessions alive on the socket
	closed   bool // Close has run: release the socket with the last session
	released bool
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
	tlsConf, terr := serverTLS(opts.TLS, log)
	if err = errors.Join(terr, err); err != nil {
		return nil, fmt.Errorf("quic listener: %w", err)
	}
	pc, own := opts.PacketConn, false
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
	ln, err := tr.Listen(tlsConf, qconf)
	if err != nil {
		tr.Close()
		if own {
			pc.Close()
		}
		return nil, fmt.Errorf("quic listener %s: %w", pc.LocalAddr(), err)
	}
	l := &Listener{
		cfg: cfg, log: log.With("addr", pc.LocalAddr().String()), accept: opts.Accept,
		name: ownName(opts.TLS), tr: tr, ln: ln, pc: pc, ownPC: own,
		accepted: make(chan *Conn, max(opts.AcceptQueue, 0)),
	}
	if opts.AcceptQueue == 0 {
		l.accepted = make(chan *Conn, 16)
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.wg.Add(1)
	go l.loop()
	l.log.Info("listening", "alpn", ALPN, "versions", fmt.Sprintf("%d-%d", transport.VersionMin, transport.VersionMax))
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

func (l *Listener) sessionEnded() {
	l.mu.Lock()
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
		l.wg.Add(1)
		go l.handshake(qc)
	}
}

// handshake reads the Hello of a new connection and answers it.
func (l *Listener) handshake(qc *quicgo.Conn) {
	defer l.wg.Done()
	peer := pki.PeerName(qc.ConnectionState().TLS)
	log := l.log.With("remote", qc.RemoteAddr().String(), "peer", peer)
	hctx, cancel := context.WithTimeout(l.ctx, l.cfg.handshakeTimeout)
	defer cancel()

	st, err := qc.AcceptStream(hctx)
	if err != nil {
		log.Warn("handshake failed: no control stream", "err", err)
		qc.CloseWithError(quicgo.ApplicationErrorCode(transport.ErrCodeProtocol), "no control stream")
		return
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(hctx, func() {
		st.CancelRead(0)
		st.CancelWrite(0)
		close(fired)
	})
	counter := &countingReader{r: st, n: new(atomic.Int64)}
	br := bufio.NewReaderSize(counter, readBufSize)
	dec := transport.NewDecoder(l.cfg.limits)
	f, err := dec.ReadFrame(br)
	ok := false
	defer func() {
		if !ok {
			dec.Close()
		}
	}()

	// refuse answers with an Error frame and closes the connection; the code
	// and message also travel in CONNECTION_CLOSE in case the frame is lost.
	refuse := func(e *transport.Error) {
		log.Warn("refused session", "code", e.CodeName(), "reason", e.Message)
		if buf, err := transport.AppendFrame(nil, e); err == nil {
			st.Write(buf)
		}
		qc.CloseWithError(quicgo.ApplicationErrorCode(e.Code), e.Message)
	}
	if !stop() {
		<-fired
		if l.ctx.Err() != nil {
			qc.CloseWithError(0, "listener closed")
			return
		}
		log.Warn("handshake failed: no hello in time", "timeout", l.cfg.handshakeTimeout)
		qc.CloseWithError(quicgo.ApplicationErrorCode(transport.ErrCodeProtocol), "no hello")
		return
	}
	if err != nil {
		if errors.Is(err, transport.ErrMalformed) {
			refuse(&transport.Error{Code: transport.ErrCodeProtocol, Message: "malformed hello: " + err.Error()})
			return
		}
		log.Warn("handshake failed: no hello", "err", err)
		qc.CloseWithError(quicgo.ApplicationErrorCode(transport.ErrCodeProtocol), "no hello")
		return
	}
	hello, isHello := f.(*transport.Hello)
	if !isHello {
		refuse(&transport.Error{Code: transport.ErrCodeProtocol, Message: fmt.Sprintf("expected hello, got %s", transport.TypeOf(f))})
		return
	}
	version, common := transport.NegotiateVersion(hello.VersionMin, hello.VersionMax)
	if !common {
		refuse(&transport.Error{Code: transport.ErrCodeVersion, Message: fmt.Sprintf(
			"no common protocol version (receiver %s speaks %d-%d, sender %s speaks %d-%d)",
			orUnnamed(l.name), transport.VersionMin, transport.VersionMax, orUnnamed(hello.Gateway), hello.VersionMin, hello.VersionMax)})
		return
	}
	if hello.Gateway != peer {
		refuse(&transport.Error{Code: transport.ErrCodeIdentity, Message: fmt.Sprintf(
			"hello names gateway %q but its certificate is for %q", hello.Gateway, peer)})
		return
	}
	w := &transport.Welcome{}
	if l.accept != nil {
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
			refuse(te)
			return
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
	buf, err := transport.AppendFrame(nil, w)
	if err == nil {
		_, err = st.Write(buf)
	}
	if err != nil {
		log.Warn("handshake failed: write welcome", "err", err)
		qc.CloseWithError(quicgo.ApplicationErrorCode(transport.ErrCodeInternal), "")
		return
	}

	codec := l.cfg.codec
	if len(hello.Codecs) > 0 && !slices.Contains(hello.Codecs, codec) {
		codec = transport.CodecNone
	}
	recvLimit := l.cfg.limits
	recvLimit.MaxBatchBytes = int(w.MaxBatchBytes)

	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		qc.CloseWithError(0, "listener closed")
		return
	}
	l.sessions++
	l.mu.Unlock()
	ok = true
	c := newConn(connParams{
		qc: qc, cfg: l.cfg, client: false, peer: peer, hello: hello, welcome: w,
		sendCodec: codec, recvLimit: recvLimit,
		stream: st, reader: br, counter: counter, dec: dec, cleanup: l.sessionEnded,
		hsSent: 1, hsRecvd: 1, hsSentBytes: int64(len(buf)),
	})
	c.cfg.log.Info("session accepted", "version", version, "legs", hello.Legs, "region", hello.Region)
	select {
	case l.accepted <- c:
	case <-l.ctx.Done():
		c.Close(errors.New("listener closed"))
	}
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
