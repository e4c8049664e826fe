package lab

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"gopkg.in/yaml.v3"

	"github.com/meridian-gw/meridian/chaos"
	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/internal/gateway"
	"github.com/meridian-gw/meridian/internal/kafkaopt"
	"github.com/meridian-gw/meridian/internal/pki"
	"github.com/meridian-gw/meridian/internal/units"
	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/topology"
)

// FleetOptions configure NewFleet. Zero values are documented per field.
type FleetOptions struct {
	// Logger for gateways and proxies; nil discards.
	Logger *slog.Logger
	// KfakeOpts are extra kfake options for the cluster "region/cluster"
	// (nil: one broker, nothing else). Fleet.Cluster gives the running
	// cluster, for ControlKey hooks.
	KfakeOpts map[string][]kfake.Opt
	// Partitions of each generated source topic; zero: 3.
	Partitions int32
	// TopicsPerRoute is how many source topics are generated per route
	// include pattern that is not a literal name; zero: 2.
	TopicsPerRoute int
	// Seed for the impairment proxies; zero picks one per proxy.
	Seed uint64
	// Window and MaxBatchBytes tune the engines; zero: defaults.
	Window, MaxBatchBytes int64
}

// Fleet runs a whole topology file in one process: every cluster of the
// file is an in-process kfake cluster on loopback, every gateway runs
// in-process with a certificate from a CA made for the run, addresses are
// rewritten to free 127.0.0.1 ports, and every link a gateway dials goes
// through a UDP impairment proxy with the link's profile.
//
// Gateways are started and stopped explicitly (Start, Stop, StartAll);
// Close stops everything, and may be called more than once.
type Fleet struct {
	// File is the topology as it runs: the caller's file, rewritten.
	File *config.File
	Topo *topology.Topology
	// Notes say what the rewrite changed beyond addresses (dropped SASL,
	// TLS, admin tokens, generated gossip keys).
	Notes []string
	// Topics are the generated source topics by cluster ref, which the
	// fleet's producer writes to.
	Topics map[string][]string

	opts     FleetOptions
	clusters map[string]*kfake.Cluster
	ca       *pki.CA
	certs    map[string]*pki.Cert
	proxies  map[string][]*chaos.UDPProxy // by link name
	proxyAt  map[string]*chaos.UDPProxy   // by link name and target, "link|addr"
	dialVia  map[string]map[string]string // gateway → peer gateway → address dialled
	legs     map[string]*routing.Leg      // by leg ID, from the sending gateways' tables
	names    []string                     // gateway names in file order
	fleetCounters
	gatewaySet      // the running gateways, by name; its mu guards closed too
	closed     bool // guarded by mu
}

// LoadFleetFile reads a topology file for NewFleet. Every ${NAME} gets a
// value generated for the run (32 random bytes in base64: a valid gossip
// key, long enough for an admin token), never the environment's: the
// fleet runs nothing that needs a real secret. The names are returned.
func LoadFleetFile(path string) (*config.File, []string, error) {
	gen := map[string]string{}
	var names []string
	f, err := config.LoadWith(path, config.Options{LookupEnv: func(name string) (string, bool) {
		if v, ok := gen[name]; ok {
			return v, true
		}
		k := make([]byte, 32)
		_, _ = rand.Read(k)
		gen[name] = base64.StdEncoding.EncodeToString(k)
		names = append(names, name)
		return gen[name], true
	}})
	if err != nil {
		return nil, nil, err
	}
	return f, names, nil
}

// NewFleet rewrites f (which it takes over; load it with LoadFleetFile or
// config.Load) for one process and starts its clusters and proxies; no
// gateway runs yet.
func NewFleet(f *config.File, o FleetOptions) (_ *Fleet, err error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Partitions == 0 {
		o.Partitions = 3
	}
	if o.TopicsPerRoute == 0 {
		o.TopicsPerRoute = 2
	}
	fl := &Fleet{File: f, opts: o, Topics: map[string][]string{}, clusters: map[string]*kfake.Cluster{},
		certs: map[string]*pki.Cert{}, proxies: map[string][]*chaos.UDPProxy{}, proxyAt: map[string]*chaos.UDPProxy{}, dialVia: map[string]map[string]string{},
		legs: map[string]*routing.Leg{}}
	defer func() {
		if err != nil {
			fl.Close()
		}
	}()
	for _, l := range f.Links {
		if l.Transport == "amqp" {
			return nil, fmt.Errorf("fleet: link %s: amqp links need a broker; the in-process fleet runs quic links only", l.Name)
		}
	}
	if err := fl.genTopics(); err != nil {
		return nil, err
	}
	if err := fl.rewrite(); err != nil {
		return nil, err
	}
	if fl.Topo, err = topology.New(f); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	if fl.ca, err = pki.NewCA("meridian-fleet", 24*time.Hour); err != nil {
		return nil, err
	}
	for _, name := range fl.names {
		if fl.certs[name], err = fl.ca.Issue(name, []string{"127.0.0.1", "localhost"}); err != nil {
			return nil, err
		}
	}
	if err := fl.tables(); err != nil {
		return nil, err
	}
	return fl, nil
}

