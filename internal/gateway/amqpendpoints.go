package gateway

import (
	"errors"
	"fmt"

	"github.com/meridian-gw/meridian/mirror"
	"github.com/meridian-gw/meridian/mirror/amqpsource"
	"github.com/meridian-gw/meridian/mirror/cloudevents"
	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/topology"
)

// checkAMQPEndpoints checks the amqp clusters this gateway reads (their
// brokers' TLS files, the codec settings) and refuses the legs that write
// one, which this build cannot carry yet, so that validate says so instead
// of run failing later.
func (g *Gateway) checkAMQPEndpoints() []error {
	var problems []error
	seen := map[string]bool{}
	for _, c := range sourceClusters(g.table) {
		if _, err := sourceCluster(c); err != nil {
			problems = append(problems, err)
		}
	}
	for _, l := range g.table.In {
		if l.To.Kind == "amqp" && !seen[l.Route.Name] {
			seen[l.Route.Name] = true
			problems = append(problems, &SettingError{l.To.Path + ".kind",
				fmt.Errorf("route %s: destination %s is an amqp cluster: %w", l.Route.Name, l.To.Ref(), errAMQPSinkUnsupported)})
		}
	}
	return problems
}

var errAMQPSinkUnsupported = errors.New("amqp clusters are sources only in this build; a route into one is not carried yet")

// sourceClusters are the amqp clusters the legs of table read.
func sourceClusters(table *routing.Table) []*topology.Cluster {
	var out []*topology.Cluster
	seen := map[string]bool{}
	for _, p := range table.Out {
		for _, l := range p.Legs {
			if l.From.Kind == "amqp" && !seen[l.From.Ref()] {
				seen[l.From.Ref()] = true
				out = append(out, l.From)
			}
		}
	}
	return out
}

// sourceCluster is what amqpsource needs of cluster c.
func sourceCluster(c *topology.Cluster) (amqpsource.Cluster, error) {
	a := c.AMQP
	where := c.Path + ".amqp"
	if a == nil {
		return amqpsource.Cluster{}, &SettingError{where, fmt.Errorf("cluster %s has kind amqp but no broker", c.Ref())}
	}
	b, err := brokerOf(where, a.URL, a.SASL, a.TLS)
	if err != nil {
		return amqpsource.Cluster{}, err
	}
	mode, err := cloudevents.ParseMode(a.Mode)
	if err != nil {
		return amqpsource.Cluster{}, &SettingError{where + ".mode", err}
	}
	sc := amqpsource.Cluster{Broker: b, Prefix: a.AddressPrefix, Addresses: a.Addresses, DeadLetter: a.DeadLetter,
		Codec: cloudevents.Options{Mode: mode, KeyProperty: a.KeyProperty, KeyRequired: a.KeyRequired, MaxBytes: int(a.MaxMessageBytes)}}
	if _, err := amqpsource.New(amqpsource.Options{Clusters: map[string]amqpsource.Cluster{c.Ref(): sc}}); err != nil {
		return amqpsource.Cluster{}, &SettingError{where, err}
	}
	return sc, nil
}

// amqpSources is the engine's OpenSource for the amqp clusters table reads
// (nil when it reads none). New has checked them (checkAMQPEndpoints).
func (g *Gateway) amqpSources(table *routing.Table) mirror.OpenSource {
	clusters := map[string]amqpsource.Cluster{}
	for _, c := range sourceClusters(table) {
		sc, err := sourceCluster(c)
		if err != nil {
			g.log.Error("amqp source cluster", "cluster", c.Ref(), "err", err)
			continue
		}
		clusters[c.Ref()] = sc
	}
	if len(clusters) == 0 {
		return nil
	}
	op, err := amqpsource.New(amqpsource.Options{Clusters: clusters, StateDir: table.Gateway.StateDir,
		Logger: g.log, Registerer: g.reg})
	if err != nil {
		g.log.Error("amqp sources", "err", err)
		return nil
	}
	return op.Open
}
