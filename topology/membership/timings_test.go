package membership

import (
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/topology/profile"
	"github.com/meridian-gw/meridian/topology/topologytest"
)

func mustProfile(t *testing.T, name string) *profile.Profile {
	t.Helper()
	p, err := profile.Load(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestWANConfigFloor: a path faster than the WAN defaults keeps them all.
func TestWANConfigFloor(t *testing.T) {
	def := memberlist.DefaultWANConfig()
	for _, p := range []Path{{}, PathOf(mustProfile(t, "lan")), PathOf(mustProfile(t, "wan"))} {
		c := WANConfig(p)
		if c.ProbeTimeout != def.ProbeTimeout || c.ProbeInterval != def.ProbeInterval ||
			c.SuspicionMult != def.SuspicionMult || c.GossipInterval != def.GossipInterval ||
			c.TCPTimeout != def.TCPTimeout || c.RetransmitMult != def.RetransmitMult {
			t.Errorf("path %+v: %v/%v/%d/%v/%v, want the WAN defaults", p, c.ProbeTimeout, c.ProbeInterval, c.SuspicionMult, c.GossipInterval, c.TCPTimeout)
		}
	}
}

// TestWANConfigGEO: a 600 ms satellite path raises every timing above its
// round trip, and never below the WAN floor.
func TestWANConfigGEO(t *testing.T) {
	geo := PathOf(mustProfile(t, "geo-satellite"))
	if geo.RTT != 600*time.Millisecond || geo.Loss != 0.01 {
		t.Fatalf("geo path %+v", geo)
	}
	def := memberlist.DefaultWANConfig()
	for _, tc := range []struct {
		name string
		p    Path
	}{
		{"one GEO hop", geo},
		{"two GEO hops", geo.then(geo)},
		{"GEO at 5% loss", PathOf(mustProfile(t, "geo-satellite").WithLoss(0.05))},
	} {
		c := WANConfig(tc.p)
		worst := tc.p.RTT + 2*tc.p.Jitter
		if c.ProbeTimeout < 4*worst {
			t.Errorf("%s: ProbeTimeout %v, want at least 4 round trips (%v)", tc.name, c.ProbeTimeout, 4*worst)
		}
		if c.ProbeInterval < 8*worst || c.ProbeInterval <= c.ProbeTimeout {
			t.Errorf("%s: ProbeInterval %v, want above 8 round trips and ProbeTimeout %v", tc.name, c.ProbeInterval, c.ProbeTimeout)
		}
		if c.GossipInterval < worst || c.TCPTimeout < 10*worst {
			t.Errorf("%s: GossipInterval %v, TCPTimeout %v below the round trip %v", tc.name, c.GossipInterval, c.TCPTimeout, worst)
		}
		if c.SuspicionMult <= def.SuspicionMult {
			t.Errorf("%s: SuspicionMult %d not raised for %.0f%% loss", tc.name, c.SuspicionMult, 100*tc.p.Loss)
		}
		if c.ProbeTimeout < def.ProbeTimeout || c.ProbeInterval < def.ProbeInterval || c.TCPTimeout < def.TCPTimeout ||
			c.PushPullInterval < def.PushPullInterval || c.GossipToTheDeadTime < def.GossipToTheDeadTime {
			t.Errorf("%s: a timing fell below the WAN floor: %+v", tc.name, c)
		}
	}
	two := WANConfig(geo.then(geo))
	one := WANConfig(geo)
	if two.ProbeTimeout <= one.ProbeTimeout {
		t.Errorf("two hops ProbeTimeout %v not above one hop's %v", two.ProbeTimeout, one.ProbeTimeout)
	}
	// 5% loss: more suspicion and more retransmits, capped.
	lossy := WANConfig(Path{RTT: 600 * time.Millisecond, Loss: 0.05, Hops: 1})
	if lossy.SuspicionMult != 11 || lossy.RetransmitMult != 7 {
		t.Errorf("5%% loss: SuspicionMult %d, RetransmitMult %d; want 11, 7", lossy.SuspicionMult, lossy.RetransmitMult)
	}
	if c := WANConfig(Path{RTT: time.Second, Loss: 0.5}); c.SuspicionMult != 12 || c.RetransmitMult != 8 {
		t.Errorf("50%% loss: SuspicionMult %d, RetransmitMult %d; want the caps 12, 8", c.SuspicionMult, c.RetransmitMult)
	}
}

const fleetLinks = `  - {between: [vessel, hq], profile: geo-satellite}
  - {between: [hq, dr], profile: wan}
`

// TestWorstPath: the fleet's slowest path runs from the ship through HQ
// to DR, and a single region gets LAN timings.
func TestWorstPath(t *testing.T) {
	topo := topologytest.Parse(t, topologytest.Shape([]string{
		topologytest.Region("vessel", 7000, "a"),
		topologytest.Region("hq", 7010, "a", "b"),
		topologytest.Region("dr", 7020, "a"),
	}, fleetLinks, ""))
	p := WorstPath(topo, nil)
	geo, wan := PathOf(mustProfile(t, "geo-satellite")), PathOf(mustProfile(t, "wan"))
	if p.Hops != 2 || p.RTT != geo.RTT+wan.RTT {
		t.Errorf("worst path %+v, want vessel-hq-dr (2 hops, %v)", p, geo.RTT+wan.RTT)
	}
	if got, want := FleetConfig(topo, nil).ProbeTimeout, WANConfig(p).ProbeTimeout; got != want {
		t.Errorf("FleetConfig ProbeTimeout %v, want %v", got, want)
	}
	one := topologytest.Parse(t, topologytest.Shape([]string{topologytest.Region("hq", 7010, "a", "b")}, "", ""))
	if got := FleetConfig(one, nil); got.ProbeTimeout != LANConfig().ProbeTimeout {
		t.Errorf("one region: ProbeTimeout %v, want LAN's", got.ProbeTimeout)
	}
}

func TestSeeds(t *testing.T) {
	topo := topologytest.Parse(t, topologytest.Shape([]string{
		topologytest.Region("vessel", 7000, "a"),
		topologytest.Region("hq", 7010, "a", "b"),
	}, "  - {between: [vessel, hq]}\n", ""))
	adv := func(g *topology.Gateway) string { return g.Advertise }
	got := Seeds(topo, "hq-a", nil, adv)
	want := []string{"hq-b/127.0.0.1:7011", "vessel-a/127.0.0.1:7000"}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("Seeds = %v, want %v", got, want)
	}
	region := Seeds(topo, "hq-a", func(g *topology.Gateway) bool { return g.Region.Name == "hq" }, adv)
	if len(region) != 1 || region[0] != "hq-b/127.0.0.1:7011" {
		t.Errorf("region seeds = %v", region)
	}
}