// rewrite starts the clusters and points the file at them, and moves every
// gateway address to a free loopback port.
func (fl *Fleet) rewrite() error {
	f := fl.File
	note := func(format string, args ...any) { fl.Notes = append(fl.Notes, fmt.Sprintf(format, args...)) }
	for ri := range f.Regions {
		r := &f.Regions[ri]
		for ci := range r.Clusters {
			c := &r.Clusters[ci]
			ref := r.Name + "/" + c.Name
			kopts := append([]kfake.Opt{kfake.NumBrokers(1)}, fl.opts.KfakeOpts[ref]...)
			if ts := fl.Topics[ref]; len(ts) > 0 {
				kopts = append(kopts, kfake.SeedTopics(fl.opts.Partitions, ts...))
			}
			kc, err := kfake.NewCluster(kopts...)
			if err != nil {
				return fmt.Errorf("fleet: cluster %s: %w", ref, err)
			}
			fl.clusters[ref] = kc
			c.Bootstrap = kc.ListenAddrs()
			if c.SASL != nil || c.TLS != nil {
				note("cluster %s: SASL and TLS dropped (in-process kfake on loopback)", ref)
				c.SASL, c.TLS = nil, nil
			}
		}
		for gi := range r.Gateways {
			g := &r.Gateways[gi]
			fl.names = append(fl.names, g.Name)
			if g.Listen != "" {
				addr, err := freeUDPAddr()
				if err != nil {
					return err
				}
				g.Listen, g.Advertise = addr, addr
			}
			addr, err := freeTCPAddr()
			if err != nil {
				return err
			}
			if g.Admin == nil {
				g.Admin = &config.Admin{}
			}
			if g.Admin.Token != "" || g.Admin.MTLS {
				note("gateway %s: admin token and mtls dropped (open on loopback)", g.Name)
			}
			g.Admin.Listen, g.Admin.Token, g.Admin.MTLS = addr, "", false
			if g.TLS != nil {
				g.TLS = nil // certificates from the fleet's own CA, in memory
			}
			if gg := g.Gossip; gg != nil {
				if gg.Listen, err = freeUDPAddr(); err != nil {
					return err
				}
				gg.Advertise = gg.Listen
				if gg.Region != "" {
					if gg.Region, err = freeUDPTCPAddr(); err != nil {
						return err
					}
				}
			}
		}
	}
	note("gateway link certificates from a CA made for this run")
	if g := f.Gossip; g != nil && len(g.Keys) > 0 {
		for i := range g.Keys {
			k := make([]byte, 32)
			_, _ = rand.Read(k)
			g.Keys[i] = config.Secret(base64.StdEncoding.EncodeToString(k))
		}
		note("gossip keys generated for this run")
	}
	if t := f.TLS; t != nil && t.CRL != "" {
		note("tls.crl %s dropped (the run's CA signed no CRL)", t.CRL)
		t.CRL = ""
	}
	return nil
}

// tables compiles every gateway's forwarding table: it starts one
// impairment proxy per link and dialled gateway, and collects the legs.
func (fl *Fleet) tables() error {
	for _, name := range fl.names {
		tbl, err := routing.Compile(fl.Topo, name)
		if err != nil {
			return fmt.Errorf("fleet: %w", err)
		}
		for _, p := range slices.Concat(tbl.Out, tbl.Relays) {
			for _, l := range p.Legs {
				if fl.legs[l.ID] == nil {
					fl.legs[l.ID] = l
				}
			}
			if !p.Dials || p.Link == nil || p.Link.Path == "" {
				continue // the peer dials, or a local link inside a region
			}
			px, err := fl.proxyFor(p.Link, p.Gateway)
			if err != nil {
				return err
			}
			if fl.dialVia[name] == nil {
				fl.dialVia[name] = map[string]string{}
			}
			fl.dialVia[name][p.Gateway.Name] = px.Addr().String()
		}
	}
	return nil
}

