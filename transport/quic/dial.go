package quic

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync/atomic"

	quicgo "github.com/quic-go/quic-go"

	"github.com/meridian-gw/meridian/internal/pki"
	"github.com/meridian-gw/meridian/transport"
)

var _ transport.Dialer = (*Dialer)(nil)

// Dialer opens sessions to peer gateways. It is safe for concurrent use and
// holds no resources but a TLS session cache (for resumption and 0-RTT):
// each session owns its own UDP socket, which all its stripes share.
type Dialer struct {
	cfg        *sessionConfig
	tickets    copyingCache
	path       pathWatch
	qconf      *quicgo.Config
	tls        *tls.Config
	listen     func() (net.PacketConn, error)
	serverName func(addr string) string
}

// NewDialer validates opts and returns a Dialer.
func NewDialer(opts DialerOptions) (*Dialer, error) {
	cfg, qconf, err := opts.Session.build("DialerOptions", false)
	protos := []string{ALPN}
	if cfg != nil && cfg.striping() {
		protos = []string{ALPNStriped, ALPN}
	}
	tlsConf, terr := clientTLS(opts.TLS, protos)
	if err = errors.Join(terr, err); err != nil {
		return nil, fmt.Errorf("quic dialer: %w", err)
	}
	if tlsConf.ClientSessionCache == nil {
		// Tickets let a redial resume (and send its Hello as 0-RTT data)
		// and make stripe handshakes smaller.
		tlsConf.ClientSessionCache = tls.NewLRUClientSessionCache(64)
	}
	tickets := copyingCache{tlsConf.ClientSessionCache}
	tlsConf.ClientSessionCache = tickets
	cfg.log = cfg.log.With("component", "transport/quic", "side", "dialer")
	listen := opts.ListenPacket
	if listen == nil {
		listen = func() (net.PacketConn, error) { return net.ListenUDP("udp", nil) }
	}
	return &Dialer{cfg: cfg, tickets: tickets, path: newPathWatch(opts), qconf: qconf, tls: tlsConf, listen: listen, serverName: opts.ServerName}, nil
}

// copyingCache hands out a copy of each cached session: quic-go writes to
// the session state it resumes from, so connections that resume from one
// ticket at once (stripes joining) must not share it.
type copyingCache struct{ tls.ClientSessionCache }

func (c copyingCache) Get(key string) (*tls.ClientSessionState, bool) {
	cs, ok := c.ClientSessionCache.Get(key)
	if !ok || cs == nil {
		return nil, false
	}
	ticket, st, err := cs.ResumptionState()
	if err != nil || st == nil {
		return nil, false
	}
	b, err := st.Bytes()
	if err != nil {
		return nil, false
	}
	if st, err = tls.ParseSessionState(b); err != nil {
		return nil, false
	}
	if cs, err = tls.NewResumptionState(ticket, st); err != nil {
		return nil, false
	}
	return cs, true
}

// Put stores a ticket and ignores deletions: crypto/tls drops the ticket
// of every resumption attempt that fails, and a dial that only went
// unanswered (a blackout, a hedged attempt abandoned) says nothing against
// it; honouring those would cost every later redial of an outage its 0-RTT.
// The dialer forgets a ticket itself when a handshake fails for another
// reason (tlsFailed). Expired tickets and certificates are refused by
// crypto/tls when loaded, cached or not.
func (c copyingCache) Put(key string, cs *tls.ClientSessionState) {
	if cs != nil {
		c.ClientSessionCache.Put(key, cs)
	}
}

// forget drops the ticket cached under key.
func (c copyingCache) forget(key string) { c.ClientSessionCache.Put(key, nil) }

// tlsFailed reports whether a dial failed in TLS (an alert, say for a
// corrupted resumption PSK): its ticket is not to be offered again.
func tlsFailed(err error) bool {
	var te *quicgo.TransportError
	return errors.As(err, &te) && te.ErrorCode.IsCryptoError()
}

