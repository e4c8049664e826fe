package quic

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	quicgo "github.com/quic-go/quic-go"

	"github.com/meridian-gw/meridian/transport"
)

// ALPN is the TLS application protocol of Meridian links: one QUIC
// connection per session. A peer that offers neither it nor ALPNStriped
// fails the TLS handshake.
const ALPN = "meridian/1"

// ALPNStriped is the same frame protocol (versions negotiated as on ALPN)
// over the striped QUIC binding: batches carry a per-partition sequence number on their lanes and
// further QUIC connections ("stripes") may join the session; see
// ../PROTOCOL.md section 1.1. A dialer offers it (before ALPN) only when its
// Session asks for more than one stripe; a listener offers it unless its
// Session caps stripes at 1.
const ALPNStriped = "meridian/1+stripes"

// Defaults, chosen for an 80 ms WAN; see the field docs.
const (
	DefaultLanes = 4
	MaxLanes     = 64
	// MaxStripesLimit caps Stripes and MaxStripes: QUIC connections per
	// session. A listener accepts up to this many per session unless its
	// Session says fewer.
	MaxStripesLimit         = 128
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
	// ends; all its stripes share it (until (*Conn).Migrate moves them to
	// another). Tests and the chaos lab use it to interpose on packets.
	ListenPacket func() (net.PacketConn, error)

	// LocalAddrFor returns the local address this host would send from to
	// reach raddr now (its route's preferred source). A dialer's session
	// asks every PathCheck; when the answer changes (a vessel moving from
	// satellite to a harbour network, a vehicle changing mobile cell) it
	// migrates to a socket on the new address ((*Conn).Migrate) instead of
	// losing the session. Nil: the kernel's answer for a connected UDP
	// socket, unless ListenPacket is set (its sockets may live elsewhere,
	// in a network namespace say), when path checks are off unless
	// ListenPacketAt is set too.
	LocalAddrFor func(raddr *net.UDPAddr) (netip.Addr, error)

	// ListenPacketAt returns a UDP socket on local address ip, for a
	// migration. Nil: a new socket on ip and an ephemeral port.
	ListenPacketAt func(ip netip.Addr) (net.PacketConn, error)

	// PathCheck is how often a session checks LocalAddrFor. Zero: 1 s;
	// negative: never.
	PathCheck time.Duration
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
	// ignored. The caller keeps ownership: the Listener does not close it,
	// unless ClosePacketConn is set.
	PacketConn net.PacketConn

	// ClosePacketConn hands PacketConn to the Listener, which closes it
	// when it releases its socket: after Close, once the last session has
	// ended (sessions drain and say goodbye over it).
	ClosePacketConn bool

	// Caps on what peers may hold open; a connection over one is closed
	// with transport.ErrCodeLimit and counted in
	// meridian_link_refused_total{cap}. MaxHandshakes caps connections
	// in their handshake (TLS, Hello or join) at once, MaxHandshakesPerAddr
	// those from one IP address, and MaxSessionsPerPeer the sessions of
	// one peer gateway (its certificate name). Zero: the defaults
	// (DefaultMaxHandshakes, DefaultMaxHandshakesPerAddr,
	// DefaultMaxSessionsPerPeer). Stripes per session are capped by
	// Session.Stripes/MaxStripes, at most MaxStripesLimit.
	MaxHandshakes, MaxHandshakesPerAddr, MaxSessionsPerPeer int

	// Registerer, if not nil, registers the listener's refusal counter
	// (meridian_link_refused_total{cap}); one already registered there
	// by an earlier listener is reused.
	Registerer prometheus.Registerer
}

// Defaults of ListenerOptions' caps.
const (
	DefaultMaxHandshakes        = 1024
	DefaultMaxHandshakesPerAddr = 64
	DefaultMaxSessionsPerPeer   = 32
)

// The cap label values of meridian_link_refused_total.
const (
	CapHandshakes        = "handshakes"
	CapHandshakesPerAddr = "handshakes_per_addr"
	CapSessionsPerPeer   = "sessions_per_peer"
	CapStripesPerSession = "stripes_per_session"
)

