package main

import (
	"fmt"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/internal/kafkaopt"
	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/topology"
)

// loadTopology reads, validates and resolves a topology file.
func (g *globals) loadTopology(file string) (*topology.Topology, error) {
	_, topo, err := g.loadFile(file)
	return topo, err
}

// loadFile is loadTopology that also returns the file, for placing
// problems (config.File.ErrorAt) and reading its warnings. The file's
// secrets (values from ${ENV}) are redacted from the command's output from
// then on.
func (g *globals) loadFile(file string) (*config.File, *topology.Topology, error) {
	return g.loadFileWith(file, config.Options{})
}

// loadFileWith is loadFile with config options (validate's lenient ${ENV}).
func (g *globals) loadFileWith(file string, o config.Options) (*config.File, *topology.Topology, error) {
	f, err := config.LoadWith(file, o)
	if err != nil {
		return nil, nil, err
	}
	g.secrets.Add(f.Secrets()...)
	topo, err := topology.New(f)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", file, err)
	}
	return f, topo, nil
}

// legClusters returns client options for a leg's source and destination.
func legClusters(leg *routing.Leg, log *slog.Logger) (src, dst []kgo.Opt, err error) {
	if src, err = kafkaopt.Opts(leg.From, log); err != nil {
		return nil, nil, err
	}
	if dst, err = kafkaopt.Opts(leg.To, log); err != nil {
		return nil, nil, err
	}
	return src, dst, nil
}

// routeLegs returns the legs of a route (to one destination if to is set).
func routeLegs(topo *topology.Topology, route, to string) ([]*routing.Leg, error) {
	var rt *topology.Route
	for _, r := range topo.Routes {
		if r.Name == route {
			rt = r
		}
	}
	if rt == nil {
		return nil, fmt.Errorf("no route %q", route)
	}
	gws := rt.From.Region.Gateways
	if len(gws) == 0 {
		return nil, fmt.Errorf("route %s: region %s has no gateway", route, rt.From.Region.Name)
	}
	// Any gateway of the source region may send a leg (a pinned link lets
	// only one): take each leg from the first gateway that sends it.
	var legs []*routing.Leg
	seen := map[string]bool{}
	for _, gw := range gws {
		table, err := routing.Compile(topo, gw.Name)
		if err != nil {
			return nil, err
		}
		for _, p := range table.Out {
			for _, l := range p.Legs {
				if l.Route == rt && (to == "" || l.To.Ref() == to) && !seen[l.ID] {
					seen[l.ID] = true
					legs = append(legs, l)
				}
			}
		}
	}
	if len(legs) == 0 {
		return nil, fmt.Errorf("route %s has no destination %q", route, to)
	}
	return legs, nil
}

// routeCommand does what every route command does first: check --output,
// build the logger, load the topology and find the route's legs (to one
// destination when to is set). Its errors carry the exit status.
func routeCommand(g *globals, output, file, route, to string) (*slog.Logger, []*routing.Leg, error) {
	log, err := g.start(output)
	if err != nil {
		return nil, nil, err
	}
	topo, err := g.loadTopology(file)
	if err != nil {
		return nil, nil, &exitError{1, err}
	}
	legs, err := routeLegs(topo, route, to)
	if err != nil {
		return nil, nil, &exitError{1, fmt.Errorf("%s: %w", file, err)}
	}
	return log, legs, nil
}
