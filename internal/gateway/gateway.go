// Package gateway assembles one running Meridian gateway from a topology:
// its forwarding table (routing), QUIC links with mutual TLS
// (transport/quic), the replication engine (mirror) and the admin HTTP
// server (internal/admin). `meridian run`, `meridian validate`, the demo and
// the lab all build gateways here, so they run the same code.
//
// Building (New) checks everything and binds nothing; Bind binds the link
// listener and the admin server; Run binds if needed, then dials peers and
// serves. Each peer gateway has its own dialer, found by the peer's name.
package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/admin"
	"github.com/meridian-gw/meridian/internal/kafkaopt"
	"github.com/meridian-gw/meridian/internal/pki"
	"github.com/meridian-gw/meridian/internal/redact"
	"github.com/meridian-gw/meridian/mirror"
	"github.com/meridian-gw/meridian/mirror/dr"
	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/topology/membership"
	"github.com/meridian-gw/meridian/topology/profile"
	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/amqp"
	"github.com/meridian-gw/meridian/transport/quic"
)

// Options configure a gateway. Only Topology and Name are required.
type Options struct {
	Topology *topology.Topology
	Name     string // gateway name in the topology

	// Logger; nil discards.
	Logger *slog.Logger

	// ServerTLS and ClientTLS override the link mTLS configs built from the
	// gateway's tls files (the demo and lab use in-memory certificates).
	ServerTLS, ClientTLS *tls.Config

	// ListenAddr overrides the gateway's link listen address ("" = topology).
	ListenAddr string
	// AdminAddr overrides the admin address ("" = topology; "-" = none).
	AdminAddr string
	// PeerAddr, if not nil, maps a peer gateway and its advertised address
	// to the address dialled (the lab routes links through impairment
	// proxies this way).
	PeerAddr func(peer, addr string) string
	// ClusterOpts overrides how Kafka clusters are reached (nil: from the
	// topology's bootstrap, TLS and SASL settings).
	ClusterOpts func(*topology.Cluster) ([]kgo.Opt, error)

	// ListenPacket, if not nil, opens the link listener's UDP socket at the
	// listen address, and DialPacket the UDP socket of each dial (nil: the
	// usual sockets). The packet lab puts gateways in its network
	// namespaces this way.
	ListenPacket func(addr string) (net.PacketConn, error)
	DialPacket   func() (net.PacketConn, error)

	// Profile, if not nil, resolves link profile names instead of the
	// embedded profiles (the packet lab tunes gateways for the link it
	// emulates, which may be a named profile with overrides).
	Profile func(name string) (*profile.Profile, error)

	// Window and MaxBatchBytes tune the engine (zero: engine defaults).
	Window, MaxBatchBytes int64

	// AMQPTiming tunes the sessions of amqp links (keep-alive, idle
	// timeout, handshake, close deadlines); the zero value means
	// transport/amqp's defaults. Tests shorten it.
	AMQPTiming amqp.Timing

	// GossipAddr overrides the gateway's QUIC gossip listen address ("" =
	// topology's gossip.listen); RegionGossipAddr its region gossip
	// address. PeerGossipAddr and PeerRegionGossipAddr, if set, give the
	// addresses peers' gossip is reached at (tests on loopback ports).
	GossipAddr, RegionGossipAddr string
	PeerGossipAddr               func(peer, addr string) string
	PeerRegionGossipAddr         func(peer string) string
	// GossipConfig, if set, adjusts each pool's memberlist configuration
	// after the timings are derived (tests use loopback timings).
	GossipConfig func(*memberlist.Config)

	// Secrets are redacted from every admin API response (nil: none).
	// `meridian run` passes the topology file's (config.File.Secrets).
	Secrets *redact.Set

	// Reload, if not nil, re-reads the topology file the gateway was
	// started with, for Gateway.Reload (SIGHUP, POST /v1/reload). It
	// returns the new topology, or the file's problems (config.Errors,
	// each "file:line:col: path: reason"); place turns a problem found
	// later with a setting of the new file into such an error. Nil means
	// the gateway refuses to reload.
	Reload func() (topo *topology.Topology, place func(path string, err error) error, err error)
}

