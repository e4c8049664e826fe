package routing

import (
	"fmt"
	"strings"
	"testing"

	"github.com/meridian-gw/meridian/topology/topologytest"
)

// relayTopo is a topology of regions ship (ship-a, ship-b), hq, dr (dr-a,
// dr-b), eu, with the given links (and eu--hq when none names eu) and one
// route ship -> hq.
func relayTopo(links ...string) string {
	var b strings.Builder
	b.WriteString("version: 1\nregions:\n")
	port := 7400
	for _, r := range []struct {
		name string
		gws  []string
	}{{"ship", []string{"ship-a", "ship-b"}}, {"hq", []string{"hq-a"}}, {"dr", []string{"dr-a", "dr-b"}}, {"eu", []string{"eu-a"}}} {
		port++
		fmt.Fprintf(&b, "  - name: %s\n    clusters: [{name: kafka, kind: kafka, bootstrap: [\"127.0.0.1:%d\"]}]\n    gateways:\n", r.name, 9000+port)
		for _, g := range r.gws {
			port++
			fmt.Fprintf(&b, "      - {name: %s, listen: \"127.0.0.1:%d\", tls: {ca_file: ca.crt, cert_file: %s.crt, key_file: %s.key}}\n", g, port, g, g)
		}
	}
	b.WriteString("links:\n")
	if !strings.Contains(strings.Join(links, " "), "eu") {
		links = append(links, "{between: [eu, hq], profile: wan, dial: eu}") // no region is cut off
	}
	for _, l := range links {
		b.WriteString("  - " + l + "\n")
	}
	b.WriteString("routes:\n  - {name: t, from: ship/kafka, to: [hq/kafka], topics: {include: ['.*']}}\n")
	return b.String()
}

