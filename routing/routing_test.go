package routing

import (
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/topology"
)

func fleet(t *testing.T) *topology.Topology {
	t.Helper()
	region := func(name string) config.Region {
		return config.Region{Name: name,
			Clusters: []config.Cluster{{Name: "kafka", Kind: "kafka", Bootstrap: []string{name + ":9092"}}},
			Gateways: []config.Gateway{{Name: name + "-a", Listen: name + ":7400"}}}
	}
	f := &config.File{
		Version: 1,
		Regions: []config.Region{region("v7"), region("hq"), region("dr")},
		Links: []config.Link{
			{Name: "v7--hq", Between: []string{"v7", "hq"}, Transport: "quic", Profile: "geo-satellite", Compression: "zstd"},
			{Name: "hq--dr", Between: []string{"hq", "dr"}, Transport: "quic", Profile: "wan", Compression: "s2"},
		},
		Routes: []config.Route{
			{Name: "telemetry", From: "v7/kafka", To: []string{"hq/kafka"}, Rename: "{source_region}.{topic}",
				Topics: config.TopicFilter{Include: []string{`^telemetry\.`, `^alarms$`}, Exclude: []string{`\.debug$`}}},
			{Name: "backup", From: "hq/kafka", To: []string{"dr/kafka", "hq/kafka"}, Rename: "{topic}",
				Topics: config.TopicFilter{Include: []string{`.*`}}, Discover: time.Second},
		},
	}
	topo, err := topology.New(f)
	if err != nil {
		t.Fatal(err)
	}
	return topo
}

func TestCompileSplitsLegsByGateway(t *testing.T) {
	topo := fleet(t)
	tests := []struct {
		gateway string
		out     map[string][]string // peer gateway -> leg IDs
		in      []string
	}{
		{"v7-a", map[string][]string{"hq-a": {"telemetry:hq/kafka"}}, nil},
		// hq sends the backup route to dr and to itself (a same-region leg),
		// and receives telemetry from v7 and its own backup leg.
		{"hq-a", map[string][]string{"dr-a": {"backup:dr/kafka"}, "hq-a": {"backup:hq/kafka"}}, []string{"telemetry:hq/kafka", "backup:hq/kafka"}},
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