// Session is the tuning both ends of a link share. Zero fields take the
// defaults.
type Session struct {
	// Codec compresses batches this side sends. The zero value, CodecNone,
	// sends them uncompressed; transport.ParseCodec("") gives the usual
	// default, zstd.
	Codec transport.Codec
	// CodecLevel is the zstd level of batches this side sends (ignored by
	// other codecs). Zero: transport.LevelFastest. transport.ChooseCompression
	// picks codec and level from the link rate and the CPU headroom (never
	// from RTT alone): level better pays on links of 100 Mbit/s or less.
	CodecLevel transport.Level
	// Dictionaries makes this side train a zstd dictionary per (leg,
	// topic) from the first 256 KiB of record values it sends, share it with
	// the peer (a Dict frame on the control stream) and, once the peer
	// acknowledges it, compress that topic's batches of up to 256 KiB with
	// it; see ../PROTOCOL.md section 4.14. Only with Codec zstd, and only
	// on sessions that agreed on version 2 (transport.VersionDicts) or
	// later: with a peer that speaks version 1 only, none are sent. A peer
	// receives them whatever its own setting. False: no dictionaries are
	// sent.
	Dictionaries bool

	// Lanes is the number of unidirectional QUIC streams batches are spread
	// over (by leg, topic and partition) on each stripe. Zero: DefaultLanes;
	// at most MaxLanes.
	Lanes int

	// Stripes is how many QUIC connections a dialer runs the session over
	// from the start (with MaxStripes: the minimum it keeps). quic-go's
	// congestion control (NewReno, per connection) holds one connection to
	// about (MSS/RTT)*1.22/sqrt(loss), 0.2-0.3 Mbit/s on a 600 ms link with 1%
	// loss; stripes add up. Zero: 1, which keeps the single-connection
	// binding (ALPN meridian/1) that every peer speaks. A peer that does not
	// speak the striped binding gets one stripe whatever this says. On a
	// listener, Stripes or MaxStripes (the larger) caps the stripes a
	// session may have; zero: MaxStripesLimit; 1: no striping.
	Stripes int
	// MaxStripes turns on adaptive striping (dialer): the session starts
	// with Stripes (at least 1) and adds stripes while the senders are held
	// back by the stripes' congestion windows, the smoothed RTT stays below
	// 1.25 times the minimum RTT (no queue building) and the rate keeps
	// rising, up to MaxStripes; see the package doc, "Striping". Zero:
	// Stripes, fixed. At most MaxStripesLimit. SessionFor derives it from a
	// link profile.
	//
	// Striped sessions rely on the credit window (Welcome.Window) to bound
	// the receiver's reorder buffer: a sender must honour it, as the mirror
	// does.
	MaxStripes int
	// Placement says how a striped dialer spreads batches over stripes.
	// Zero: PlaceAny.
	Placement Placement

	// Disable0RTT turns 0-RTT resumption off. Otherwise a dialer that
	// redials a listener it has talked to (same Dialer, session ticket in
	// its TLS ClientSessionCache) sends its Hello in the first flight, and
	// a listener answers it before the handshake has completed; see the
	// package doc, "0-RTT".
	Disable0RTT bool

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

// Placement is how a striped session places batches on stripes.
type Placement uint8

const (
	// PlaceAny sends each batch on the first stripe with a free writer
	// (design b): a few hot partitions use every stripe. The receiver
	// restores each partition's order from its sequence numbers in a
	// reorder buffer bounded by the credit window. This is the default:
	// see the package doc for the measurements.
	PlaceAny Placement = iota
	// PlacePinned pins each partition to one stripe by a consistent (jump)
	// hash of (leg, topic, partition) (design a). A partition moves only
	// when stripes are added (about 1/n of them then move; the sequence
	// numbers keep their order across the move). A partition never uses
	// more than one stripe's share of the link.
	PlacePinned
)

// String names the placement; unknown values print as "placement(N)".
func (p Placement) String() string {
	switch p {
	case PlaceAny:
		return "any"
	case PlacePinned:
		return "pinned"
	}
	return fmt.Sprintf("placement(%d)", uint8(p))
}

// sessionConfig is what a session needs from either options struct.
type sessionConfig struct {
	codec            transport.Codec
	level            transport.Level
	dicts            bool
	lanes            int
	log              *slog.Logger
	handshakeTimeout time.Duration
	idleTimeout      time.Duration
	keepAlive        time.Duration
	pingPeriod       time.Duration // 0: no pings
	limits           transport.Limits
	// stripes is the initial (and minimum) stripe count of a dialer;
	// maxStripes its adaptive ceiling (== stripes: fixed). On a listener,
	// maxStripes caps the stripes of a session.
	stripes, maxStripes int
	placement           Placement
	zeroRTT             bool
}

// striping reports whether a dialer wants more than one stripe, or a
// listener accepts them.
func (c *sessionConfig) striping() bool { return c.maxStripes > 1 }

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
	switch c.CodecLevel {
	case transport.LevelFastest, transport.LevelDefault, transport.LevelBetter:
	default:
		errs = append(errs, fmt.Errorf("%s.CodecLevel: unknown level %s", what, c.CodecLevel))
	}
	if c.Lanes < 0 || c.Lanes > MaxLanes {
		errs = append(errs, fmt.Errorf("%s.Lanes (%d) must be between 1 and %d", what, c.Lanes, MaxLanes))
	}
	if c.Stripes < 0 || c.Stripes > MaxStripesLimit {
		errs = append(errs, fmt.Errorf("%s.Stripes (%d) must be between 1 and %d", what, c.Stripes, MaxStripesLimit))
	}
	if c.MaxStripes < 0 || c.MaxStripes > MaxStripesLimit {
		errs = append(errs, fmt.Errorf("%s.MaxStripes (%d) must be between 1 and %d", what, c.MaxStripes, MaxStripesLimit))
	} else if !server && c.MaxStripes != 0 && c.MaxStripes < c.Stripes {
		errs = append(errs, fmt.Errorf("%s.MaxStripes (%d) must not be below Stripes (%d)", what, c.MaxStripes, c.Stripes))
	}
	switch c.Placement {
	case PlaceAny, PlacePinned:
	default:
		errs = append(errs, fmt.Errorf("%s.Placement: unknown placement %s", what, c.Placement))
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
		level:            c.CodecLevel,
		dicts:            c.Dictionaries,
		lanes:            orDefault(c.Lanes, DefaultLanes),
		log:              c.Logger,
		handshakeTimeout: orDefault(c.HandshakeTimeout, DefaultHandshakeTimeout),
		idleTimeout:      orDefault(c.MaxIdleTimeout, DefaultMaxIdleTimeout),
		pingPeriod:       max(orDefault(c.PingPeriod, DefaultPingPeriod), 0),
		limits:           c.Limits.WithDefaults(),
		placement:        c.Placement,
		zeroRTT:          !c.Disable0RTT,
	}
	if server {
		sc.maxStripes = max(c.Stripes, c.MaxStripes)
		if sc.maxStripes == 0 {
			sc.maxStripes = MaxStripesLimit
		}
		sc.stripes = 1
	} else {
		sc.stripes = max(c.Stripes, 1)
		sc.maxStripes = max(c.MaxStripes, sc.stripes)
	}
	if sc.log == nil {
		sc.log = slog.New(slog.DiscardHandler)
	}
	keepAlive := max(orDefault(c.KeepAlivePeriod, DefaultKeepAlivePeriod), 0)
	sc.keepAlive = keepAlive
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
		// A listener takes 0-RTT data: only a Hello can be in it, and a
		// session is handed to Accept only once the handshake has
		// completed (see the package doc, "0-RTT").
		Allow0RTT: server && sc.zeroRTT,
	}
	if server {
		// The control stream, or a stripe's join stream.
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
