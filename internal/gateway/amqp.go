package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/amqp"
)

// amqpBroker turns a link's amqp block into transport/amqp's Broker,
// loading its TLS files. Problems name the setting.
func amqpBroker(l *topology.Link) (amqp.Broker, error) {
	where := l.Path + ".amqp"
	a := l.AMQP
	if a == nil {
		return amqp.Broker{}, &SettingError{where, fmt.Errorf("link %s has transport amqp but no broker", l.Name)}
	}
	return brokerOf(where, a.URL, a.SASL, a.TLS)
}

// brokerOf is the Broker of an amqp block (a link's or a cluster's) at
// where, with its TLS files loaded.
func brokerOf(where, url string, sasl *config.SASL, t *config.TLS) (amqp.Broker, error) {
	b := amqp.Broker{URL: url}
	if s := sasl; s != nil {
		b.SASL, b.Username, b.Password = s.Mechanism, s.Username, s.Password.Reveal()
	}
	if t != nil && (t.Enabled == nil || *t.Enabled) {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // user's explicit choice
		if t.CAFile != "" {
			pem, err := os.ReadFile(t.CAFile)
			if err != nil {
				return b, &SettingError{where + ".tls.ca_file", err}
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return b, &SettingError{where + ".tls.ca_file", fmt.Errorf("%s: no PEM certificates", t.CAFile)}
			}
			cfg.RootCAs = pool
		}
		if t.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
			if err != nil {
				return b, &SettingError{where + ".tls.cert_file", err}
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		b.TLS = cfg
	}
	return b, nil
}

// prefix is the link's address prefix.
func amqpPrefix(l *topology.Link) string {
	if l.AMQP != nil && l.AMQP.AddressPrefix != "" {
		return l.AMQP.AddressPrefix
	}
	return amqp.DefaultAddressPrefix
}

// amqpDialer builds the dialer of an outbound amqp link: this gateway's
// direction of it to peer p.
func (g *Gateway) amqpDialer(p *routing.Peer, codec transport.Codec) (transport.Dialer, error) {
	b, err := amqpBroker(p.Link)
	if err != nil {
		return nil, err
	}
	d, err := amqp.NewDialer(amqp.DialerOptions{
		Broker:    b,
		Addresses: amqp.AddressesFor(amqpPrefix(p.Link), p.Link.Name, g.table.Gateway.Name, p.Gateway.Name),
		Codec:     codec,
		Timing:    g.opts.AMQPTiming,
		Logger:    g.log.With("component", "link", "peer", p.Gateway.Name, "transport", "amqp"),
	})
	if err != nil {
		return nil, &SettingError{p.Link.Path + ".amqp", fmt.Errorf("link %s: %w", p.Link.Name, err)}
	}
	return d, nil
}

// checkAMQPIn checks the brokers of inbound amqp links (their TLS files)
// when the gateway is built, as dialers does for outbound ones, so that
// validate finds what Bind would.
func (g *Gateway) checkAMQPIn() []error {
	var problems []error
	seen := map[string]bool{}
	for _, l := range g.table.In {
		if l.Link.Transport != "amqp" || seen[l.Link.Name] {
			continue
		}
		seen[l.Link.Name] = true
		if _, err := amqpBroker(l.Link); err != nil {
			problems = append(problems, err)
		}
	}
	return problems
}

// amqpListeners opens one broker listener per inbound amqp link, for the
// directions from every gateway that may send this gateway the link's
// legs.
func (g *Gateway) amqpListeners(accept transport.Accept) ([]transport.Listener, error) {
	links := map[string]*topology.Link{}
	senders := map[string]map[string]bool{} // link → sending gateways
	for _, l := range g.table.In {
		if l.Link.Transport != "amqp" {
			continue
		}
		links[l.Link.Name] = l.Link
		if senders[l.Link.Name] == nil {
			senders[l.Link.Name] = map[string]bool{}
		}
		for _, gw := range l.From.Region.Gateways {
			if l.SentBy(gw) {
				senders[l.Link.Name][gw.Name] = true
			}
		}
	}
	names := make([]string, 0, len(links))
	for n := range links {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []transport.Listener
	fail := func(err error) ([]transport.Listener, error) {
		for _, ln := range out {
			ln.Close()
		}
		return nil, err
	}
	for _, n := range names {
		l := links[n]
		b, err := amqpBroker(l)
		if err != nil {
			return fail(err)
		}
		var peers []amqp.Peer
		for gw := range senders[n] {
			peers = append(peers, amqp.Peer{Gateway: gw, Addresses: amqp.AddressesFor(amqpPrefix(l), l.Name, gw, g.table.Gateway.Name)})
		}
		sort.Slice(peers, func(i, j int) bool { return peers[i].Gateway < peers[j].Gateway })
		if len(peers) == 0 {
			continue
		}
		ln, err := amqp.Listen(amqp.ListenerOptions{
			Broker: b, Peers: peers, Accept: accept, Timing: g.opts.AMQPTiming,
			Logger: g.log.With("component", "link", "link", l.Name, "transport", "amqp"),
		})
		if err != nil {
			return fail(&SettingError{l.Path + ".amqp", fmt.Errorf("link %s: %w", l.Name, err)})
		}
		out = append(out, ln)
		g.amqp.add(l.Name, ln)
	}
	return out, nil
}

// amqpState holds the AMQP listeners the gateway opened, by link.
type amqpState struct {
	mu  sync.Mutex
	lns []amqpLink
}

type amqpLink struct {
	link string
	ln   *amqp.Listener
}

func (s *amqpState) add(link string, ln *amqp.Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lns = append(s.lns, amqpLink{link, ln})
}

func (s *amqpState) links() []amqpLink {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]amqpLink(nil), s.lns...)
}