// allCodecs is what this build decodes, best first.
var allCodecs = []transport.Codec{transport.CodecZstd, transport.CodecS2, transport.CodecNone}

// Dial opens a session to the gateway at addr (host:port, UDP): QUIC and
// mutual TLS, then Hello and the peer's Welcome. A Hello without versions
// offers [transport.VersionMin, transport.VersionMax]; without codecs, every
// codec. h is not retained. The result is a *Conn.
//
// Errors name the address and, once TLS has identified it, the peer; a
// refusal by the peer wraps the *transport.Error it sent.
func (d *Dialer) Dial(ctx context.Context, addr string, h *transport.Hello) (transport.Conn, error) {
	c, err := d.dial(ctx, addr, h)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (d *Dialer) dial(ctx context.Context, addr string, h *transport.Hello) (*Conn, error) {
	if h == nil {
		return nil, fmt.Errorf("dial %s: nil Hello", addr)
	}
	hello := *h
	hello.Legs = slices.Clone(h.Legs)
	hello.Codecs = slices.Clone(h.Codecs)
	hello.Receive = slices.Clone(h.Receive)
	if hello.VersionMin == 0 && hello.VersionMax == 0 {
		hello.VersionMin, hello.VersionMax = transport.VersionMin, transport.VersionMax
	}
	if hello.VersionMin > hello.VersionMax {
		return nil, fmt.Errorf("dial %s: Hello offers versions %d-%d (min above max)", addr, hello.VersionMin, hello.VersionMax)
	}
	if len(hello.Codecs) == 0 {
		hello.Codecs = slices.Clone(allCodecs)
	}

	host, raddr, err := resolve(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	pc, err := d.listen()
	if err != nil {
		return nil, fmt.Errorf("dial %s: open UDP socket: %w", addr, err)
	}
	tlsConf := d.tls.Clone()
	if d.serverName != nil {
		if n := d.serverName(addr); n != "" {
			tlsConf.ServerName = n
		}
	}
	if tlsConf.ServerName == "" {
		tlsConf.ServerName = host
	}
	ds := &dialState{addr: addr, raddr: raddr, qconf: d.qconf, tr: &quicgo.Transport{Conn: pc}, pc: pc, path: d.path}
	if d.path.every > 0 {
		ds.source, _ = d.path.source(raddr)
	}
	local := pc.LocalAddr()
	ds.local.Store(&local)
	ds.tls = tlsConf.Clone()
	ds.tls.NextProtos = []string{ALPNStriped}
	var qc *quicgo.Conn
	if d.cfg.zeroRTT {
		// With a ticket from an earlier session, the Hello goes out in the
		// first flight as 0-RTT data.
		qc, err = ds.tr.DialEarly(ctx, raddr, tlsConf, d.qconf)
	} else {
		qc, err = ds.tr.Dial(ctx, raddr, tlsConf, d.qconf)
	}
	if err != nil {
		ds.release()
		if tlsFailed(err) {
			d.tickets.forget(tlsConf.ServerName)
		}
		return nil, explainDialError(addr, d.cfg, err)
	}
	c, err := d.handshake(ctx, qc, addr, &hello, ds)
	if err != nil {
		ds.release()
		if tlsFailed(err) {
			d.tickets.forget(tlsConf.ServerName)
		}
		return nil, err
	}
	return c, nil
}

// resolve splits addr and resolves its host, honouring ctx.
func resolve(ctx context.Context, addr string) (host string, ua *net.UDPAddr, err error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", nil, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		pp, lerr := net.DefaultResolver.LookupPort(ctx, "udp", port)
		if lerr != nil {
			return "", nil, fmt.Errorf("port %q: %w", port, lerr)
		}
		p = uint64(pp)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		ips, lerr := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if lerr != nil {
			return "", nil, fmt.Errorf("resolve %s: %w", host, lerr)
		}
		if len(ips) == 0 {
			return "", nil, fmt.Errorf("resolve %s: no addresses", host)
		}
		ip = ips[0]
	}
	return host, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip.Unmap(), uint16(p))), nil
}