// Gateway is an assembled gateway, ready to Run.
type Gateway struct {
	opts Options
	// table is the table the gateway was built with. Its gateway's own
	// settings (addresses, TLS, admin, gossip) cannot change by reload,
	// and the link listener keeps the tuning it was bound with; the legs
	// running now are live's (g.now()).
	table *routing.Table
	reg   *prometheus.Registry
	log   *slog.Logger
	peers map[string]peerDialer // by peer gateway name, for table

	serverTLS *tls.Config // link server TLS; nil when the gateway carries no quic link
	live      atomic.Pointer[live]
	lnMu      sync.Mutex
	ln        transport.Listener // the link listener, shared by the engines reloads replace; closed by Run
	reload    reloader

	adminTLS *tls.Config // nil unless admin.mtls

	adminMu sync.Mutex
	admin   *admin.Server

	amqp amqpState // the AMQP links' broker listeners, for metrics

	gossip *gossip // nil when the gateway has no gossip setting
}

// SettingError is a problem with one setting of the topology file, found
// while building a gateway. Path is the setting's path in the file, as in
// config.Error ("regions[0].gateways[1].tls.cert_file"), so that a caller
// holding the config.File can place it (config.File.ErrorAt).
type SettingError struct {
	Path string
	Err  error
}

func (e *SettingError) Error() string { return e.Path + ": " + e.Err.Error() }

func (e *SettingError) Unwrap() error { return e.Err }

// live is what a reload replaces: the forwarding table, the engine
// running it and the dialers of its peers.
type live struct {
	table *routing.Table
	eng   *mirror.Engine
}

// now is the table and engine running now.
func (g *Gateway) now() *live { return g.live.Load() }

// New builds the gateway: it compiles its forwarding table, checks and
// loads its certificates, builds one dialer per peer gateway and the
// replication engine. It binds no socket and dials nothing: Bind and Run
// do. On failure the error joins every problem found, each problem with a
// setting a *SettingError (errors.As finds the first; unwrap the join for
// all).
func New(opts Options) (*Gateway, error) {
	g, clientTLS, err := assemble(opts)
	if err != nil {
		return nil, err
	}
	gw := g.table.Gateway
	if gw.Gossip != nil {
		g.gossip = &gossip{serverTLS: g.serverTLS, clientTLS: clientTLS}
	}
	g.reg = prometheus.NewRegistry()
	g.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if g.gossip != nil {
		g.reg.MustRegister(gossipCollector{g})
	}
	g.reg.MustRegister(amqpCollector{g})
	g.reload.init(g.reg)
	eng, err := g.newEngine(g.table, g.peers)
	if err != nil {
		return nil, fmt.Errorf("gateway %s: %w", gw.Name, err)
	}
	g.live.Store(&live{table: g.table, eng: eng})
	return g, nil
}

// newEngine builds an engine for table, dialling peers; every engine of
// the gateway shares its registry and its link listener.
func (g *Gateway) newEngine(table *routing.Table, peers map[string]peerDialer) (*mirror.Engine, error) {
	return mirror.New(mirror.Options{
		Table: table,
		Dial: func(ctx context.Context, peer string, h *transport.Hello) (transport.Conn, error) {
			return dialPeer(ctx, table, peers, peer, h)
		},
		ClusterOpts:   g.opts.ClusterOpts,
		Profile:       g.opts.Profile,
		Logger:        g.log,
		Registerer:    g.reg,
		Window:        g.opts.Window,
		MaxBatchBytes: g.opts.MaxBatchBytes,
		Listen:        g.sharedListen,
		Alive:         g.gossipAlive,
		OpenSource:    g.amqpSources(table),
		OpenWriter:    g.amqpSinks(table),
	})
}

