package routing

import (
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/topology/topologytest"
)

func fleet(t *testing.T) *topology.Topology {
	t.Helper()
	hq := topologytest.Region("hq", 17410, "a") + "      - {name: hq-b, listen: \"127.0.0.1:17412\", tls: {ca_file: ca.crt, cert_file: hq-b.crt, key_file: hq-b.key}}\n"
	hq = strings.Replace(hq, "    gateways:", "      - {name: archive, kind: kafka, bootstrap: [\"127.0.0.1:19411\"]}\n    gateways:", 1)
	return topologytest.Parse(t, topologytest.Shape(
		[]string{topologytest.Region("v7", 17400, "a"), hq, topologytest.Region("dr", 17420, "a")},
		"  - {between: [v7, hq], profile: geo-satellite, compression: zstd}\n"+
			"  - {between: [hq/hq-a, dr], profile: wan, compression: s2}\n",
		"  - {name: telemetry, from: v7/kafka, to: [hq/kafka], rename: '{source_region}.{topic}', topics: {include: ['^telemetry\\.', '^alarms$'], exclude: ['\\.debug$']}}\n"+
			"  - {name: backup, from: hq/kafka, to: [dr/kafka, hq/archive], discover: 1s, topics: {include: ['.*']}}\n",
	))
}

func TestCompileSplitsLegsByGateway(t *testing.T) {
	topo := fleet(t)
	tests := []struct {
		gateway string
		out     map[string][]string // peer gateway -> leg IDs
		in      []string
	}{
		{"v7-a", map[string][]string{"hq-a": {"telemetry:hq/kafka"}}, nil},
		// hq-a sends the backup route to dr and to itself (a same-region
		// leg), and receives telemetry from v7 and its own backup leg.
		{"hq-a", map[string][]string{"dr-a": {"backup:dr/kafka"}, "hq-a": {"backup:hq/archive"}}, []string{"telemetry:hq/kafka", "backup:hq/archive"}},
		// hq-b is not on the link to dr (pinned to hq-a), so it sends only
		// the local leg, to the region's first gateway.
		{"hq-b", map[string][]string{"hq-a": {"backup:hq/archive"}}, []string{"telemetry:hq/kafka", "backup:hq/archive"}},
		{"dr-a", map[string][]string{}, []string{"backup:dr/kafka"}},
	}
	for _, tt := range tests {
		t.Run(tt.gateway, func(t *testing.T) {
			tab, err := Compile(topo, tt.gateway)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string][]string{}
			for _, p := range tab.Out {
				for _, l := range p.Legs {
					got[p.Gateway.Name] = append(got[p.Gateway.Name], l.ID)
				}
			}
			if len(got) != len(tt.out) {
				t.Errorf("out = %v, want %v", got, tt.out)
			}
			for peer, legs := range tt.out {
				if strings.Join(got[peer], ",") != strings.Join(legs, ",") {
					t.Errorf("out to %s = %v, want %v", peer, got[peer], legs)
				}
			}
			var in []string
			for _, l := range tab.In {
				in = append(in, l.ID)
				if _, ok := tab.InLeg(l.ID); !ok {
					t.Errorf("InLeg(%q) not found", l.ID)
				}
			}
			if strings.Join(in, ",") != strings.Join(tt.in, ",") {
				t.Errorf("in = %v, want %v", in, tt.in)
			}
		})
	}
	if _, err := Compile(topo, "nope"); err == nil || !strings.Contains(err.Error(), `unknown gateway "nope"`) {
		t.Errorf("unknown gateway: err = %v", err)
	}
}

func TestLegFiltersRenamesAndLinks(t *testing.T) {
	tab, err := Compile(fleet(t), "v7-a")
	if err != nil {
		t.Fatal(err)
	}
	leg := tab.Out[0].Legs[0]
	for topic, want := range map[string]bool{
		"telemetry.engine":       true,
		"alarms":                 true,
		"alarms.old":             false, // include is anchored by the user
		"telemetry.engine.debug": false, // excluded
		"logbook":                false,
		"__consumer_offsets":     false, // internal topics never
		"__meridian_progress":    false,
	} {
		if got := leg.Match(topic); got != want {
			t.Errorf("Match(%q) = %v, want %v", topic, got, want)
		}
	}
	if got := leg.DestTopic("telemetry.engine"); got != "v7.telemetry.engine" {
		t.Errorf("DestTopic = %q, want v7.telemetry.engine", got)
	}
	if leg.Link.Name != "v7--hq" || leg.Link.Compression != "zstd" {
		t.Errorf("leg link = %+v, want v7--hq with zstd", leg.Link)
	}
	if leg.Discover() != 2*time.Second {
		t.Errorf("default discovery interval = %v, want 2s", leg.Discover())
	}
	hq, err := Compile(fleet(t), "hq-a")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range hq.Out {
		if p.Gateway.Name == "hq-a" && (p.Link == nil || p.Link.Compression != "none") {
			t.Errorf("same-region leg link = %+v, want a local link without compression", p.Link)
		}
	}
}