// handshake sends Hello on a new control stream and reads the answer. On
// a 0-RTT connection the Hello travels as 0-RTT data; if the peer rejects
// 0-RTT (it restarted, or its limits changed) the Hello is sent again once
// the handshake has completed.
func (d *Dialer) handshake(ctx context.Context, qc *quicgo.Conn, addr string, hello *transport.Hello, ds *dialState) (*Conn, error) {
	hctx, cancel := context.WithTimeout(ctx, d.cfg.handshakeTimeout)
	defer cancel()
	ex, err := d.exchange(ctx, hctx, qc, addr, hello)
	if errors.Is(err, quicgo.Err0RTTRejected) {
		d.cfg.log.Debug("0-RTT rejected by the peer; sending the hello again", "addr", addr)
		if qc, err = qc.NextConnection(hctx); err != nil {
			return nil, d.handshakeErr(ctx, hctx, qc, addr, err)
		}
		ex, err = d.exchange(ctx, hctx, qc, addr, hello)
	}
	if err != nil {
		return nil, err
	}
	// Trust the answer only once the handshake has completed (it has, in
	// practice: 1-RTT data cannot be read earlier), then check who sent it.
	select {
	case <-qc.HandshakeComplete():
	case <-hctx.Done():
		ex.dec.Close()
		return nil, d.handshakeErr(ctx, hctx, qc, addr, hctx.Err())
	case <-qc.Context().Done():
		ex.dec.Close()
		return nil, d.handshakeErr(ctx, hctx, qc, addr, context.Cause(qc.Context()))
	}
	cs := qc.ConnectionState()
	peer := pki.PeerName(cs.TLS)
	who := describePeer(peer, addr)
	fail := func(code uint16, msg string, err error) error {
		ex.dec.Close()
		qc.CloseWithError(quicgo.ApplicationErrorCode(code), msg)
		return err
	}
	switch f := ex.answer.(type) {
	case *transport.Error:
		ex.dec.Close()
		qc.CloseWithError(0, "")
		return nil, &RefusedError{Addr: addr, Peer: peer, Err: f}
	case *transport.Welcome:
		if f.Version < hello.VersionMin || f.Version > hello.VersionMax {
			msg := fmt.Sprintf("peer chose protocol version %d, outside the offered %d-%d", f.Version, hello.VersionMin, hello.VersionMax)
			return nil, fail(transport.ErrCodeVersion, msg, fmt.Errorf("dial %s: %s", who, msg))
		}
		// Everything after the Welcome follows the chosen version: the
		// control stream's decoder refuses frames of later versions.
		if err := ex.dec.SetVersion(f.Version); err != nil {
			msg := fmt.Sprintf("peer chose protocol version %d, which this build does not speak (%d-%d)", f.Version, transport.VersionMin, transport.VersionMax)
			return nil, fail(transport.ErrCodeVersion, msg, fmt.Errorf("dial %s: %s", who, msg))
		}
		if f.Gateway != "" && f.Gateway != peer {
			msg := fmt.Sprintf("welcome names gateway %q but its certificate is for %q", f.Gateway, peer)
			return nil, fail(transport.ErrCodeIdentity, msg, fmt.Errorf("dial %s: %s", who, msg))
		}
		striped := cs.TLS.NegotiatedProtocol == ALPNStriped
		var token [32]byte
		if striped {
			if token, err = joinToken(cs.TLS); err != nil {
				return nil, fail(transport.ErrCodeInternal, "", fmt.Errorf("dial %s: %w", who, err))
			}
		}
		c := newConn(connParams{
			qc: qc, striped: striped, token: token, dial: ds, cfg: d.cfg, client: true, peer: peer, hello: hello, welcome: f,
			maxBatch: f.MaxBatchBytes, sendCodec: d.cfg.codec, recvLimit: d.cfg.limits,
			stream: ex.st, reader: ex.br, counter: ex.counter, dec: ex.dec, cleanup: ds.release,
			hsSent: 1, hsRecvd: 1, hsSentBytes: int64(ex.sent),
		})
		if d.cfg.striping() && !striped {
			c.cfg.log.Info("peer does not speak the striped binding: one stripe", "alpn", cs.TLS.NegotiatedProtocol)
		}
		c.cfg.log.Info("session open", "version", f.Version, "window", f.Window, "codec", d.cfg.codec, "lanes", d.cfg.lanes,
			"alpn", cs.TLS.NegotiatedProtocol, "zero_rtt", cs.Used0RTT)
		return c, nil
	default:
		msg := fmt.Sprintf("expected welcome or error, got %s", transport.TypeOf(f))
		return nil, fail(transport.ErrCodeProtocol, msg, fmt.Errorf("dial %s: %s", who, msg))
	}
}