// assemble compiles the table of opts' topology, checks and loads the
// link certificates and builds the peers' dialers: what New and a reload
// build before any engine. clientTLS is the link client TLS.
func assemble(opts Options) (g *Gateway, clientTLS *tls.Config, err error) {
	if opts.Topology == nil {
		return nil, nil, errors.New("gateway: no topology")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	table, err := routing.Compile(opts.Topology, opts.Name)
	if err != nil {
		return nil, nil, fmt.Errorf("gateway %s: %w", opts.Name, err)
	}
	gw := table.Gateway
	g = &Gateway{opts: opts, table: table, log: opts.Logger.With("gateway", gw.Name)} // mirror and link loggers add their component
	serverTLS, clientTLS, problems := g.linkTLS()
	if _, err := g.memberMeta().Encode(); err != nil {
		problems = append(problems, &SettingError{gw.Path, err})
	}
	peers, dialProblems := g.dialers(clientTLS)
	problems = append(problems, dialProblems...)
	problems = append(append(problems, g.checkAMQPIn()...), g.checkAMQPEndpoints()...)
	if len(problems) == 0 {
		if g.adminTLS, err = g.buildAdminTLS(serverTLS); err != nil {
			problems = append(problems, err)
		}
	}
	if len(problems) > 0 {
		return nil, nil, fmt.Errorf("gateway %s: %w", gw.Name, errors.Join(problems...))
	}
	g.peers, g.serverTLS = peers, serverTLS
	return g, clientTLS, nil
}

// memberMeta is what the gateway tells the fleet about itself in its
// memberlist metadata. New encodes it with the largest incarnation, so
// that a topology whose metadata would not fit fails to build (and so
// fails validate), naming the gateway.
func (g *Gateway) memberMeta() *membership.Meta {
	gw := g.table.Gateway
	caps := membership.CapQUICGossip | membership.CapStripes | membership.CapPassthrough
	return &membership.Meta{Region: gw.Region.Name, Gateway: gw.Name, Incarnation: math.MaxUint64,
		Caps: caps, ProtoMin: transport.VersionMin, ProtoMax: transport.VersionMax}
}

// carriesLinks reports whether the gateway sends or receives any leg over
// a quic link, and so needs link TLS (amqp links authenticate to their
// broker instead).
func (g *Gateway) carriesLinks() bool {
	for _, p := range g.table.Out {
		if p.Link.Transport != "amqp" {
			return true
		}
	}
	for _, l := range g.table.In {
		if l.Link.Transport != "amqp" {
			return true
		}
	}
	return g.table.Relaying || len(g.table.Relays) > 0 // relay paths are quic
}

// linkTLS builds the link mTLS configs from the options or the gateway's
// tls files, checking the files first (pki.CheckGatewayFiles), and applies
// the fleet's certificate policy (linkPolicy) to both.
func (g *Gateway) linkTLS() (server, client *tls.Config, problems []error) {
	server, client, problems = g.linkTLSFiles()
	if len(problems) > 0 || server == nil || client == nil {
		return server, client, problems
	}
	policy, problems := g.linkPolicy(server)
	if len(problems) > 0 {
		return nil, nil, problems
	}
	server, client = server.Clone(), client.Clone()
	policy.Apply(server)
	policy.Apply(client)
	return server, client, nil
}

// linkPolicy builds the policy of the topology's tls block: the SAN rule,
// the revoked serials and the CRL (checked against the fleet CA). A bad CRL
// and a gateway whose own certificate the policy refuses are problems.
func (g *Gateway) linkPolicy(server *tls.Config) (*pki.Policy, []error) {
	p := &pki.Policy{}
	lt := g.opts.Topology.LinkTLS
	if lt == nil {
		return p, nil
	}
	var problems []error
	p.RequireSAN = lt.RequireSAN
	for i, s := range lt.RevokedSerials {
		n, err := pki.ParseSerial(s)
		if err != nil {
			problems = append(problems, &SettingError{fmt.Sprintf("tls.revoked_serials[%d]", i), err})
			continue
		}
		p.Revoked = append(p.Revoked, n)
	}
	if lt.CRL != "" {
		gw := g.table.Gateway
		if gw.TLS == nil || gw.TLS.CAFile == "" {
			problems = append(problems, &SettingError{"tls.crl", errors.New("a CRL needs the gateway's tls.ca_file to check its signature")})
		} else if crl, err := pki.LoadCRL(lt.CRL, gw.TLS.CAFile); err != nil {
			problems = append(problems, &SettingError{"tls.crl", err})
		} else {
			p.CRL = crl
		}
	}
	if len(problems) > 0 {
		return nil, problems
	}
	if own := ownLeaf(server); own != nil {
		if err := p.Check(own); err != nil {
			where := g.table.Gateway.Path + ".tls.cert_file"
			return nil, []error{&SettingError{where, fmt.Errorf("this gateway's own certificate is refused by the fleet's tls policy: %w", err)}}
		}
	}
	return p, nil
}

// ownLeaf is the gateway's own certificate in c, or nil.
func ownLeaf(c *tls.Config) *x509.Certificate {
	if len(c.Certificates) == 0 || len(c.Certificates[0].Certificate) == 0 {
		return nil
	}
	if l := c.Certificates[0].Leaf; l != nil {
		return l
	}
	l, err := x509.ParseCertificate(c.Certificates[0].Certificate[0])
	if err != nil {
		return nil
	}
	return l
}

// linkTLSFiles builds the link mTLS configs from the options or the
// gateway's tls files.
func (g *Gateway) linkTLSFiles() (server, client *tls.Config, problems []error) {
	gw := g.table.Gateway
	server, client = g.opts.ServerTLS, g.opts.ClientTLS
	if server != nil && client != nil || !g.carriesLinks() && gw.Gossip == nil {
		return server, client, nil
	}
	t := gw.TLS
	if t == nil || t.CAFile == "" || t.CertFile == "" || t.KeyFile == "" {
		return nil, nil, []error{&SettingError{gw.Path + ".tls", errors.New("link TLS needs tls.ca_file, tls.cert_file and tls.key_file (make them with `meridian certs`)")}}
	}
	for _, p := range pki.CheckGatewayFiles(t.CAFile, t.CertFile, t.KeyFile, gw.Name) {
		problems = append(problems, &SettingError{gw.Path + ".tls." + p.Field, p.Err})
	}
	if len(problems) > 0 {
		return nil, nil, problems
	}
	var err error
	if server == nil {
		if server, err = pki.ServerTLS(t.CAFile, t.CertFile, t.KeyFile); err != nil {
			return nil, nil, []error{&SettingError{gw.Path + ".tls", err}}
		}
	}
	if client == nil {
		if client, err = pki.ClientTLS(t.CAFile, t.CertFile, t.KeyFile, ""); err != nil {
			return nil, nil, []error{&SettingError{gw.Path + ".tls", err}}
		}
	}
	return server, client, nil
}

// buildAdminTLS is the admin server's TLS when admin.mtls is set: the
// gateway's link certificate, and client certificates verified against the
// fleet CA when given (a token may still authenticate instead).
func (g *Gateway) buildAdminTLS(linkServer *tls.Config) (*tls.Config, error) {
	gw := g.table.Gateway
	if gw.AdminAuth == nil || !gw.AdminAuth.MTLS {
		return nil, nil
	}
	c := linkServer
	if c == nil {
		t := gw.TLS
		if t == nil {
			return nil, &SettingError{gw.Path + ".admin.mtls", errors.New("needs the gateway's tls ca_file, cert_file and key_file")}
		}
		var err error
		if c, err = pki.ServerTLS(t.CAFile, t.CertFile, t.KeyFile); err != nil {
			return nil, &SettingError{gw.Path + ".tls", err}
		}
	}
	c = c.Clone()
	c.ClientAuth = tls.VerifyClientCertIfGiven
	c.NextProtos = nil // HTTP/1.1 and h2 over TLS, not the link's ALPN
	return c, nil
}

// listenAddr is the link listen address: the option, else the topology's.
func (g *Gateway) listenAddr() string {
	if g.opts.ListenAddr != "" {
		return g.opts.ListenAddr
	}
	return g.table.Gateway.Listen
}

// adminAddr is the admin address, "" for none.
func (g *Gateway) adminAddr() string {
	addr := g.table.Gateway.Admin
	if g.opts.AdminAddr != "" {
		addr = g.opts.AdminAddr
	}
	if addr == "-" {
		return ""
	}
	return addr
}

// listen opens the link listeners (the engine's Options.Listen): QUIC on
// the listen address for quic links, one broker listener per amqp link
// (amqpListeners), merged into one when there are several.
func (g *Gateway) listen(serverTLS *tls.Config, accept transport.Accept) (transport.Listener, error) {
	var lns []transport.Listener
	if g.receivesQUIC() {
		ln, err := g.listenQUIC(serverTLS, accept)
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
	}
	als, err := g.amqpListeners(accept)
	if err != nil {
		for _, ln := range lns {
			ln.Close()
		}
		return nil, err
	}
	lns = append(lns, als...)
	if len(lns) == 1 {
		return lns[0], nil
	}
	return newMultiListener(lns), nil
}

// receivesQUIC reports whether any inbound leg comes over a quic link.
func (g *Gateway) receivesQUIC() bool { return receivesQUIC(g.table) }

// receivesQUIC reports whether table t receives any leg over a quic link, or is dialled by a peer over one.
func receivesQUIC(t *routing.Table) bool {
	own := t.Gateway.Region
	for _, l := range t.In {
		if l.Link.Transport != "amqp" && l.Link.Dial != own {
			return true
		}
	}
	for _, p := range t.Out {
		if !p.Dials && p.Link.Transport != "amqp" {
			return true // the peer dials in, and this gateway sends over its sessions
		}
	}
	return t.Relaying // senders of other regions dial in to relay (quic links only)
}

// listenCodec is how the listener compresses the batches it sends over
// sessions its peers dial (duplex, protocol version 4): zstd (with
// per-topic dictionaries) when any such link asks for it, else s2 when
// one does, else none.
func (g *Gateway) listenCodec(s *quic.Session) {
	best := transport.CodecNone
	for _, p := range g.table.Out {
		if p.Dials || p.Link.Transport == "amqp" {
			continue
		}
		c, err := transport.ParseCodec(p.Link.Compression)
		if err != nil {
			continue // reported by dialers' checks of the link
		}
		if c == transport.CodecZstd || c == transport.CodecS2 && best == transport.CodecNone {
			best = c
		}
		if c == transport.CodecZstd {
			_, s.CodecLevel = transport.ChooseCompression(float64(p.Link.DataRateFrom(linkProfile(p.Link, g.opts.Profile), false)), 1)
		}
	}
	s.Codec = best
	s.Dictionaries = best == transport.CodecZstd
}

// listenQUIC opens the QUIC link listener.
func (g *Gateway) listenQUIC(serverTLS *tls.Config, accept transport.Accept) (transport.Listener, error) {
	addr := g.listenAddr()
	lo := quic.ListenerOptions{TLS: serverTLS, Accept: accept, Session: listenSession(g.table.In, g.opts.Profile), Registerer: g.reg}
	lo.Session.Logger = g.log
	g.listenCodec(&lo.Session)
	if g.opts.ListenPacket == nil {
		return quic.Listen(addr, lo)
	}
	pc, err := g.opts.ListenPacket(addr)
	if err != nil {
		return nil, err
	}
	// The listener closes the socket once its last session has drained,
	// not when it stops accepting.
	lo.PacketConn, lo.ClosePacketConn = pc, true
	ln, err := quic.Listen(addr, lo)
	if err != nil {
		pc.Close()
		return nil, err
	}
	return ln, nil
}

// ProbeAddrs binds the gateway's link listen address (UDP) and admin
// address (TCP) and releases them at once, reporting each that cannot be
// bound at its setting. It is for `meridian validate --gateway` on the
// gateway's own host; a gateway that is already bound fails its own probe.
func (g *Gateway) ProbeAddrs() []*SettingError {
	gw := g.table.Gateway
	var out []*SettingError
	if g.receivesQUIC() {
		pc, err := net.ListenPacket("udp", g.listenAddr())
		if err != nil {
			out = append(out, &SettingError{gw.Path + ".listen", fmt.Errorf("cannot bind: %w", err)})
		} else {
			pc.Close()
		}
	}
	if addr := g.adminAddr(); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			out = append(out, &SettingError{gw.Path + ".admin", fmt.Errorf("cannot bind: %w", err)})
		} else {
			ln.Close()
		}
	}
	if gg := gw.Gossip; gg != nil {
		if pc, err := net.ListenPacket("udp", g.gossipAddr()); err != nil {
			out = append(out, &SettingError{gw.Path + ".gossip.listen", fmt.Errorf("cannot bind: %w", err)})
		} else {
			pc.Close()
		}
		if gg.Region != "" {
			if ln, err := net.Listen("tcp", gg.Region); err != nil {
				out = append(out, &SettingError{gw.Path + ".gossip.region", fmt.Errorf("cannot bind: %w", err)})
			} else {
				ln.Close()
			}
		}
	}
	return out
}