func TestRelayPaths(t *testing.T) {
	direct := "{between: [ship, hq], profile: geo-satellite, dial: ship}"
	for _, tc := range []struct {
		name  string
		links []string
		gw    string
		want  string // the relay paths of gw's peer hq-a, cheapest first, or "none"
	}{
		{"via dr", []string{direct, "{between: [ship, dr], profile: mobile-lte, dial: ship}", "{between: [dr, hq], profile: wan, dial: dr}"},
			"ship-a", "ship -[ship--dr]-> dr-a -[dr--hq]-> hq-a (cost 30)"},
		{"cheapest of two", []string{direct,
			"{between: [ship, dr], profile: mobile-lte, dial: ship}", "{between: [dr, hq], profile: wan, dial: dr, cost: 50}",
			"{between: [ship, eu], profile: leo-satellite, dial: ship}", "{between: [eu, hq], profile: wan, dial: eu}"},
			"ship-a", "ship -[ship--eu]-> eu-a -[eu--hq]-> hq-a (cost 40) | ship -[ship--dr]-> dr-a -[dr--hq]-> hq-a (cost 70)"},
		{"tie goes to the first in the file", []string{direct,
			"{between: [ship, eu], profile: wan, dial: ship}", "{between: [eu, hq], profile: wan, dial: eu}",
			"{between: [ship, dr], profile: wan, dial: ship}", "{between: [dr, hq], profile: wan, dial: dr}"},
			"ship-a", "ship -[ship--eu]-> eu-a -[eu--hq]-> hq-a (cost 20) | ship -[ship--dr]-> dr-a -[dr--hq]-> hq-a (cost 20)"},
		{"pinned relay end", []string{direct, "{between: [ship, dr/dr-b], profile: wan, dial: ship}", "{between: [dr, hq], profile: wan, dial: dr}"},
			"ship-a", "ship -[ship--dr.dr-b]-> dr-b -[dr--hq]-> hq-a (cost 20)"},
		{"relay link dialled by the relay: the site cannot reach it", []string{direct,
			"{between: [ship, dr], profile: wan, dial: dr}", "{between: [dr, hq], profile: wan, dial: dr}"}, "ship-a", "none"},
		{"onward link dialled by the destination: the relay cannot open it", []string{direct,
			"{between: [ship, dr], profile: wan, dial: ship}", "{between: [dr, hq], profile: wan, dial: hq}"}, "ship-a", "none"},
		{"relay link pinned to the other ship gateway", []string{direct,
			"{between: [ship/ship-b, dr], profile: wan, dial: ship}", "{between: [dr, hq], profile: wan, dial: dr}"}, "ship-a", "none"},
		{"the other ship gateway carries it", []string{direct,
			"{between: [ship/ship-b, dr], profile: wan, dial: ship}", "{between: [dr, hq], profile: wan, dial: dr}"},
			"ship-b", "ship -[ship.ship-b--dr]-> dr-a -[dr--hq]-> hq-a (cost 20)"},
		{"onward link pinned at the relay to a gateway the site does not reach", []string{direct,
			"{between: [ship, dr/dr-a], profile: wan, dial: ship}", "{between: [dr/dr-b, hq], profile: wan, dial: dr}"}, "ship-a", "none"},
		{"no link onward", []string{direct, "{between: [ship, dr], profile: wan, dial: ship}"}, "ship-a", "none"},
		{"amqp relay link", []string{direct,
			"{between: [ship, dr], transport: amqp, amqp: {url: 'amqp://127.0.0.1:5672'}}", "{between: [dr, hq], profile: wan, dial: dr}"}, "ship-a", "none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab, err := Compile(topologytest.Parse(t, relayTopo(tc.links...)), tc.gw)
			if err != nil {
				t.Fatal(err)
			}
			got := "none"
			for _, p := range tab.Out {
				if p.Gateway.Name != "hq-a" || len(p.RelayPaths) == 0 {
					continue
				}
				var ds []string
				for _, rp := range p.RelayPaths {
					ds = append(ds, rp.Describe())
				}
				got = strings.Join(ds, " | ")
				if p.Relay != p.RelayPaths[0] {
					t.Errorf("Relay is not the cheapest of RelayPaths")
				}
			}
			if got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// TestRelayTrust checks who may relay what: a relay carries only the legs
// of gateways of the leg's source region whose relay path passes through
// it, and the destination takes a relayed leg only from that relay, on
// behalf of a gateway that may send the leg.
func TestRelayTrust(t *testing.T) {
	topo := topologytest.Parse(t, relayTopo("{between: [ship, hq], profile: geo-satellite, dial: ship}",
		"{between: [ship, dr/dr-b], profile: wan, dial: ship}", "{between: [dr, hq], profile: wan, dial: dr}",
		"{between: [eu, hq], profile: wan, dial: eu}"))
	gw := func(n string) *Table {
		tab, err := Compile(topo, n)
		if err != nil {
			t.Fatal(err)
		}
		return tab
	}
	const leg = "t:hq/kafka"
	for _, tc := range []struct {
		relay, origin string
		want          bool
	}{
		{"dr-b", "ship-a", true},
		{"dr-b", "ship-b", true},
		{"dr-a", "ship-a", false}, // the ship's link to dr is pinned to dr-b
		{"eu-a", "ship-a", false}, // no link ship--eu
		{"dr-b", "eu-a", false},   // eu may not send a leg from ship
		{"dr-b", "hq-a", false},
		{"dr-b", "nobody", false},
	} {
		origin := topo.Gateways[tc.origin]
		p, got := gw(tc.relay).RelayFor(leg, origin)
		if got != tc.want {
			t.Errorf("%s relays %s for %s: got %v, want %v", tc.relay, leg, tc.origin, got, tc.want)
		}
		if got && p.Hops[1].Name != "hq-a" {
			t.Errorf("%s relays %s for %s to %s, want hq-a", tc.relay, leg, tc.origin, p.Hops[1].Name)
		}
		if by := gw("hq-a").RelayedBy(leg, origin, topo.Gateways[tc.relay]); by != tc.want {
			t.Errorf("hq-a takes %s from %s for %s: got %v, want %v", leg, tc.relay, tc.origin, by, tc.want)
		}
	}
	if _, ok := gw("dr-b").RelayFor("nope:hq/kafka", topo.Gateways["ship-a"]); ok {
		t.Error("dr-b relays an unknown leg")
	}
	if gw("hq-a").RelayedBy("t:hq/kafka", topo.Gateways["ship-a"], topo.Gateways["dr-a"]) {
		t.Error("hq-a takes the leg from dr-a, which the path does not pass")
	}
	// dr-b dials hq-a to relay; ship-a dials dr-b.
	if r := gw("dr-b").Relays; len(r) != 1 || r[0].Gateway.Name != "hq-a" {
		t.Errorf("dr-b relay peers: got %v, want [hq-a]", peerNames(r))
	}
	if r := gw("ship-a").Relays; len(r) != 1 || r[0].Gateway.Name != "dr-b" {
		t.Errorf("ship-a relay peers: got %v, want [dr-b]", peerNames(r))
	}
}

func peerNames(ps []*Peer) []string {
	var ns []string
	for _, p := range ps {
		ns = append(ns, p.Gateway.Name)
	}
	return ns
}