// exchanged is a control stream after Hello, and the peer's answer.
type exchanged struct {
	st      *quicgo.Stream
	br      *bufio.Reader
	counter *countingReader
	dec     *transport.Decoder
	answer  transport.Frame
	sent    int
}

// exchange opens the control stream, writes hello and reads one frame. It
// returns an error wrapping quicgo.Err0RTTRejected if the peer rejected the
// 0-RTT data it went out in.
func (d *Dialer) exchange(ctx, hctx context.Context, qc *quicgo.Conn, addr string, hello *transport.Hello) (*exchanged, error) {
	st, err := qc.OpenStreamSync(hctx)
	if err != nil {
		if errors.Is(err, quicgo.Err0RTTRejected) {
			return nil, err
		}
		return nil, d.handshakeErr(ctx, hctx, qc, addr, fmt.Errorf("open control stream: %w", err))
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(hctx, func() {
		st.CancelRead(0)
		st.CancelWrite(0)
		close(fired)
	})
	buf, err := transport.AppendFrame(nil, hello)
	if err != nil {
		stop()
		qc.CloseWithError(quicgo.ApplicationErrorCode(transport.ErrCodeInternal), "")
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	ex := &exchanged{st: st, counter: &countingReader{r: st, n: new(atomic.Int64)}, sent: len(buf)}
	ex.br = bufio.NewReaderSize(ex.counter, readBufSize)
	ex.dec = transport.NewDecoder(d.cfg.limits)
	if _, err = st.Write(buf); err == nil {
		ex.answer, err = ex.dec.ReadHandshake(ex.br)
	}
	if !stop() {
		<-fired
		ex.dec.Close()
		return nil, d.handshakeErr(ctx, hctx, qc, addr, hctx.Err())
	}
	if err != nil {
		ex.dec.Close()
		if errors.Is(err, quicgo.Err0RTTRejected) {
			return nil, err
		}
		if errors.Is(err, transport.ErrMalformed) {
			qc.CloseWithError(quicgo.ApplicationErrorCode(transport.ErrCodeProtocol), err.Error())
			return nil, fmt.Errorf("dial %s: malformed answer to Hello: %w", whoOf(qc, addr), err)
		}
		return nil, d.handshakeErr(ctx, hctx, qc, addr, err)
	}
	return ex, nil
}

// handshakeErr explains a failed Hello/Welcome exchange and closes qc.
func (d *Dialer) handshakeErr(ctx, hctx context.Context, qc *quicgo.Conn, addr string, err error) error {
	who := whoOf(qc, addr)
	fail := func(code uint16, msg string, err error) error {
		qc.CloseWithError(quicgo.ApplicationErrorCode(code), msg)
		return err
	}
	if hctx.Err() != nil && qc.Context().Err() == nil {
		if ctx.Err() != nil {
			return fail(transport.ErrCodeInternal, "dial abandoned", fmt.Errorf("dial %s: waiting for the answer to Hello: %w", who, context.Cause(ctx)))
		}
		return fail(transport.ErrCodeInternal, "handshake timeout", fmt.Errorf("dial %s: no answer to Hello within %s: %w", who, d.cfg.handshakeTimeout, os.ErrDeadlineExceeded))
	}
	if qc.Context().Err() != nil {
		err = context.Cause(qc.Context())
	}
	var app *quicgo.ApplicationError
	var te *quicgo.TransportError
	var hto *quicgo.HandshakeTimeoutError
	var ito *quicgo.IdleTimeoutError
	switch {
	case errors.As(err, &te) && te.ErrorCode.IsCryptoError(), errors.As(err, &hto), errors.As(err, &ito):
		// TLS 1.3: the server judges the client certificate after the
		// client's handshake has completed.
		return explainDialError(addr, d.cfg, err)
	case errors.As(err, &app) && app.Remote && app.ErrorCode != 0:
		// Refused, and the Error frame was overtaken by the close.
		return &RefusedError{Addr: addr, Peer: peerOf(qc), Err: &transport.Error{Code: uint16(min(app.ErrorCode, 0xffff)), Message: app.ErrorMessage}}
	}
	return fail(transport.ErrCodeInternal, "", fmt.Errorf("dial %s: handshake: %w", who, err))
}

// peerOf is the peer's certificate name once the handshake has completed,
// else "".
func peerOf(qc *quicgo.Conn) string {
	select {
	case <-qc.HandshakeComplete():
		return pki.PeerName(qc.ConnectionState().TLS)
	default:
		return ""
	}
}

func whoOf(qc *quicgo.Conn, addr string) string { return describePeer(peerOf(qc), addr) }

func describePeer(peer, addr string) string {
	if peer == "" {
		return "peer at " + addr
	}
	return "peer " + peer + " at " + addr
}

// RefusedError is returned by Dial when the peer refused the session with an
// Error frame (or its CONNECTION_CLOSE). errors.As finds the
// *transport.Error.
type RefusedError struct {
	Addr string // address dialled
	Peer string // the peer's gateway name from its certificate
	Err  *transport.Error
}

func (e *RefusedError) Error() string {
	who := "peer " + e.Peer
	if e.Peer == "" {
		who = "peer"
	}
	return fmt.Sprintf("dial %s: %s refused the session (%s): %s", e.Addr, who, e.Err.CodeName(), e.Err.Message)
}

func (e *RefusedError) Unwrap() error { return e.Err }

// explainDialError turns a failed QUIC/TLS handshake into an error that
// names the address and says what to check.
func explainDialError(addr string, cfg *sessionConfig, err error) error {
	var (
		te  *quicgo.TransportError
		hto *quicgo.HandshakeTimeoutError
		ito *quicgo.IdleTimeoutError
	)
	switch {
	case errors.As(err, &te) && te.ErrorCode.IsCryptoError():
		alert := tls.AlertError(te.ErrorCode - 0x100)
		switch {
		case te.Remote && alert == tls.AlertError(120): // no_application_protocol
			return fmt.Errorf("dial %s: TLS handshake: the peer does not speak %s (is it a Meridian gateway?): %w", addr, ALPN, err)
		case te.Remote:
			return fmt.Errorf("dial %s: TLS handshake: the peer refused this gateway's certificate (%s): check that it is signed by the CA the peer trusts and has not expired; the peer's log says why: %w", addr, alert, err)
		default:
			return fmt.Errorf("dial %s: TLS handshake: the peer's certificate was not accepted: %w", addr, err)
		}
	case errors.As(err, &hto), errors.As(err, &ito):
		return fmt.Errorf("dial %s: no QUIC handshake within %s: is a gateway listening on UDP %s, and is the path open? %w", addr, cfg.handshakeTimeout, addr, err)
	}
	return fmt.Errorf("dial %s: %w", addr, err)
}
