// Package gateway assembles one running Meridian gateway from a topology:
// its forwarding table (routing), QUIC links with mutual TLS
// (transport/quic), the replication engine (mirror) and the admin HTTP
// server (internal/admin). `meridian run`, the demo and the lab all build
// gateways here, so they run the same code.
package gateway

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/chaos/profiles"
	"github.com/meridian-gw/meridian/internal/admin"
	"github.com/meridian-gw/meridian/internal/kafkaopt"
	"github.com/meridian-gw/meridian/internal/pki"
	"github.com/meridian-gw/meridian/mirror"
	"github.com/meridian-gw/meridian/mirror/dr"
	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/transport"
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
	Profile func(name string) (*profiles.Profile, error)

	// Window and MaxBatchBytes tune the engine (zero: engine defaults).
	Window, MaxBatchBytes int64
}

// Gateway is an assembled gateway, ready to Run.
type Gateway struct {
	opts  Options
	table *routing.Table
	eng   *mirror.Engine
	reg   *prometheus.Registry
	log   *slog.Logger
	admin *admin.Server
}

// New builds the gateway: it loads certificates, opens the link listener and
// checks everything short of connecting to clusters or peers.
func New(opts Options) (*Gateway, error) {
	if opts.Topology == nil {
		return nil, errors.New("gateway: no topology")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	table, err := routing.Compile(opts.Topology, opts.Name)
	if err != nil {
		return nil, fmt.Errorf("gateway %s: %w", opts.Name, err)
	}
	gw := table.Gateway
	log := opts.Logger.With("gateway", gw.Name) // mirror and link loggers add their component
	serverTLS, clientTLS := opts.ServerTLS, opts.ClientTLS
	if serverTLS == nil || clientTLS == nil {
		if gw.TLS == nil || gw.TLS.CertFile == "" {
			return nil, fmt.Errorf("gateway %s: link TLS needs tls.ca_file, tls.cert_file and tls.key_file (make them with `meridian certs`)", gw.Name)
		}
		if serverTLS == nil {
			if serverTLS, err = pki.ServerTLS(gw.TLS.CAFile, gw.TLS.CertFile, gw.TLS.KeyFile); err != nil {
				return nil, fmt.Errorf("gateway %s: link TLS: %w", gw.Name, err)
			}
		}
		if clientTLS == nil {
			if clientTLS, err = pki.ClientTLS(gw.TLS.CAFile, gw.TLS.CertFile, gw.TLS.KeyFile, ""); err != nil {
				return nil, fmt.Errorf("gateway %s: link TLS: %w", gw.Name, err)
			}
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// One dialer per peer: each link has its own codec.
	dialers := map[string]transport.Dialer{}
	for _, p := range table.Out {
		codec, err := transport.ParseCodec(p.Link.Compression)
		if err != nil {
			return nil, fmt.Errorf("gateway %s: link %s: %w", gw.Name, p.Link.Name, err)
		}
		sess := linkSession(p.Link, opts.Profile)
		sess.Codec, sess.Logger = codec, log.With("peer", p.Gateway.Name)
		if codec == transport.CodecZstd {
			// Per-topic dictionaries for small batches, and the level from
			// the link's rate (never its RTT): thin links get zstd better.
			_, sess.CodecLevel = transport.ChooseCompression(float64(linkRate(p.Link, opts.Profile)), 1)
			sess.Dictionaries = true
		}
		d, err := quic.NewDialer(quic.DialerOptions{TLS: serverNameFor(clientTLS, p.Gateway.Name), Session: sess,
			ListenPacket: opts.DialPacket})
		if err != nil {
			return nil, fmt.Errorf("gateway %s: link %s: %w", gw.Name, p.Link.Name, err)
		}
		addr := p.Gateway.Advertise
		if opts.PeerAddr != nil {
			addr = opts.PeerAddr(p.Gateway.Name, addr)
		}
		dialers[p.Gateway.Advertise] = redial{d, addr}
	}
	listenAddr := gw.Listen
	if opts.ListenAddr != "" {
		listenAddr = opts.ListenAddr
	}
	eng, err := mirror.New(mirror.Options{
		Table:         table,
		Dialer:        byAddr(dialers),
		ClusterOpts:   opts.ClusterOpts,
		Profile:       opts.Profile,
		Logger:        log,
		Registerer:    reg,
		Window:        opts.Window,
		MaxBatchBytes: opts.MaxBatchBytes,
		Listen: func(accept transport.Accept) (transport.Listener, error) {
			lo := quic.ListenerOptions{TLS: serverTLS, Accept: accept, Session: listenSession(table.In, opts.Profile)}
			lo.Session.Logger = log
			if opts.ListenPacket == nil {
				return quic.Listen(listenAddr, lo)
			}
			pc, err := opts.ListenPacket(listenAddr)
			if err != nil {
				return nil, err
			}
			// The listener closes the socket once its last session has
			// drained, not when it stops accepting.
			lo.PacketConn, lo.ClosePacketConn = pc, true
			ln, err := quic.Listen(listenAddr, lo)
			if err != nil {
				pc.Close()
				return nil, err
			}
			return ln, nil
		},
	})
	if err != nil {
		return nil, fmt.Errorf("gateway %s: %w", gw.Name, err)
	}
	return &Gateway{opts: opts, table: table, eng: eng, reg: reg, log: log}, nil
}

// linkSession tunes a link's sessions from its profile (quic.SessionFor:
// windows, dead-path and handshake timeouts, striping); a rate limit below
// the profile's rate lowers the striping ceiling with it. An unknown
// profile (validation reports it) leaves the defaults.
func linkSession(l *topology.Link, load func(string) (*profiles.Profile, error)) quic.Session {
	if l == nil {
		return quic.Session{}
	}
	if load == nil {
		load = profiles.Load
	}
	p, err := load(l.Profile)
	if err != nil {
		return quic.Session{}
	}
	lk := quic.LinkOf(p)
	if l.RateLimit > 0 && (lk.DataRate == 0 || l.RateLimit < lk.DataRate) {
		lk.DataRate = l.RateLimit
	}
	return quic.SessionForLink(lk)
}

// linkRate is the rate of a link's data direction in bit/s: its rate limit,
// or its profile's rate; 0 if unknown.
func linkRate(l *topology.Link, load func(string) (*profiles.Profile, error)) int64 {
	if l == nil {
		return 0
	}
	if load == nil {
		load = profiles.Load
	}
	rate := l.RateLimit
	if p, err := load(l.Profile); err == nil && p.Up.Rate > 0 && (rate == 0 || p.Up.Rate < rate) {
		rate = p.Up.Rate
	}
	return rate
}

// listenSession tunes the listener for every link it receives on: the
// largest windows and timeouts and the shortest keep-alive of their
// sessions. Striping is capped by quic.MaxStripesLimit alone.
func listenSession(in []*routing.Leg, load func(string) (*profiles.Profile, error)) quic.Session {
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

// redial dials a fixed address whatever address it is asked for.
type redial struct {
	d    transport.Dialer
	addr string
}

func (r redial) Dial(ctx context.Context, _ string, h *transport.Hello) (transport.Conn, error) {
	return r.d.Dial(ctx, r.addr, h)
}

// byAddr dispatches dials by the peer's advertised address.
type byAddr map[string]transport.Dialer

func (b byAddr) Dial(ctx context.Context, addr string, h *transport.Hello) (transport.Conn, error) {
	d, ok := b[addr]
	if !ok {
		return nil, fmt.Errorf("no link to %s", addr)
	}
	return d.Dial(ctx, addr, h)
}

// LinkAddr is the address the gateway accepts links on (nil if it receives
// nothing).
func (g *Gateway) LinkAddr() net.Addr { return g.eng.Addr() }

// Status is the engine's status.
func (g *Gateway) Status() mirror.Status { return g.eng.Status() }

// Registry holds the gateway's metrics.
func (g *Gateway) Registry() *prometheus.Registry { return g.reg }

// AdminAddr is the admin server's address once Run has started it, or nil.
func (g *Gateway) AdminAddr() net.Addr {
	if g.admin == nil {
		return nil
	}
	return g.admin.Addr()
}

// StartAdmin starts the admin server (Run does it too; calling it first lets
// a caller learn the address before Run). Idempotent.
func (g *Gateway) StartAdmin() error {
	if g.admin != nil {
		return nil
	}
	addr := g.table.Gateway.Admin
	if g.opts.AdminAddr != "" {
		addr = g.opts.AdminAddr
	}
	if addr == "" || addr == "-" {
		return nil
	}
	srv, err := admin.Start(admin.Options{
		Addr: addr, Gatherer: g.reg, Logger: g.log,
		Status:   func() any { return g.eng.Status() },
		Healthy:  g.problems,
		Handlers: map[string]http.Handler{"POST /v1/failover": http.HandlerFunc(g.serveFailover)},
	})
	if err != nil {
		return fmt.Errorf("gateway %s: admin %s: %w", g.table.Gateway.Name, addr, err)
	}
	g.admin = srv
	return nil
}

// problems lists what makes the gateway unhealthy: a peer it cannot reach.
func (g *Gateway) problems() []string {
	var out []string
	for _, p := range g.eng.Status().Peers {
		if !p.Connected && p.Failures > 0 {
			out = append(out, fmt.Sprintf("peer %s (%s) not connected: %s", p.Gateway, p.Address, p.LastError))
		}
	}
	return out
}

// Run serves until ctx ends, then drains and stops the admin server.
func (g *Gateway) Run(ctx context.Context) error {
	if err := g.StartAdmin(); err != nil {
		return err
	}
	g.log.Info("gateway running", "region", g.table.Gateway.Region.Name, "link", addrString(g.LinkAddr()), "admin", addrString(g.AdminAddr()),
		"legs_out", countLegs(g.table.Out), "legs_in", len(g.table.In))
	err := g.eng.Run(ctx)
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

// serveFailover runs a failover of the route named by the "route" query
// parameter for the legs this gateway receives (it reaches their
// destination). Parameters: route (required), to (one destination
// region/cluster), dry_run=true, drain (a duration, default 60s).
// Status: 200 with the reports; 409 if already failed over; 400 for bad
// parameters; 500 if it failed (nothing changed unless a report says
// fenced).
func (g *Gateway) serveFailover(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	route, to := q.Get("route"), q.Get("to")
	reply := func(code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
	}
	fail := func(code int, err error) { reply(code, map[string]string{"error": err.Error()}) }
	drain := 60 * time.Second
	if d := q.Get("drain"); d != "" {
		var err error
		if drain, err = time.ParseDuration(d); err != nil {
			fail(http.StatusBadRequest, fmt.Errorf("drain %q: %w", d, err))
			return
		}
	}
	var legs []*routing.Leg
	for _, l := range g.table.In {
		if l.Route.Name == route && (to == "" || l.To.Ref() == to) {
			legs = append(legs, l)
		}
	}
	if len(legs) == 0 {
		fail(http.StatusBadRequest, fmt.Errorf("gateway %s receives no leg of route %q (to %q)", g.table.Gateway.Name, route, to))
		return
	}
	var reports []*dr.FailoverReport
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
		rep, err := dr.Failover(r.Context(), dr.FailoverOptions{Leg: leg, Src: src, Dst: dst,
			DryRun: q.Get("dry_run") == "true", Drain: drain,
			Reason: fmt.Sprintf("failover of route %s via the admin API of %s", route, g.table.Gateway.Name)})
		if errors.Is(err, dr.ErrAlreadyFailedOver) {
			fail(http.StatusConflict, err)
			return
		}
		if err != nil {
			fail(http.StatusInternalServerError, fmt.Errorf("failover %s: %w", leg.ID, err))
			return
		}
		g.log.Warn("route failed over", "leg", leg.ID, "dry_run", rep.DryRun, "rpo_records", rep.RPORecords, "epoch", rep.Epoch)
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
