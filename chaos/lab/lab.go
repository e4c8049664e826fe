// Package lab is the embedded two-region lab that `meridian demo`, the end to
// end tests and the benchmarks run on: two in-process Kafka clusters
// (franz-go's kfake) as regions "edge" and "hq", one gateway in each, joined
// by a real QUIC link with mutual TLS (in-memory certificates), optionally
// through the chaos UDP impairment proxy with a named link profile.
//
// Either cluster may instead be an external one, such as real Apache Kafka
// from internal/kafkatest (Options.EdgeBootstrap, HQBootstrap, with SASL
// credentials), so that the same scenarios run against real brokers.
//
// Fleet (NewFleet) runs any topology file the same way, in one process:
// one kfake cluster per cluster of the file, every gateway in-process with
// a certificate from a CA made for the run, addresses on free loopback
// ports, and one impairment proxy per link and dialled gateway with the
// link's profile. Its producer writes JSON events into topics derived from
// each route's include patterns, and Verify reads every route leg back
// (internal/verify). `meridian demo --topology FILE` is RunFleetDemo.
//
// It is never imported by the production path of `meridian run`.
package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/meridian-gw/meridian/chaos"
	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/internal/gateway"
	"github.com/meridian-gw/meridian/internal/kafkaopt"
	"github.com/meridian-gw/meridian/internal/pki"
	"github.com/meridian-gw/meridian/topology"
)

// Gateway names in the lab.
const (
	EdgeGateway = "edge-a"
	HQGateway   = "hq-a"
)

// Options configure a lab. Zero values are documented per field.
type Options struct {
	// Topics are created at the edge cluster with Partitions partitions
	// each. Nil: none (create them yourself).
	Topics     []string
	Partitions int32 // zero: 4
	// Include is the route's topic filter. Nil: every topic.
	Include []string
	// Rename is the route's rename template. "": "{topic}".
	Rename string
	// Profile is the link profile applied by a UDP impairment proxy between
	// the gateways. "": no proxy, the gateways talk directly over loopback.
	Profile string
	// Loss, when > 0, overrides the profile's random loss.
	Loss float64
	// Compression of the link: none, zstd or s2. "": zstd.
	Compression string
	// Passthrough makes the link forward Kafka record batches byte for
	// byte (config.Link.Passthrough).
	Passthrough bool
	// ProduceLatency delays every produce request at the HQ cluster, like
	// the replication wait of acks=all on a real cluster. Zero: none.
	ProduceLatency time.Duration
	// Seed for the impairment proxy; zero picks one.
	Seed uint64
	// Logger; nil discards.
	Logger *slog.Logger
	// Window and MaxBatchBytes tune the engines; zero: defaults.
	Window, MaxBatchBytes int64
	// Admin starts each gateway's admin server on a free loopback port.
	Admin bool
	// Gossip makes both gateways members of the fleet's gossip
	// (memberlist over QUIC with the link certificates), each on a free
	// loopback port, directly and not through the impairment proxy.
	Gossip bool

	// EdgeBootstrap and HQBootstrap, when not empty, are external Kafka
	// clusters (for example real Apache Kafka from internal/kafkatest) the
	// lab uses instead of starting kfake for that region; Lab.Edge or
	// Lab.HQ is nil then, and Close leaves the cluster running. Topics are
	// created on an external edge cluster with one replica. ProduceLatency
	// needs kfake at HQ. Nil: kfake.
	EdgeBootstrap, HQBootstrap []string
	// EdgeSASL and HQSASL are the credentials the gateways (and EdgeOpts,
	// HQOpts) use on the clusters. Nil: no authentication.
	EdgeSASL, HQSASL *config.SASL

	// Routes, when not nil, replace the lab's one route "mirror" (built
	// from Include and Rename); each goes from "edge/kafka" to "hq/kafka".
	// A route's empty Rename means Rename; RenameTopic follows Rename, so
	// keep the routes' renames equal to it.
	Routes []config.Route
}

// Lab is a running two-region lab. Gateways are started and stopped
// explicitly; Close stops everything.
type Lab struct {
	Edge, HQ *kfake.Cluster // nil for an external cluster (Options.EdgeBootstrap, HQBootstrap)
	Topo     *topology.Topology
	Proxy    *chaos.UDPProxy // nil without a profile
	opts     Options
	ca       *pki.CA
	certs    map[string]*pki.Cert
	hqAddr   string // the hq gateway's fixed link address

	edgeSeeds, hqSeeds []string // the clusters' bootstrap addresses
	edgeOpts, hqOpts   []kgo.Opt

	gatewaySet
}

type running struct {
	gw     *gateway.Gateway
	cancel context.CancelFunc
	done   chan error
}

// gatewaySet runs named gateways in the background, each until Stop: the
// part Lab and Fleet share. mu also guards what an embedder keeps beside
// running.
type gatewaySet struct {
	mu      sync.Mutex
	running map[string]*running
}

