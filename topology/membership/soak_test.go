package membership_test

import (
	"os"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/topology/membership"
	"github.com/meridian-gw/meridian/topology/profile"
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
	hq, v7, px := shipAndHQ(t, geo, 11)
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
