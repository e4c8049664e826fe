// Package topologytest builds topologies for tests: from a compact YAML
// string, through the same config.Parse and topology.New that `meridian run`
// uses, and a few named shapes. Only tests import it (internal/deptest
// keeps it out of production packages).
//
// The shapes name regions, clusters "kafka" and gateways "<region>-a"
// (and "-b"), listen on loopback and name certificate files that need not
// exist: routing and validation never read them.
package topologytest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/topology"
)

// File parses a topology file (YAML) named name in errors, and fails t with
// every problem if it is not valid.
func File(t testing.TB, name, yaml string) *config.File {
	t.Helper()
	f, err := config.Parse(name, []byte(yaml))
	if err != nil {
		t.Fatalf("topologytest: %s:\n%v", name, err)
	}
	return f
}

// Parse parses yaml as File does and resolves it into a topology.
func Parse(t testing.TB, yaml string) *topology.Topology {
	t.Helper()
	topo, err := topology.New(File(t, "topology.yaml", yaml))
	if err != nil {
		t.Fatalf("topologytest: %v", err)
	}
	return topo
}

// Region is the YAML of a region named name with one kafka cluster and the
// given gateways ("a" gives gateway "<name>-a"). port numbers the
// gateways' listen addresses from 127.0.0.1:port up.
func Region(name string, port int, gateways ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  - name: %s\n    clusters:\n      - {name: kafka, kind: kafka, bootstrap: [\"127.0.0.1:%d\"]}\n    gateways:\n", name, port+1000)
	for i, g := range gateways {
		gw := name + "-" + g
		fmt.Fprintf(&b, "      - {name: %s, listen: \"127.0.0.1:%d\", tls: {ca_file: ca.crt, cert_file: %s.crt, key_file: %s.key}}\n", gw, port+i, gw, gw)
	}
	return b.String()
}

// Shape assembles a file from regions (Region's output) and the YAML of
// its links and routes (each a list body, "  - ..." lines; "" for none).
func Shape(regions []string, links, routes string) string {
	var b strings.Builder
	b.WriteString("version: 1\nregions:\n")
	for _, r := range regions {
		b.WriteString(r)
	}
	if links != "" {
		b.WriteString("links:\n" + links)
	}
	if routes != "" {
		b.WriteString("routes:\n" + routes)
	}
	return b.String()
}

// TwoRegionsYAML: east (east-a) mirrors topics "^orders\." to west
// (west-a) over one lan link.
var TwoRegionsYAML = Shape(
	[]string{Region("east", 17400, "a"), Region("west", 17410, "a")},
	"  - {between: [east, west], profile: lan}\n",
	"  - {name: orders, from: east/kafka, to: [west/kafka], topics: {include: ['^orders\\.']}}\n",
)

// TwoRegions is TwoRegionsYAML's topology.
func TwoRegions(t testing.TB) *topology.Topology { t.Helper(); return Parse(t, TwoRegionsYAML) }

// HubAndSitesYAML is a hub region "hq" (hq-a) with n sites "site-1".. each
// (site-N-a) joined to the hub by a geo-satellite link and mirroring
// "^telemetry\." to the hub, renamed "{source_region}.{topic}".
func HubAndSitesYAML(n int) string {
	regions := []string{Region("hq", 17500, "a")}
	var links, routes strings.Builder
	for i := 1; i <= n; i++ {
		site := fmt.Sprintf("site-%d", i)
		regions = append(regions, Region(site, 17500+10*i, "a"))
		fmt.Fprintf(&links, "  - {between: [%s, hq], profile: geo-satellite}\n", site)
		fmt.Fprintf(&routes, "  - {name: %s-telemetry, from: %s/kafka, to: [hq/kafka], rename: '{source_region}.{topic}', topics: {include: ['^telemetry\\.']}}\n", site, site)
	}
	return Shape(regions, links.String(), routes.String())
}

// HubAndSites is HubAndSitesYAML(n)'s topology.
func HubAndSites(t testing.TB, n int) *topology.Topology {
	t.Helper()
	return Parse(t, HubAndSitesYAML(n))
}

// TwoGatewaysYAML: region east has gateways east-a and east-b; west has
// west-a. The link pins east-b, so only east-b sends east's legs.
var TwoGatewaysYAML = Shape(
	[]string{Region("east", 17600, "a", "b"), Region("west", 17610, "a")},
	"  - {between: [east/east-b, west], profile: wan}\n",
	"  - {name: orders, from: east/kafka, to: [west/kafka], topics: {include: ['.*']}}\n",
)

// TwoGateways is TwoGatewaysYAML's topology.
func TwoGateways(t testing.TB) *topology.Topology { t.Helper(); return Parse(t, TwoGatewaysYAML) }