// linkProfile resolves a link's profile with load (nil: the embedded
// profiles); nil when the link or its profile is unknown (validation
// reports an unknown name).
func linkProfile(l *topology.Link, load func(string) (*profile.Profile, error)) *profile.Profile {
	if l == nil {
		return nil
	}
	if load == nil {
		load = profile.Load
	}
	p, err := load(l.Profile)
	if err != nil {
		return nil
	}
	return p
}

// linkSession tunes a link's sessions from its profile (quic.SessionFor:
// windows, dead-path and handshake timeouts, striping), with the striping
// ceiling from the link's data rate (topology.Link.DataRate: a rate limit
// below the profile's rate lowers it). An unknown profile leaves the
// defaults.
func linkSession(l *topology.Link, load func(string) (*profile.Profile, error)) quic.Session {
	p := linkProfile(l, load)
	if p == nil {
		return quic.Session{}
	}
	lk := quic.LinkOf(p)
	lk.DataRate = l.DataRate(p)
	return quic.SessionForLink(lk)
}

// listenSession tunes the listener for every link it receives on: the
// largest windows and timeouts and the shortest keep-alive of their
// sessions. Striping is capped by quic.MaxStripesLimit alone.
func listenSession(in []*routing.Leg, load func(string) (*profile.Profile, error)) quic.Session {
	var out quic.Session
	for _, l := range in {
		s := linkSession(l.Link, load)
		out.InitialStreamReceiveWindow = max(out.InitialStreamReceiveWindow, s.InitialStreamReceiveWindow)
		out.MaxStreamReceiveWindow = max(out.MaxStreamReceiveWindow, s.MaxStreamReceiveWindow)
		out.InitialConnectionReceiveWindow = max(out.InitialConnectionReceiveWindow, s.InitialConnectionReceiveWindow)
		out.MaxConnectionReceiveWindow = max(out.MaxConnectionReceiveWindow, s.MaxConnectionReceiveWindow)
		out.HandshakeTimeout = max(out.HandshakeTimeout, s.HandshakeTimeout)
		out.MaxIdleTimeout = max(out.MaxIdleTimeout, s.MaxIdleTimeout)
		if s.KeepAlivePeriod > 0 && (out.KeepAlivePeriod == 0 || s.KeepAlivePeriod < out.KeepAlivePeriod) {
			out.KeepAlivePeriod = s.KeepAlivePeriod
		}
	}
	return out
}

