package membership_test

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/meridian-gw/meridian/topology/membership"
	"github.com/meridian-gw/meridian/topology/profile"
)

// TestDeadDetection kills a member (Shutdown without Leave, as a crash
// or a pulled cable) in a pool of three on loopback UDP and measures how
// long the other two take to see it dead, on the LAN timings of a region
// (target 5 s) and on the WAN timings WANConfig derives for the wan
// profile (target 45 s). A member that has not yet declared it dead
// within the target fails the test.
func TestDeadDetection(t *testing.T) {
	wan, err := profile.Load("wan")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		cfg    func() *memberlist.Config
		target time.Duration
	}{
		{"lan", membership.LANConfig, 5 * time.Second},
		{"wan", func() *memberlist.Config { return membership.WANConfig(membership.PathOf(wan.WithoutEvents())) }, 45 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if testing.Short() && tc.name == "wan" {
				t.Skip("WAN timings take tens of seconds")
			}
			start := func(name string, seeds []string) (*membership.Member, string) {
				cfg := tc.cfg()
				cfg.BindAddr, cfg.BindPort = "127.0.0.1", 0
				m, err := membership.New(membership.Options{
					Name: name, Meta: membership.Meta{Region: "r", Gateway: name, ProtoMin: 1, ProtoMax: 5},
					Config: cfg, Seeds: seeds, Rejoin: time.Second, Logger: testLogger(t),
				})
				if err != nil {
					t.Fatal(err)
				}
				m.Start()
				t.Cleanup(func() { m.Shutdown() })
				ln := m.Memberlist().LocalNode()
				return m, name + "/" + net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
			}
			a, seedA := start("a", nil)
			b, _ := start("b", []string{seedA})
			c, _ := start("c", []string{seedA})
			for _, m := range []*membership.Member{a, b} {
				waitState(t, 20*time.Second, m, "c", membership.StateAlive)
			}
			waitState(t, 20*time.Second, c, "b", membership.StateAlive)
			killed := time.Now()
			if err := c.Shutdown(); err != nil {
				t.Fatal(err)
			}
			for _, m := range []*membership.Member{a, b} {
				waitState(t, tc.target-time.Since(killed), m, "c", membership.StateDead)
				t.Logf("%s: %s sees the killed member dead %.1f s after it died (target %v)", tc.name, m.LocalName(), time.Since(killed).Seconds(), tc.target)
			}
		})
	}
}