// TestPinnedSendingEnd: a link pinned to one gateway of a region is sent
// over by that gateway only.
func TestPinnedSendingEnd(t *testing.T) {
	topo := topologytest.TwoGateways(t)
	for gw, want := range map[string]int{"east-a": 0, "east-b": 1, "west-a": 0} {
		tab, err := Compile(topo, gw)
		if err != nil {
			t.Fatal(err)
		}
		if got := len(tab.Out); got != want {
			t.Errorf("%s sends to %d peers, want %d", gw, got, want)
		}
	}
}

// A receiver takes a pinned link's legs only from the gateway the sending
// end is pinned to: another gateway of the same region (a stolen
// certificate of a neighbour) may not claim them.
func TestPinnedSendingEndIsWhoMaySend(t *testing.T) {
	topo := topologytest.TwoGateways(t)
	tab, err := Compile(topo, "west-a")
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.In) == 0 {
		t.Fatal("west-a receives no leg")
	}
	for _, l := range tab.In {
		for gw, want := range map[string]bool{"east-a": false, "east-b": true, "west-a": l.From.Region.Name == "west"} {
			g, ok := tab.LookupGateway(gw)
			if !ok {
				t.Fatalf("no gateway %s", gw)
			}
			if got := l.SentBy(g); got != want {
				t.Errorf("leg %s: SentBy(%s) = %v, want %v", l.ID, gw, got, want)
			}
		}
	}
}

func TestHubReceivesEverySite(t *testing.T) {
	topo := topologytest.HubAndSites(t, 3)
	tab, err := Compile(topo, "hq-a")
	if err != nil {
		t.Fatal(err)
	}
	var in []string
	for _, l := range tab.In {
		in = append(in, l.ID+" via "+l.Link.Name)
	}
	want := "site-1-telemetry:hq/kafka via site-1--hq,site-2-telemetry:hq/kafka via site-2--hq,site-3-telemetry:hq/kafka via site-3--hq"
	if got := strings.Join(in, ","); got != want {
		t.Errorf("hub receives %s, want %s", got, want)
	}
	site, err := Compile(topologytest.TwoRegions(t), "east-a")
	if err != nil {
		t.Fatal(err)
	}
	if len(site.Out) != 1 || site.Out[0].Gateway.Name != "west-a" {
		t.Errorf("two regions: east-a sends to %+v, want west-a", site.Out)
	}
}

// A route's filter is compiled once and shared by its legs; a route
// without one has none.
func TestLegFilter(t *testing.T) {
	topo := fleet(t)
	for _, r := range topo.Routes {
		if r.Name == "backup" {
			r.Filter = `headers["severity"] == "alarm"`
		}
	}
	tab, err := Compile(topo, "hq-a")
	if err != nil {
		t.Fatal(err)
	}
	var legs []*Leg
	for _, p := range tab.Out {
		legs = append(legs, p.Legs...)
	}
	if len(legs) != 2 || legs[0].Filter == nil || legs[0].Filter != legs[1].Filter {
		t.Fatalf("backup legs %v: want two sharing one filter", legs)
	}
	if got := legs[0].Filter.String(); got != `headers["severity"] == "alarm"` {
		t.Errorf("filter = %q", got)
	}
	for _, l := range tab.In {
		if l.Route.Name == "telemetry" && l.Filter != nil {
			t.Errorf("unfiltered route %s has a filter", l.ID)
		}
	}
	for _, r := range topo.Routes {
		if r.Name == "backup" {
			r.Filter = `headers["severity"] ==`
		}
	}
	if _, err := Compile(topo, "hq-a"); err == nil || !strings.Contains(err.Error(), `route "backup": filter: 1:`) {
		t.Errorf("bad filter: err = %v", err)
	}
}

func TestDestTopicCaptureGroups(t *testing.T) {
	topo := fleet(t)
	for _, r := range topo.Routes {
		if r.Name == "telemetry" {
			r.Include = []string{`^telemetry\.(?P<kind>[a-z]+)\.(\w+)$`, `^alarms$`}
			r.Rename = "{source_region}.{kind}-{2}.{source_cluster}"
		}
	}
	tab, err := Compile(topo, "v7-a")
	if err != nil {
		t.Fatal(err)
	}
	leg := tab.Out[0].Legs[0]
	for topic, want := range map[string]string{
		"telemetry.engine.rpm": "v7.engine-rpm.kafka",
		"alarms":               "v7.-.kafka", // the matching include has no such groups
	} {
		if got := leg.DestTopic(topic); got != want {
			t.Errorf("DestTopic(%q) = %q, want %q", topic, got, want)
		}
	}
}