// serverNameFor pins the name the peer's certificate must carry: the peer
// gateway's name (certificates from `meridian certs` carry it as a DNS SAN).
func serverNameFor(c *tls.Config, peer string) *tls.Config {
	c = c.Clone()
	c.ServerName = peer
	return c
}

// LinkAddr is the address the gateway accepts links on once bound (Bind
// or Run), or nil (also when it receives nothing).
func (g *Gateway) LinkAddr() net.Addr {
	g.lnMu.Lock()
	defer g.lnMu.Unlock()
	if g.ln == nil {
		return nil
	}
	return g.ln.Addr()
}

// Bind binds the link listener (when the gateway receives legs) and the
// admin server, so that a caller learns LinkAddr and AdminAddr before Run.
// Run calls it too. Idempotent. Once bound, the sockets are released by
// Run when it returns: a bound gateway must be Run.
func (g *Gateway) Bind() error {
	if err := g.StartAdmin(); err != nil {
		return err
	}
	if err := g.now().eng.Bind(); err != nil {
		// Bound nothing, then: release the admin server too.
		g.adminMu.Lock()
		if g.admin != nil {
			err = errors.Join(err, g.admin.Close())
			g.admin = nil
		}
		g.adminMu.Unlock()
		return &SettingError{g.table.Gateway.Path + ".listen", fmt.Errorf("gateway %s: link listener %s: %w", g.table.Gateway.Name, g.listenAddr(), err)}
	}
	if err := g.startGossip(); err != nil {
		// The engine's listener is released by Run only: a gateway whose
		// gossip cannot bind is not run, so release what is bound.
		g.adminMu.Lock()
		if g.admin != nil {
			err = errors.Join(err, g.admin.Close())
			g.admin = nil
		}
		g.adminMu.Unlock()
		return err
	}
	return nil
}