// goLocked runs gw in the background as name; mu is held.
func (s *gatewaySet) goLocked(name string, gw *gateway.Gateway) {
	if s.running == nil {
		s.running = map[string]*running{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{gw: gw, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- gw.Run(ctx) }()
	s.running[name] = r
}

// Stop stops the named gateway gracefully and waits for it.
func (s *gatewaySet) Stop(name string) error {
	s.mu.Lock()
	r := s.running[name]
	delete(s.running, name)
	s.mu.Unlock()
	if r == nil {
		return nil
	}
	r.cancel()
	return <-r.done
}

// Gateway returns the named running gateway, or nil.
func (s *gatewaySet) Gateway(name string) *gateway.Gateway {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.running[name]; r != nil {
		return r.gw
	}
	return nil
}

// New starts the clusters (and proxy); no gateway runs yet.
func New(opts Options) (l *Lab, err error) {
	if opts.Partitions == 0 {
		opts.Partitions = 4
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Compression == "" {
		opts.Compression = "zstd"
	}
	if opts.Rename == "" {
		opts.Rename = "{topic}"
	}
	if opts.Include == nil {
		opts.Include = []string{".*"}
	}
	l = &Lab{opts: opts, certs: map[string]*pki.Cert{}}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	if err := l.clusters(); err != nil {
		return nil, err
	}
	if d := opts.ProduceLatency; d > 0 {
		// Each produce request waits d before the broker handles it, as
		// acks=all waits for replicas; other connections go on meanwhile,
		// requests on one connection wait their turn, as in Kafka.
		hq := l.HQ
		hq.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
			hq.KeepControl()
			hq.SleepControl(func() { time.Sleep(d) })
			return nil, nil, false
		})
	}
	if l.ca, err = pki.NewCA("meridian-lab", 24*time.Hour); err != nil {
		return nil, err
	}
	for _, name := range []string{EdgeGateway, HQGateway} {
		if l.certs[name], err = l.ca.Issue(name, []string{"127.0.0.1", "localhost"}); err != nil {
			return nil, err
		}
	}
	if l.hqAddr, err = freeUDPAddr(); err != nil {
		return nil, err
	}
	peerAddr := l.hqAddr
	if opts.Profile != "" {
		p, err := chaos.LoadProfile(opts.Profile)
		if err != nil {
			return nil, err
		}
		if opts.Loss > 0 {
			p = p.WithLoss(opts.Loss)
		}
		l.Proxy, err = chaos.NewUDPProxy(chaos.UDPProxyOptions{Target: l.hqAddr, Profile: p, Seed: opts.Seed, Logger: opts.Logger})
		if err != nil {
			return nil, fmt.Errorf("lab: impairment proxy: %w", err)
		}
		peerAddr = l.Proxy.Addr().String()
	}
	profile := opts.Profile
	if profile == "" {
		profile = "lan"
	}
	gossip := map[string]*config.GatewayGossip{}
	if opts.Gossip {
		for _, name := range []string{EdgeGateway, HQGateway} {
			addr, err := freeUDPAddr()
			if err != nil {
				return nil, err
			}
			gossip[name] = &config.GatewayGossip{Listen: addr}
		}
	}
	f := &config.File{
		Version: 1,
		Regions: []config.Region{
			{Name: "edge", Clusters: []config.Cluster{{Name: "kafka", Kind: "kafka", Bootstrap: l.edgeSeeds, SASL: opts.EdgeSASL}},
				Gateways: []config.Gateway{{Name: EdgeGateway, Listen: "127.0.0.1:0", Gossip: gossip[EdgeGateway]}}},
			{Name: "hq", Clusters: []config.Cluster{{Name: "kafka", Kind: "kafka", Bootstrap: l.hqSeeds, SASL: opts.HQSASL}},
				Gateways: []config.Gateway{{Name: HQGateway, Listen: l.hqAddr, Advertise: peerAddr, Gossip: gossip[HQGateway]}}},
		},
		Links:  []config.Link{{Name: "edge--hq", Between: []string{"edge", "hq"}, Transport: "quic", Profile: profile, Compression: opts.Compression, Passthrough: opts.Passthrough}},
		Routes: slices.Clone(opts.Routes),
	}
	for i := range f.Routes {
		if f.Routes[i].Rename == "" { // topology.New takes the file as defaulted by config.Load
			f.Routes[i].Rename = opts.Rename
		}
	}
	if f.Routes == nil {
		f.Routes = []config.Route{{Name: "mirror", From: "edge/kafka", To: []string{"hq/kafka"},
			Topics: config.TopicFilter{Include: opts.Include}, Rename: opts.Rename, StartAt: "earliest", Discover: time.Second}}
	}
	if l.Topo, err = topology.New(f); err != nil {
		return nil, err
	}
	return l, nil
}

// clusters starts kfake for each region without an external cluster, and
// creates Options.Topics at the edge.
func (l *Lab) clusters() (err error) {
	opts := l.opts
	if opts.ProduceLatency > 0 && len(opts.HQBootstrap) > 0 {
		return errors.New("lab: ProduceLatency needs the in-process hq cluster, not HQBootstrap")
	}
	l.edgeSeeds, l.hqSeeds = opts.EdgeBootstrap, opts.HQBootstrap
	if len(l.edgeSeeds) == 0 {
		kopts := []kfake.Opt{kfake.NumBrokers(1)}
		if len(opts.Topics) > 0 {
			kopts = append(kopts, kfake.SeedTopics(opts.Partitions, opts.Topics...))
		}
		if l.Edge, err = kfake.NewCluster(kopts...); err != nil {
			return fmt.Errorf("lab: edge cluster: %w", err)
		}
		l.edgeSeeds = l.Edge.ListenAddrs()
	}
	if l.edgeOpts, err = clientOpts("edge", l.edgeSeeds, opts.EdgeSASL); err != nil {
		return err
	}
	if len(opts.EdgeBootstrap) > 0 && len(opts.Topics) > 0 {
		if err := createTopics(l.EdgeOpts(), opts.Partitions, opts.Topics); err != nil {
			return fmt.Errorf("lab: edge cluster %v: %w", l.edgeSeeds, err)
		}
	}
	if len(l.hqSeeds) == 0 {
		if l.HQ, err = kfake.NewCluster(kfake.NumBrokers(1)); err != nil {
			return fmt.Errorf("lab: hq cluster: %w", err)
		}
		l.hqSeeds = l.HQ.ListenAddrs()
	}
	l.hqOpts, err = clientOpts("hq", l.hqSeeds, opts.HQSASL)
	return err
}

// createTopics creates topics with parts partitions and one replica; topics
// that exist already are left as they are.
func createTopics(opts []kgo.Opt, parts int32, topics []string) error {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := kadm.NewClient(cl).CreateTopics(ctx, parts, 1, nil, topics...)
	if err != nil {
		return fmt.Errorf("create topics %v: %w", topics, err)
	}
	for _, r := range res.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", r.Topic, r.Err)
		}
	}
	return nil
}