// amqpCollector exports the AMQP links' broker listeners
// (transport/amqp ListenerStats): whether each holds its broker
// connection, connections opened and failed, receivers' flow sent again
// after a stall, and the batch messages held for their Ack per peer. A
// gateway without amqp links exports none of these series.
type amqpCollector struct{ g *Gateway }

var (
	descAMQPConnected  = prometheus.NewDesc("meridian_amqp_broker_connected", "1 while the AMQP link's listener holds its broker connection.", []string{"link", "broker"}, nil)
	descAMQPConnects   = prometheus.NewDesc("meridian_amqp_broker_connects_total", "Broker connections the AMQP link's listener opened.", []string{"link", "broker"}, nil)
	descAMQPFailures   = prometheus.NewDesc("meridian_amqp_broker_failures_total", "Broker connection attempts and connections of the AMQP link's listener that failed (then retried with backoff).", []string{"link", "broker"}, nil)
	descAMQPFlowResent = prometheus.NewDesc("meridian_amqp_flow_resent_total", "Flow frames sent again to a data receiver that was silent with credit granted (the broker stopped delivering).", []string{"link", "broker"}, nil)
	descAMQPHeld       = prometheus.NewDesc("meridian_amqp_messages_held", "Batch messages received and held unsettled until the destination commit acknowledges them, by sending gateway.", []string{"link", "peer"}, nil)
)

func (c amqpCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAMQPConnected, descAMQPConnects, descAMQPFailures, descAMQPFlowResent, descAMQPHeld} {
		ch <- d
	}
}

func (c amqpCollector) Collect(ch chan<- prometheus.Metric) {
	for _, l := range c.g.amqp.links() {
		st := l.ln.Stats()
		up := 0.0
		if st.Connected {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descAMQPConnected, prometheus.GaugeValue, up, l.link, st.Broker)
		ch <- prometheus.MustNewConstMetric(descAMQPConnects, prometheus.CounterValue, float64(st.Connects), l.link, st.Broker)
		ch <- prometheus.MustNewConstMetric(descAMQPFailures, prometheus.CounterValue, float64(st.Failures), l.link, st.Broker)
		ch <- prometheus.MustNewConstMetric(descAMQPFlowResent, prometheus.CounterValue, float64(st.FlowResent), l.link, st.Broker)
		for _, p := range st.Peers {
			ch <- prometheus.MustNewConstMetric(descAMQPHeld, prometheus.GaugeValue, float64(p.Held), l.link, p.Gateway)
		}
	}
}

// multiListener merges several listeners: Accept returns the next session
// of any of them. It owns one goroutine per listener, which Close waits
// for.
type multiListener struct {
	lns    []transport.Listener
	conns  chan transport.Conn
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

func newMultiListener(lns []transport.Listener) *multiListener {
	ctx, cancel := context.WithCancel(context.Background())
	m := &multiListener{lns: lns, conns: make(chan transport.Conn), ctx: ctx, cancel: cancel}
	for _, ln := range lns {
		m.wg.Go(func() {
			for {
				c, err := ln.Accept(ctx)
				if err != nil {
					return
				}
				select {
				case m.conns <- c:
				case <-ctx.Done():
					c.Close(errors.New("listener closed"))
					return
				}
			}
		})
	}
	return m
}

func (m *multiListener) Accept(ctx context.Context) (transport.Conn, error) {
	select {
	case c := <-m.conns:
		return c, nil
	case <-m.ctx.Done():
		return nil, transport.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Addr is the first listener's address (the QUIC one when there is one).
func (m *multiListener) Addr() net.Addr { return m.lns[0].Addr() }

func (m *multiListener) Close() error {
	var errs []error
	m.once.Do(func() {
		m.cancel()
		for _, ln := range m.lns {
			errs = append(errs, ln.Close())
		}
		m.wg.Wait()
	})
	return errors.Join(errs...)
}
