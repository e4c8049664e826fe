package gateway

import (
	"fmt"

	"github.com/meridian-gw/meridian/mirror"
	"github.com/meridian-gw/meridian/mirror/amqpsink"
	"github.com/meridian-gw/meridian/mirror/amqpsource"
	"github.com/meridian-gw/meridian/mirror/cloudevents"
	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/topology"
)

// checkAMQPEndpoints checks the amqp clusters this gateway reads or
// writes (their brokers' TLS files, the codec settings), and that a
// gateway writing one has a state_dir for the progress, so that validate
// says so instead of run failing later.
func (g *Gateway) checkAMQPEndpoints() []error {
	var problems []error
	for _, c := range sourceClusters(g.table) {
		if _, err := sourceCluster(c); err != nil {
			problems = append(problems, err)
		}
	}
	seen := map[string]bool{}
	for _, c := range sinkClusters(g.table) {
		if _, err := sinkCluster(c); err != nil {
			problems = append(problems, err)
		}
		if gw := g.table.Gateway; gw.StateDir == "" && !seen[gw.Name] {
			seen[gw.Name] = true
			problems = append(problems, &SettingError{gw.Path + ".state_dir",
				fmt.Errorf("missing; gateway %s writes amqp cluster %s and keeps that progress in its state_dir", gw.Name, c.Ref())})
		}
	}
	return problems
}

// sinkClusters are the amqp clusters the inbound legs of table write.
func sinkClusters(table *routing.Table) []*topology.Cluster {
	var out []*topology.Cluster
	seen := map[string]bool{}
	for _, l := range table.In {
		if l.To.Kind == "amqp" && !seen[l.To.Ref()] {
			seen[l.To.Ref()] = true
			out = append(out, l.To)
		}
	}
	return out
}

// sinkCluster is what amqpsink needs of cluster c.
func sinkCluster(c *topology.Cluster) (amqpsink.Cluster, error) {
	sc, err := sourceCluster(c)
	if err != nil {
		return amqpsink.Cluster{}, err
	}
	return amqpsink.Cluster{Broker: sc.Broker, Prefix: sc.Prefix, DeadLetter: sc.DeadLetter, Codec: sc.Codec}, nil
}

// amqpSinks is the engine's OpenWriter for the amqp clusters table writes
// (nil when it writes none). New has checked them (checkAMQPEndpoints).
func (g *Gateway) amqpSinks(table *routing.Table) mirror.OpenWriter {
	clusters := map[string]amqpsink.Cluster{}
	for _, c := range sinkClusters(table) {
		sc, err := sinkCluster(c)
		if err != nil {
			g.log.Error("amqp sink cluster", "cluster", c.Ref(), "err", err)
			continue
		}
		clusters[c.Ref()] = sc
	}
	if len(clusters) == 0 {
		return nil
	}
	op, err := amqpsink.New(amqpsink.Options{Clusters: clusters, StateDir: table.Gateway.StateDir, Logger: g.log, Registerer: g.reg})
	if err != nil {
		g.log.Error("amqp sinks", "err", err)
		return nil
	}
	return op.Open
}

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