// Status is the engine's status.
func (g *Gateway) Status() mirror.Status { return g.now().eng.Status() }

// Registry holds the gateway's metrics.
func (g *Gateway) Registry() *prometheus.Registry { return g.reg }

// AdminAddr is the admin server's address once started, or nil.
func (g *Gateway) AdminAddr() net.Addr {
	g.adminMu.Lock()
	defer g.adminMu.Unlock()
	if g.admin == nil {
		return nil
	}
	return g.admin.Addr()
}

// StartAdmin starts the admin server alone (Bind and Run do it too).
// Idempotent.
func (g *Gateway) StartAdmin() error {
	g.adminMu.Lock()
	defer g.adminMu.Unlock()
	if g.admin != nil {
		return nil
	}
	addr := g.adminAddr()
	if addr == "" {
		return nil
	}
	o := admin.Options{
		Addr: addr, Gatherer: g.reg, Registerer: g.reg, Logger: g.log, Redact: g.opts.Secrets,
		Status:  func() any { return statusJSON{g.now().eng.Status(), g.reload.last()} },
		Healthy: g.problems,
		Actions: map[string]http.Handler{
			"/v1/failover": http.HandlerFunc(g.serveFailover),
			"/v1/failback": http.HandlerFunc(g.serveFailback),
			"/v1/reload":   http.HandlerFunc(g.serveReload),
		},
	}
	if g.gossip != nil {
		o.Members = g.membersJSON
		o.Actions["/v1/gossip/keys"] = http.HandlerFunc(g.serveGossipKeys)
	}
	if a := g.table.Gateway.AdminAuth; a != nil {
		o.Token, o.Open, o.Hosts = a.Token.Reveal(), a.Open, a.Hosts
	}
	if g.adminTLS != nil {
		o.TLS = g.adminTLS
		o.Operator = func(c *x509.Certificate) bool { _, ok := pki.OperatorName(c); return ok }
	}
	srv, err := admin.Start(o)
	if err != nil {
		return &SettingError{g.table.Gateway.Path + ".admin", fmt.Errorf("gateway %s: admin %s: %w", g.table.Gateway.Name, addr, err)}
	}
	g.admin = srv
	return nil
}

