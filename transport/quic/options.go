package quic

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/meridian-gw/meridian/transport"
)

// ALPN is the TLS application protocol of Meridian links. A peer that does
// not offer it fails the TLS handshake.
const ALPN = "meridian/1"

// Defaults, chosen for an 80 ms WAN; see the field docs.
const (
	DefaultLanes            = 4
	MaxLanes                = 64
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultMaxIdleTimeout   = 10 * time.Second
	DefaultKeepAlivePeriod  = 2 * time.Second
	DefaultPingPeriod       = 5 * time.Second
	// Receive windows start at their maximum: a gateway holds a handful of
	// connections, and growing from a small window (quic-go's auto-tuning)
	// held loopback mirroring to about two thirds of its rate in the
	// benchmark, senders blocked in stream writes with receivers idle.
	DefaultInitialStreamWindow     = 16 << 20
	DefaultMaxStreamWindow         = 16 << 20
	DefaultInitialConnectionWindow = 64 << 20
	DefaultMaxConnectionWindow     = 64 << 20
)

// DialerOptions configure a Dialer. Zero fields take the defaults.
type DialerOptions struct {
	// TLS is the client side of mutual TLS and must not be nil: this
	// gateway's certificate (Certificates or GetClientCertificate), the CA
	// that signs peer certificates (RootCAs) and, optionally, ServerName: the
	// name the peer's certificate must carry (empty: the host part of the
	// address dialled). It is cloned; ALPN and TLS 1.3 are enforced.
	// pki.ClientTLS builds one.
	TLS *tls.Config

	// ServerName, if not nil, returns the name the certificate of the peer at
	// addr must carry, for example the gateway name the topology expects
	// there (pki puts gateway names in certificates as DNS names). It
	// overrides TLS.ServerName; returning "" falls back to it.
	ServerName func(addr string) string

	// Session tunes the session: codec, lanes, logger, timeouts, windows,
	// limits. Zero fields take the defaults.
	Session

	// ListenPacket returns the UDP socket for one dial. Nil: a new socket on
	// an ephemeral port. The session owns the socket and closes it when it
	// ends. Tests and the chaos lab use it to interpose on packets.
	ListenPacket func() (net.PacketConn, error)
}

// ListenerOptions configure a Listener. Zero fields take the defaults.
type ListenerOptions struct {
	// TLS is the server side of mutual TLS and must not be nil: this
	// gateway's certificate and ClientCAs, the CA that signs peer
	// certificates. Client certificates are always required and verified
	// against ClientCAs, whatever ClientAuth says. It is cloned; ALPN and
	// TLS 1.3 are enforced. pki.ServerTLS builds one.
	TLS *tls.Config

	// Accept decides on each session after the version has been agreed and
	// the Hello's gateway name matched the peer certificate. It returns the
	// Welcome (zero Version, Window and MaxBatchBytes are filled in) or an
	// error: a *transport.Error is sent to the peer as is, any other error
	// as ErrCodeInternal. Nil: accept every session. It runs on the
	// handshake goroutine of that session, so it may block briefly.
	Accept transport.Accept

	// AcceptQueue is how many handshaken sessions wait for Listener.Accept
	// before further handshakes block. Zero: 16.
	AcceptQueue int

	// Session tunes the session as for a Dialer. Its Codec applies to
	// batches this side sends (receivers normally send none) and falls back
	// to none if the peer's Hello does not list it; a listener opens its
	// lanes only when it first sends a batch.
	Session

	// PacketConn, if not nil, is the socket to listen on; addr is then
	// ignored. The caller keeps ownership: the Listener does not close it.
	PacketConn net.PacketConn
}

// Session is the tuning both ends of a link share. Zero fields take the
// defaults.
type Session struct {
	// Codec compresses batches this side sends. The zero value, CodecNone,
	// sends them uncompressed; transport.ParseCodec("") gives the usual
	// default, zstd.
	Codec transport.Codec

	// Lanes is the number of unidirectional QUIC streams batches are spread
	// over (by leg, topic and partition). Zero: DefaultLanes; at most
	// MaxLanes.
	Lanes int

	// Logger receives session events. Nil: discard.
	Logger *slog.Logger

	// HandshakeTimeout bounds the QUIC/TLS handshake (as quic-go's
	// HandshakeIdleTimeout: no packet for this long fails it) and then the
	// Hello/Welcome exchange. Zero: DefaultHandshakeTimeout (10 s; quic-go's
	// own 5 s is short for GEO links under loss).
	HandshakeTimeout time.Duration
	// MaxIdleTimeout ends a session whose peer sent no packet for this long.
	// Zero: DefaultMaxIdleTimeout.
	MaxIdleTimeout time.Duration
	// KeepAlivePeriod is how often QUIC sends a keep-alive packet when the
	// link is otherwise quiet. Zero: DefaultKeepAlivePeriod; negative: never
	// (an idle session then times out).
	KeepAlivePeriod time.Duration
	// PingPeriod is how often a Ping frame travels the control stream
	// (application-level liveness and RTT). Zero: DefaultPingPeriod;
	// negative: never.
	PingPeriod time.Duration

	// QUIC flow-control receive windows (how much the peer may send ahead of
	// what this side has read). quic-go grows them from Initial* up to Max*.
	// Zero: the Default*Window constants (16 MiB per stream, 64 MiB per
	// connection).
	InitialStreamReceiveWindow     uint64
	MaxStreamReceiveWindow         uint64
	InitialConnectionReceiveWindow uint64
	MaxConnectionReceiveWindow     uint64

	// Limits protect this side from malformed frames. Zero fields: defaults.
	Limits transport.Limits
}

