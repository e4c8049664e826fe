package membership_test

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/chaos"
	"github.com/meridian-gw/meridian/topology/membership"
	"github.com/meridian-gw/meridian/topology/profile"
	"github.com/meridian-gw/meridian/transport/quic"
)

// TestGossipSoak gossips between a ship and HQ over an emulated 600 ms
// link with 5% loss each way (the geo-satellite profile, its loss raised,
// the chaos UDP proxy) for MERIDIAN_GOSSIP_SOAK (a duration; the test is
// skipped without it: `make bench` runs it for 10 minutes), on the
// timings WANConfig derives for that path, and fails on any "dead"
// verdict either way. It reports the suspicions raised and refuted.
func TestGossipSoak(t *testing.T) {
	v := os.Getenv("MERIDIAN_GOSSIP_SOAK")
	if v == "" {
		t.Skip("set MERIDIAN_GOSSIP_SOAK=10m to soak (make bench does)")
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("MERIDIAN_GOSSIP_SOAK=%q: %v", v, err)
	}
	geo, err := profile.Load("geo-satellite")
	if err != nil {
		t.Fatal(err)
	}
	geo = geo.WithoutEvents().WithLoss(0.05)
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
		cfg := membership.WANConfig(membership.PathOf(geo))
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
	var px *chaos.UDPProxy
	hq := start("hq-a", "hq", nil, func(port int) int {
		var err error
		px, err = chaos.NewUDPProxy(chaos.UDPProxyOptions{Target: "127.0.0.1:" + strconv.Itoa(port), Profile: geo, Seed: 11})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { px.Close() })
		return px.Addr().Port
	})
	hq.Start()
	v7 := start("v7-a", "vessel-7", []string{"hq-a/" + px.Addr().String()}, func(port int) int { return port })
	v7.Start()
	waitState(t, 30*time.Second, hq, "v7-a", membership.StateAlive)
	waitState(t, 30*time.Second, v7, "hq-a", membership.StateAlive)
	end := time.Now().Add(d)
	deadVerdicts := 0
	for time.Now().Before(end) {
		for _, pair := range []struct {
			m    *membership.Member
			peer string
		}{{hq, "v7-a"}, {v7, "hq-a"}} {
			if s, _ := stateOf(pair.m, pair.peer); s == membership.StateDead {
				deadVerdicts++
				t.Errorf("%s declared %s dead %v into the soak", pair.m.LocalName(), pair.peer, d-time.Until(end))
			}
		}
		time.Sleep(time.Second)
	}
	st := px.Stats()
	t.Logf("soak %v over 600 ms RTT, 5%% loss: %d dead verdicts; hq-a %+v; v7-a %+v; proxy dropped %d of %d packets to loss",
		d, deadVerdicts, hq.Counters(), v7.Counters(), st.Up.Dropped.Loss+st.Down.Dropped.Loss, st.Up.Packets+st.Down.Packets+st.Up.Dropped.Loss+st.Down.Dropped.Loss)
}