// problems lists what makes the gateway unhealthy: a peer it cannot reach.
func (g *Gateway) problems() []string {
	var out []string
	for _, p := range g.now().eng.Status().Peers {
		if !p.Connected && p.Failures > 0 {
			out = append(out, fmt.Sprintf("peer %s (%s) not connected: %s", p.Gateway, p.Address, p.LastError))
		}
	}
	return out
}

// Run binds (Bind) and serves until ctx ends, then drains and stops the
// admin server.
func (g *Gateway) Run(ctx context.Context) error {
	if err := g.Bind(); err != nil {
		return err
	}
	g.log.Info("gateway running", "region", g.table.Gateway.Region.Name, "link", addrString(g.LinkAddr()), "admin", addrString(g.AdminAddr()),
		"legs_out", countLegs(g.table.Out), "legs_in", len(g.table.In))
	// Two-phase leave: when ctx ends, the leave is gossiped first, then
	// the engine drains (its context ends), then gossip shuts down.
	ectx, ecancel := context.WithCancel(context.WithoutCancel(ctx))
	defer ecancel()
	var wg sync.WaitGroup
	gctx, gcancel := context.WithCancel(ctx)
	wg.Go(func() { g.runGossip(gctx) })
	wg.Go(func() {
		select {
		case <-ctx.Done():
			g.leaveGossip()
		case <-ectx.Done():
		}
		ecancel()
	})
	err := g.runEngines(ectx)
	ecancel()
	gcancel()
	wg.Wait()
	g.stopGossip()
	g.lnMu.Lock()
	if g.ln != nil {
		g.ln.Close()
		g.ln = nil
	}
	g.lnMu.Unlock()
	g.adminMu.Lock()
	defer g.adminMu.Unlock()
	if g.admin != nil {
		err = errors.Join(err, g.admin.Close())
	}
	return err
}

func addrString(a net.Addr) string {
	if a == nil {
		return "none"
	}
	return a.String()
}

func countLegs(ps []*routing.Peer) int {
	n := 0
	for _, p := range ps {
		n += len(p.Legs)
	}
	return n
}

// Bounds of a failover's drain, the one duration the admin API takes.
const (
	minDrain     = time.Second
	maxDrain     = 10 * time.Minute
	defaultDrain = 60 * time.Second
)

// drRequest is the JSON body of POST /v1/failover and /v1/failback.
type drRequest struct {
	Route  string `json:"route"`   // required
	To     string `json:"to"`      // one destination region/cluster; "" = all
	DryRun bool   `json:"dry_run"` // plan only
	Drain  string `json:"drain"`   // failover only: duration, 1s..10m; "" = 60s
}

// failbackTimeout bounds a failback started through the admin API.
const failbackTimeout = 10 * time.Minute

// serveFailover runs a failover of a route for the legs this gateway
// receives (it reaches their destination). The admin server has checked
// the caller and that the body is a JSON object (package internal/admin);
// the body is a drRequest. Status: 200 with the reports; 409 if already
// failed over; 400 for bad parameters; 500 if it failed (nothing changed
// unless a report says fenced).
func (g *Gateway) serveFailover(w http.ResponseWriter, r *http.Request) {
	g.serveDR(w, r, "failover", func(ctx context.Context, req drRequest, leg *routing.Leg, src, dst []kgo.Opt, drain time.Duration) (any, error) {
		rep, err := dr.Failover(ctx, dr.FailoverOptions{Leg: leg, Src: src, Dst: dst, DryRun: req.DryRun, Drain: drain,
			Reason: fmt.Sprintf("failover of route %s via the admin API of %s", req.Route, g.table.Gateway.Name)})
		if err == nil {
			g.log.Warn("route failed over", "leg", leg.ID, "dry_run", rep.DryRun, "rpo_records", rep.RPORecords, "epoch", rep.Epoch)
		}
		return rep, err
	})
}

