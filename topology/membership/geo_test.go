package membership_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/chaos"
	"github.com/meridian-gw/meridian/topology/membership"
	"github.com/meridian-gw/meridian/topology/profile"
	"github.com/meridian-gw/meridian/transport/quic"
)

// TestGossipOverGEO: a ship that can only dial out gossips with HQ over an
// emulated geostationary link (600 ms RTT, 1% loss, the chaos UDP proxy),
// on the timings WANConfig derives for it. The join is seen both ways
// within 10 s, the ship's health report reaches HQ, an 8 s blackout does
// not make HQ declare the ship dead, and the ship's leave is seen as
// "left".
func TestGossipOverGEO(t *testing.T) {
	if testing.Short() {
		t.Skip("about 25 s of emulated satellite link")
	}
	geo, err := profile.Load("geo-satellite")
	if err != nil {
		t.Fatal(err)
	}
	geo = geo.WithoutEvents()
	begin := time.Now()
	hq, v7, px := shipAndHQ(t, geo, 7)
	waitState(t, 10*time.Second, hq, "v7-a", membership.StateAlive)
	waitState(t, 10*time.Second, v7, "hq-a", membership.StateAlive)
	t.Logf("join over GEO seen both ways in %v", time.Since(begin).Round(time.Millisecond))

	begin = time.Now()
	if err := v7.PublishHealth([]membership.LegHealth{{Leg: "ship-to-hq", Peer: "hq-a", Up: true, RTT: 610 * time.Millisecond}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if r, ok := hq.Health()["v7-a"]; ok && len(r.Legs) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("HQ has no health report from the ship after 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("health over GEO in %v", time.Since(begin).Round(time.Millisecond))

	px.Blackout(8 * time.Second)
	time.Sleep(10 * time.Second)
	waitState(t, 15*time.Second, hq, "v7-a", membership.StateAlive)
	if s, _ := stateOf(hq, "v7-a"); s == membership.StateDead {
		t.Error("HQ declared the ship dead after an 8 s blackout")
	}
	t.Logf("after the blackout: HQ counters %+v", hq.Counters())

	begin = time.Now()
	if err := v7.Leave(5 * time.Second); err != nil {
		t.Logf("Leave: %v", err)
	}
	waitState(t, 10*time.Second, hq, "v7-a", membership.StateLeft)
	t.Logf("leave over GEO seen in %v (Leave took part of it)", time.Since(begin).Round(time.Millisecond))
}

// shipAndHQ starts HQ's member and a ship's that reaches it only through
// a chaos UDP proxy with link profile prof (seeded with seed), on the
// timings WANConfig derives for prof, QUIC gossip with certificates, the
// ship dialling out only. Both are shut down when the test ends.
func shipAndHQ(t *testing.T, prof *profile.Profile, seed uint64) (hq, ship *membership.Member, px *chaos.UDPProxy) {
	t.Helper()
	start := func(name, region string, seeds []string, advertise func(port int) int) *membership.Member {
		ca, c := cert(t, name)
		tr, err := quic.ListenGossip("127.0.0.1:0", quic.GossipOptions{
			ServerTLS: ca.ServerConfig(c), ClientTLS: ca.ClientConfig(c, ""),
			Member:   func(n string) bool { return n == "hq-a" || n == "v7-a" },
			Dialable: func(n string) bool { return n != "v7-a" },
			Logger:   testLogger(t),
		})
		if err != nil {
			t.Fatal(err)
		}
		cfg := membership.WANConfig(membership.PathOf(prof))
		cfg.UDPBufferSize = 1100
		cfg.AdvertiseAddr, cfg.AdvertisePort = "127.0.0.1", advertise(tr.Addr().Port)
		m, err := membership.New(membership.Options{Name: name, Config: cfg, Transport: tr, Seeds: seeds, Rejoin: time.Second, Logger: testLogger(t),
			Meta: membership.Meta{Region: region, Gateway: name, Incarnation: 1, ProtoMin: 1, ProtoMax: 5}})
		if err != nil {
			tr.Shutdown()
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Shutdown() })
		return m
	}
	hq = start("hq-a", "hq", nil, func(port int) int {
		var err error
		px, err = chaos.NewUDPProxy(chaos.UDPProxyOptions{Target: "127.0.0.1:" + strconv.Itoa(port), Profile: prof, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { px.Close() })
		return px.Addr().Port // the ship reaches HQ through the proxy only
	})
	hq.Start()
	ship = start("v7-a", "vessel-7", []string{"hq-a/" + px.Addr().String()}, func(port int) int { return port })
	ship.Start()
	return hq, ship, px
}
