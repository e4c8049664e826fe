package membership_test

import (
	"testing"
	"time"

	"github.com/meridian-gw/meridian/topology/membership"
)

// TestHealthReachesEveryMember: a report published by one member reaches
// the two others within seconds, a newer report replaces it, and a member
// that joins later gets it in its first push/pull.
func TestHealthReachesEveryMember(t *testing.T) {
	a, aSeed := startUDP(t, "hq-a", nil, nil)
	b, _ := startUDP(t, "hq-b", nil, []string{aSeed})
	c, _ := startUDP(t, "hq-c", nil, []string{aSeed})
	for _, m := range []*membership.Member{a, b, c} {
		for _, n := range []string{"hq-a", "hq-b", "hq-c"} {
			waitState(t, 5*time.Second, m, n, membership.StateAlive)
		}
	}
	leg := membership.LegHealth{Leg: "hq-to-dr", Peer: "dr-a", Up: true, RTT: 80 * time.Millisecond, Loss: 0.001, Goodput: 1e8, Backlog: 4096}
	for i, want := range []int64{4096, 0} {
		leg.Backlog = want
		start := time.Now()
		if err := c.PublishHealth([]membership.LegHealth{leg}); err != nil {
			t.Fatal(err)
		}
		for _, m := range []*membership.Member{a, b} {
			waitHealth(t, 3*time.Second, m, "hq-c", uint64(i+1), want)
		}
		t.Logf("report %d seen by all in %v", i+1, time.Since(start).Round(time.Millisecond))
	}
	d, _ := startUDP(t, "hq-d", nil, []string{aSeed})
	waitHealth(t, 3*time.Second, d, "hq-c", 2, 0)
}

func waitHealth(t *testing.T, within time.Duration, m *membership.Member, from string, seq uint64, backlog int64) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r, ok := m.Health()[from]
		if ok && r.Seq >= seq && len(r.Legs) == 1 && r.Legs[0].Backlog == backlog && r.Legs[0].Peer == "dr-a" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %s's report %+v (%v) after %v, want seq %d backlog %d", m.LocalName(), from, r, ok, within, seq, backlog)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