// serveFailback returns a failed-over route to its original direction
// (dr.Failback) for the legs this gateway receives; the body is a
// drRequest without drain. Status as serveFailover's.
func (g *Gateway) serveFailback(w http.ResponseWriter, r *http.Request) {
	g.serveDR(w, r, "failback", func(ctx context.Context, req drRequest, leg *routing.Leg, src, dst []kgo.Opt, _ time.Duration) (any, error) {
		rep, err := dr.Failback(ctx, dr.FailbackOptions{Leg: leg, Src: src, Dst: dst, DryRun: req.DryRun})
		if err == nil {
			g.log.Warn("route failed back", "leg", leg.ID, "dry_run", rep.DryRun, "stragglers", len(rep.Stragglers), "epoch", rep.Epoch)
		}
		return rep, err
	})
}

// serveDR decodes and bounds a drRequest, finds the legs it names and runs
// do on each, replying with the reports.
func (g *Gateway) serveDR(w http.ResponseWriter, r *http.Request, what string,
	do func(ctx context.Context, req drRequest, leg *routing.Leg, src, dst []kgo.Opt, drain time.Duration) (any, error)) {
	reply := func(code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
	}
	fail := func(code int, err error) { reply(code, map[string]string{"error": err.Error()}) }
	var req drRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		fail(http.StatusBadRequest, fmt.Errorf("%s request: %w (want {\"route\": R, \"to\": region/cluster, \"dry_run\": bool, \"drain\": \"60s\"})", what, err))
		return
	}
	if req.Route == "" {
		fail(http.StatusBadRequest, fmt.Errorf("%s request: route is required", what))
		return
	}
	drain, timeout := defaultDrain, failbackTimeout
	switch {
	case req.Drain != "" && what != "failover":
		fail(http.StatusBadRequest, fmt.Errorf("%s request: drain applies to failover only", what))
		return
	case req.Drain != "":
		d, err := time.ParseDuration(req.Drain)
		if err != nil {
			fail(http.StatusBadRequest, fmt.Errorf("drain %q: %w", req.Drain, err))
			return
		}
		if d < minDrain || d > maxDrain {
			fail(http.StatusBadRequest, fmt.Errorf("drain %s: out of range; want %s to %s", d, minDrain, maxDrain))
			return
		}
		drain = d
	}
	if what == "failover" {
		timeout = drain + 2*time.Minute
	}
	// The request ends within timeout, whoever holds the connection open.
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	var legs []*routing.Leg
	for _, l := range g.now().table.In {
		if l.Route.Name == req.Route && (req.To == "" || l.To.Ref() == req.To) {
			legs = append(legs, l)
		}
	}
	if len(legs) == 0 {
		fail(http.StatusBadRequest, fmt.Errorf("gateway %s receives no leg of route %q (to %q)", g.table.Gateway.Name, req.Route, req.To))
		return
	}
	var reports []any
	for _, leg := range legs {
		src, err := g.clusterOpts(leg.From)
		if err != nil {
			fail(http.StatusInternalServerError, err)
			return
		}
		dst, err := g.clusterOpts(leg.To)
		if err != nil {
			fail(http.StatusInternalServerError, err)
			return
		}
		rep, err := do(ctx, req, leg, src, dst, drain)
		if errors.Is(err, dr.ErrAlreadyFailedOver) {
			fail(http.StatusConflict, err)
			return
		}
		if err != nil {
			fail(http.StatusInternalServerError, fmt.Errorf("%s %s: %w", what, leg.ID, err))
			return
		}
		reports = append(reports, rep)
	}
	reply(http.StatusOK, reports)
}

func (g *Gateway) clusterOpts(c *topology.Cluster) ([]kgo.Opt, error) {
	if g.opts.ClusterOpts != nil {
		return g.opts.ClusterOpts(c)
	}
	return kafkaopt.Opts(c, g.log)
}
