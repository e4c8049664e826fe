package quic

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync/atomic"

	quicgo "github.com/quic-go/quic-go"

	"github.com/meridian-gw/meridian/internal/pki"
	"github.com/meridian-gw/meridian/transport"
)

var _ transport.Dialer = (*Dialer)(nil)

// Dialer opens sessions to peer gateways. It is safe for concurrent use and
// holds no resources: each session owns its own UDP socket.
type Dialer struct {
	cfg        *sessionConfig
	qconf      *quicgo.Config
	tls        *tls.Config
	listen     func() (net.PacketConn, error)
	serverName func(addr string) string
}

// NewDialer validates opts and returns a Dialer.
func NewDialer(opts DialerOptions) (*Dialer, error) {
	tlsConf, terr := clientTLS(opts.TLS)
	cfg, qconf, err := opts.Session.build("DialerOptions", false)
	if err = errors.Join(terr, err); err != nil {
		return nil, fmt.Errorf("quic dialer: %w", err)
	}
	cfg.log = cfg.log.With("component", "transport/quic", "side", "dialer")
	listen := opts.ListenPacket
	if listen == nil {
		listen = func() (net.PacketConn, error) { return net.ListenUDP("udp", nil) }
	}
	return &Dialer{cfg: cfg, qconf: qconf, tls: tlsConf, listen: listen, serverName: opts.ServerName}, nil
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
	tr := &quicgo.Transport{Conn: pc}
	release := func() {
		tr.Close()
		pc.Close()
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
	qc, err := tr.Dial(ctx, raddr, tlsConf, d.qconf)
	if err != nil {
		release()
		return nil, explainDialError(addr, d.cfg, err)
	}
	c, err := d.handshake(ctx, qc, addr, &hello, release)
	if err != nil {
		release()
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

// handshake sends Hello on a new control stream and reads the answer.
func (d *Dialer) handshake(ctx context.Context, qc *quicgo.Conn, addr string, hello *transport.Hello, release func()) (*Conn, error) {
	peer := pki.PeerName(qc.ConnectionState().TLS)
	who := "peer " + peer + " at " + addr
	if peer == "" {
		who = "peer at " + addr
	}
	fail := func(code uint16, msg string, err error) error {
		qc.CloseWithError(quicgo.ApplicationErrorCode(code), msg)
		return err
	}
	hctx, cancel := context.WithTimeout(ctx, d.cfg.handshakeTimeout)
	defer cancel()
	st, err := qc.OpenStreamSync(hctx)
	if err != nil {
		return nil, fail(transport.ErrCodeInternal, "", fmt.Errorf("dial %s: open control stream: %w", who, err))
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
		return nil, fail(transport.ErrCodeInternal, "", fmt.Errorf("dial %s: %w", addr, err))
	}
	var f transport.Frame
	counter := &countingReader{r: st, n: new(atomic.Int64)}
	br := bufio.NewReaderSize(counter, readBufSize)
	dec := transport.NewDecoder(d.cfg.limits)
	if _, err = st.Write(buf); err == nil {
		f, err = dec.ReadFrame(br)
	}
	if !stop() {
		<-fired
		dec.Close()
		if ctx.Err() != nil {
			return nil, fail(transport.ErrCodeInternal, "dial abandoned", fmt.Errorf("dial %s: waiting for the answer to Hello: %w", who, context.Cause(ctx)))
		}
		return nil, fail(transport.ErrCodeInternal, "handshake timeout", fmt.Errorf("dial %s: no answer to Hello within %s", who, d.cfg.handshakeTimeout))
	}
	if err != nil {
		dec.Close()
		if errors.Is(err, transport.ErrMalformed) {
			return nil, fail(transport.ErrCodeProtocol, err.Error(), fmt.Errorf("dial %s: malformed answer to Hello: %w", who, err))
		}
		if qc.Context().Err() != nil {
			err = context.Cause(qc.Context())
		}
		var app *quicgo.ApplicationError
		var te *quicgo.TransportError
		if errors.As(err, &te) && te.ErrorCode.IsCryptoError() {
			// TLS 1.3: the server judges the client certificate after the
			// client's handshake has completed.
			return nil, explainDialError(addr, d.cfg, err)
		}
		if errors.As(err, &app) && app.Remote && app.ErrorCode != 0 {
			// Refused, and the Error frame was overtaken by the close.
			return nil, &RefusedError{Addr: addr, Peer: peer, Err: &transport.Error{Code: uint16(min(app.ErrorCode, 0xffff)), Message: app.ErrorMessage}}
		}
		return nil, fail(transport.ErrCodeInternal, "", fmt.Errorf("dial %s: handshake: %w", who, err))
	}
	switch f := f.(type) {
	case *transport.Error:
		dec.Close()
		qc.CloseWithError(0, "")
		return nil, &RefusedError{Addr: addr, Peer: peer, Err: f}
	case *transport.Welcome:
		if f.Version < hello.VersionMin || f.Version > hello.VersionMax {
			dec.Close()
			msg := fmt.Sprintf("peer chose protocol version %d, outside the offered %d-%d", f.Version, hello.VersionMin, hello.VersionMax)
			return nil, fail(transport.ErrCodeVersion, msg, fmt.Errorf("dial %s: %s", who, msg))
		}
		if f.Gateway != "" && f.Gateway != peer {
			dec.Close()
			msg := fmt.Sprintf("welcome names gateway %q but its certificate is for %q", f.Gateway, peer)
			return nil, fail(transport.ErrCodeIdentity, msg, fmt.Errorf("dial %s: %s", who, msg))
		}
		c := newConn(connParams{
			qc: qc, cfg: d.cfg, client: true, peer: peer, hello: hello, welcome: f,
			maxBatch: f.MaxBatchBytes, sendCodec: d.cfg.codec, recvLimit: d.cfg.limits,
			stream: st, reader: br, counter: counter, dec: dec, cleanup: release,
			hsSent: 1, hsRecvd: 1, hsSentBytes: int64(len(buf)),
		})
		c.cfg.log.Info("session open", "version", f.Version, "window", f.Window, "codec", d.cfg.codec, "lanes", d.cfg.lanes)
		return c, nil
	default:
		dec.Close()
		msg := fmt.Sprintf("expected welcome or error, got %s", transport.TypeOf(f))
		return nil, fail(transport.ErrCodeProtocol, msg, fmt.Errorf("dial %s: %s", who, msg))
	}
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