// sessionConfig is what a session needs from either options struct.
type sessionConfig struct {
	codec            transport.Codec
	lanes            int
	log              *slog.Logger
	handshakeTimeout time.Duration
	idleTimeout      time.Duration
	pingPeriod       time.Duration // 0: no pings
	limits           transport.Limits
}

func orDefault[T int | uint64 | time.Duration](v, d T) T {
	if v == 0 {
		return d
	}
	return v
}

// build validates the options and derives the session and QUIC configs.
// Every problem is reported at once.
func (c *Session) build(what string, server bool) (*sessionConfig, *quicgo.Config, error) {
	var errs []error
	switch c.Codec {
	case transport.CodecNone, transport.CodecZstd, transport.CodecS2:
	default:
		errs = append(errs, fmt.Errorf("%s.Codec: unknown codec %s", what, c.Codec))
	}
	if c.Lanes < 0 || c.Lanes > MaxLanes {
		errs = append(errs, fmt.Errorf("%s.Lanes (%d) must be between 1 and %d", what, c.Lanes, MaxLanes))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"HandshakeTimeout", c.HandshakeTimeout}, {"MaxIdleTimeout", c.MaxIdleTimeout}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s.%s (%s) must not be negative", what, d.name, d.v))
		}
	}
	sc := &sessionConfig{
		codec:            c.Codec,
		lanes:            orDefault(c.Lanes, DefaultLanes),
		log:              c.Logger,
		handshakeTimeout: orDefault(c.HandshakeTimeout, DefaultHandshakeTimeout),
		idleTimeout:      orDefault(c.MaxIdleTimeout, DefaultMaxIdleTimeout),
		pingPeriod:       max(orDefault(c.PingPeriod, DefaultPingPeriod), 0),
		limits:           c.Limits.WithDefaults(),
	}
	if sc.log == nil {
		sc.log = slog.New(slog.DiscardHandler)
	}
	keepAlive := max(orDefault(c.KeepAlivePeriod, DefaultKeepAlivePeriod), 0)
	if keepAlive >= sc.idleTimeout {
		errs = append(errs, fmt.Errorf("%s.KeepAlivePeriod (%s) must be shorter than MaxIdleTimeout (%s)", what, keepAlive, sc.idleTimeout))
	}
	qc := &quicgo.Config{
		HandshakeIdleTimeout:           sc.handshakeTimeout,
		MaxIdleTimeout:                 sc.idleTimeout,
		KeepAlivePeriod:                keepAlive,
		InitialStreamReceiveWindow:     orDefault(c.InitialStreamReceiveWindow, DefaultInitialStreamWindow),
		MaxStreamReceiveWindow:         orDefault(c.MaxStreamReceiveWindow, DefaultMaxStreamWindow),
		InitialConnectionReceiveWindow: orDefault(c.InitialConnectionReceiveWindow, DefaultInitialConnectionWindow),
		MaxConnectionReceiveWindow:     orDefault(c.MaxConnectionReceiveWindow, DefaultMaxConnectionWindow),
		// The dialer opens the one bidirectional (control) stream; either
		// side may open up to MaxLanes unidirectional lanes.
		MaxIncomingStreams:    -1,
		MaxIncomingUniStreams: MaxLanes,
	}
	if server {
		qc.MaxIncomingStreams = 1
	}
	if qc.InitialStreamReceiveWindow > qc.MaxStreamReceiveWindow {
		errs = append(errs, fmt.Errorf("%s.InitialStreamReceiveWindow (%d) exceeds MaxStreamReceiveWindow (%d)", what, qc.InitialStreamReceiveWindow, qc.MaxStreamReceiveWindow))
	}
	if qc.InitialConnectionReceiveWindow > qc.MaxConnectionReceiveWindow {
		errs = append(errs, fmt.Errorf("%s.InitialConnectionReceiveWindow (%d) exceeds MaxConnectionReceiveWindow (%d)", what, qc.InitialConnectionReceiveWindow, qc.MaxConnectionReceiveWindow))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return sc, qc, nil
}