// proxyFor returns the impairment proxy of link in front of gateway g,
// starting it on first use.
func (fl *Fleet) proxyFor(l *topology.Link, g *topology.Gateway) (*chaos.UDPProxy, error) {
	target := g.Listen
	if px := fl.proxyAt[l.Name+"|"+target]; px != nil {
		return px, nil
	}
	if target == "" {
		return nil, fmt.Errorf("fleet: link %s: gateway %s is dialled but has no listen address", l.Name, g.Name)
	}
	p, err := chaos.LoadProfile(l.Profile)
	if err != nil {
		return nil, fmt.Errorf("fleet: link %s: %w", l.Name, err)
	}
	px, err := chaos.NewUDPProxy(chaos.UDPProxyOptions{Target: target, Profile: p, Seed: fl.opts.Seed,
		Logger: fl.opts.Logger.With("link", l.Name)})
	if err != nil {
		return nil, fmt.Errorf("fleet: link %s: impairment proxy: %w", l.Name, err)
	}
	fl.proxies[l.Name] = append(fl.proxies[l.Name], px)
	fl.proxyAt[l.Name+"|"+target] = px
	return px, nil
}

// Proxies are the impairment proxies of the named link (one per dialled
// gateway), nil for an unknown link.
func (fl *Fleet) Proxies(link string) []*chaos.UDPProxy { return fl.proxies[link] }

// Blackout blacks out every proxy of the named link for d, from now.
func (fl *Fleet) Blackout(link string, d time.Duration) error {
	pxs := fl.proxies[link]
	if len(pxs) == 0 {
		return fmt.Errorf("fleet: no link %q with a proxy (links: %s)", link, strings.Join(fl.LinkNames(), ", "))
	}
	for _, px := range pxs {
		px.Blackout(d)
	}
	return nil
}