func freeUDPAddr() (string, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.LocalAddr().String(), nil
}

// EdgeOpts and HQOpts reach the clusters, with the gateways' credentials.
func (l *Lab) EdgeOpts() []kgo.Opt { return slices.Clone(l.edgeOpts) }
func (l *Lab) HQOpts() []kgo.Opt   { return slices.Clone(l.hqOpts) }

// EdgeBootstrap and HQBootstrap are the clusters' seed brokers.
func (l *Lab) EdgeBootstrap() []string { return l.edgeSeeds }
func (l *Lab) HQBootstrap() []string   { return l.hqSeeds }

// clientOpts are the options the gateway of region uses on its cluster.
func clientOpts(region string, seeds []string, sasl *config.SASL) ([]kgo.Opt, error) {
	opts, err := kafkaopt.Opts(&topology.Cluster{Region: &topology.Region{Name: region}, Name: "kafka", Kind: "kafka", Bootstrap: seeds, SASL: sasl}, nil)
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	return opts, nil
}

// RenameTopic is the route's destination name for a source topic.
func (l *Lab) RenameTopic(t string) string {
	return strings.NewReplacer("{topic}", t, "{source_region}", "edge", "{source_cluster}", "kafka").Replace(l.opts.Rename)
}

// Start builds and runs the named gateway in the background.
func (l *Lab) Start(name string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.running[name] != nil {
		return fmt.Errorf("lab: gateway %s already running", name)
	}
	cert := l.certs[name]
	if cert == nil {
		return fmt.Errorf("lab: no gateway %s", name)
	}
	admin := "-"
	if l.opts.Admin {
		admin = "127.0.0.1:0"
	}
	gw, err := gateway.New(gateway.Options{
		Topology: l.Topo, Name: name, Logger: l.opts.Logger,
		ServerTLS: l.ca.ServerConfig(cert), ClientTLS: l.ca.ClientConfig(cert, ""),
		AdminAddr: admin, Window: l.opts.Window, MaxBatchBytes: l.opts.MaxBatchBytes,
	})
	if err != nil {
		return err
	}
	// Bind before Run, so that a port in use fails Start, not the
	// background Run.
	if err := gw.Bind(); err != nil {
		return err
	}
	l.goLocked(name, gw)
	return nil
}

// Close stops the gateways, the proxy and the clusters.
func (l *Lab) Close() error {
	var errs []error
	// Senders first, so the receiver drains what they have in flight.
	for _, n := range []string{EdgeGateway, HQGateway} {
		errs = append(errs, l.Stop(n))
	}
	if l.Proxy != nil {
		errs = append(errs, l.Proxy.Close())
	}
	if l.Edge != nil {
		l.Edge.Close()
	}
	if l.HQ != nil {
		l.HQ.Close()
	}
	return errors.Join(errs...)
}