// LinkNames are the links that have impairment proxies, sorted.
func (fl *Fleet) LinkNames() []string {
	var ns []string
	for n := range fl.proxies {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

// Gateways are the gateway names in file order.
func (fl *Fleet) Gateways() []string { return slices.Clone(fl.names) }

// Cluster is the in-process cluster "region/cluster", or nil.
func (fl *Fleet) Cluster(ref string) *kfake.Cluster { return fl.clusters[ref] }

// ClusterOpts reach the cluster "region/cluster" as the gateways do.
func (fl *Fleet) ClusterOpts(ref string) ([]kgo.Opt, error) {
	c := fl.Topo.Clusters[ref]
	if c == nil {
		return nil, fmt.Errorf("fleet: no cluster %s", ref)
	}
	return kafkaopt.Opts(c, nil)
}

// Start builds and runs the named gateway in the background.
func (fl *Fleet) Start(name string) error {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.closed {
		return errors.New("fleet: closed")
	}
	if fl.running[name] != nil {
		return fmt.Errorf("fleet: gateway %s already running", name)
	}
	cert := fl.certs[name]
	if cert == nil {
		return fmt.Errorf("fleet: no gateway %s", name)
	}
	via := fl.dialVia[name]
	gw, err := gateway.New(gateway.Options{
		Topology: fl.Topo, Name: name, Logger: fl.opts.Logger,
		ServerTLS: fl.ca.ServerConfig(cert), ClientTLS: fl.ca.ClientConfig(cert, ""),
		Window: fl.opts.Window, MaxBatchBytes: fl.opts.MaxBatchBytes,
		PeerAddr: func(peer, addr string) string {
			if a, ok := via[peer]; ok {
				return a
			}
			return addr
		},
	})
	if err != nil {
		return err
	}
	if err := gw.Bind(); err != nil {
		return err
	}
	fl.goLocked(name, gw)
	return nil
}

// StartAll starts every gateway, in file order.
func (fl *Fleet) StartAll() error {
	for _, n := range fl.names {
		if err := fl.Start(n); err != nil {
			return err
		}
	}
	return nil
}

// AdminAddrs are the gateways' admin addresses by name.
func (fl *Fleet) AdminAddrs() map[string]string {
	m := map[string]string{}
	for _, g := range fl.Topo.Gateways {
		m[g.Name] = g.Admin
	}
	return m
}

// WriteFile writes the running topology as a topology file to path, and
// the run's CA and gateway certificates to the directory certs next to
// it (the file's tls settings name them), so that the file loads
// (meridian validate -f) as it is. Generated gossip keys are written as
// they are (generated for the run).
func (fl *Fleet) WriteFile(path string) error {
	certs := filepath.Join(filepath.Dir(path), "certs")
	if err := fl.ca.WriteFiles(certs); err != nil {
		return fmt.Errorf("fleet: write certificates: %w", err)
	}
	cp := *fl.File
	cp.Regions = slices.Clone(cp.Regions)
	for ri := range cp.Regions {
		r := &cp.Regions[ri]
		r.Gateways = slices.Clone(r.Gateways)
		for gi := range r.Gateways {
			g := &r.Gateways[gi]
			if err := fl.certs[g.Name].WriteFiles(certs); err != nil {
				return fmt.Errorf("fleet: write certificates: %w", err)
			}
			g.TLS = &config.TLS{CAFile: filepath.Join(certs, pki.CACertFile),
				CertFile: filepath.Join(certs, g.Name+".crt"), KeyFile: filepath.Join(certs, g.Name+".key")}
		}
	}
	var n yaml.Node
	if err := n.Encode(&cp); err != nil {
		return fmt.Errorf("fleet: write topology: %w", err)
	}
	tidyNode(&n)
	if g := fl.File.Gossip; g != nil {
		// The keys were generated for the run (rewrite): no secret of the
		// user's, and the file must load.
		if keys := nodeAt(&n, "gossip", "keys"); keys != nil && len(keys.Content) == len(g.Keys) {
			for i, k := range g.Keys {
				keys.Content[i].Value = k.Reveal()
			}
		}
	}
	b, err := yaml.Marshal(&n)
	if err != nil {
		return fmt.Errorf("fleet: write topology: %w", err)
	}
	head := "# The running in-process fleet of `meridian demo --topology`: every address is on 127.0.0.1.\n"
	return os.WriteFile(path, append([]byte(head), b...), 0o600)
}

// tidyNode drops unset values (zero, empty, false) from an encoded
// config.File, so that it reads like a hand-written file and defaults
// stay defaults, and writes bit rates and byte sizes with their units.
func tidyNode(n *yaml.Node) {
	if n.Kind == yaml.MappingNode {
		var keep []*yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if v.Kind == yaml.ScalarNode && v.Tag == "!!int" {
				if x, err := strconv.ParseInt(v.Value, 10, 64); err == nil && x != 0 {
					switch k.Value {
					case "rate_limit":
						v.Value, v.Tag = units.BitRate(x).String(), "!!str"
					case "window":
						v.Value, v.Tag = units.ByteSize(x).String(), "!!str"
					}
				}
			}
			if unset(v) {
				continue
			}
			tidyNode(v)
			keep = append(keep, k, v)
		}
		n.Content = keep
		return
	}
	for _, c := range n.Content {
		tidyNode(c)
	}
}

// nodeAt follows mapping keys from a document node.
func nodeAt(n *yaml.Node, keys ...string) *yaml.Node {
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	for _, k := range keys {
		var next *yaml.Node
		for i := 0; n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k {
				next = n.Content[i+1]
			}
		}
		if next == nil {
			return nil
		}
		n = next
	}
	return n
}

func unset(v *yaml.Node) bool {
	switch v.Kind {
	case yaml.ScalarNode:
		return v.Tag == "!!null" || (v.Tag == "!!str" && v.Value == "") || (v.Tag == "!!int" && v.Value == "0") || (v.Tag == "!!bool" && v.Value == "false")
	case yaml.SequenceNode, yaml.MappingNode:
		return len(v.Content) == 0
	}
	return false
}

// Close stops the gateways (all at once), then the proxies and the
// clusters.
func (fl *Fleet) Close() error {
	fl.mu.Lock()
	fl.closed = true
	fl.mu.Unlock()
	// All at once: each gateway's leave is gossiped while the others are
	// still members, and drains overlap instead of adding up.
	errs := make([]error, len(fl.names))
	var wg sync.WaitGroup
	for i, n := range fl.names {
		wg.Go(func() { errs[i] = fl.Stop(n) })
	}
	wg.Wait()
	for _, pxs := range fl.proxies {
		for _, px := range pxs {
			errs = append(errs, px.Close())
		}
	}
	fl.proxies = map[string][]*chaos.UDPProxy{}
	for _, c := range fl.clusters {
		c.Close()
	}
	fl.clusters = map[string]*kfake.Cluster{}
	return errors.Join(errs...)
}

func freeTCPAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// freeUDPTCPAddr is a loopback port free for both UDP and TCP (region
// gossip binds both).
func freeUDPTCPAddr() (string, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := l.Addr().String()
		c, err := net.ListenPacket("udp", addr)
		l.Close()
		if err == nil {
			c.Close()
			return addr, nil
		}
	}
	return "", errors.New("fleet: no loopback port free for both udp and tcp")
}
