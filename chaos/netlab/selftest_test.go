//go:build linux

package netlab_test

import (
	"context"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/chaos/netlab"
	"github.com/meridian-gw/meridian/chaos/netlab/netlabtest"
)

// TestSelfTest runs the self-test on a 100 ms RTT, 1% loss, 10 Mbit/s link:
// every measured figure must be within its tolerance of the profile.
func TestSelfTest(t *testing.T) {
	p := wan(t).WithRTT(100 * time.Millisecond).WithLoss(0.01).WithRate(10_000_000)
	p.Name = "wan-100ms-1pct-10mbit"
	lab := netlabtest.New(t, netlab.Options{Regions: []string{"edge", "hq"}, Profile: p})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := netlab.SelfTest(ctx, lab, "edge--hq", netlab.SelfTestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", rep)
	if !rep.Pass {
		t.Errorf("self-test failed (seed %d)", lab.Seed())
	}
	if got := len(rep.Results); got != 6 {
		t.Errorf("%d checks, want 6 (delay, loss, rate; up and down)", got)
	}
	for _, c := range rep.Results {
		if c.Skipped {
			t.Errorf("check %s %s skipped: %s", c.Name, c.Dir, c.Note)
		}
		if c.Name == "loss" && c.Samples < 20_000 {
			t.Errorf("loss %s measured with %d probes, want at least 20,000", c.Dir, c.Samples)
		}
	}
	if rep.Seconds > 20 {
		t.Errorf("self-test took %.1fs, want under 20s", rep.Seconds)
	}
	t.Logf("stats: %+v", lab.Stats())
}

// TestSelfTestPerfectLink runs a short self-test on an unimpaired link: the
// pump's own delay stays under the 1 ms floor and nothing is lost.
func TestSelfTestPerfectLink(t *testing.T) {
	lab := netlabtest.New(t, netlab.Options{Regions: []string{"edge", "hq"}})
	rep, err := netlab.SelfTest(context.Background(), lab, "edge--hq", netlab.SelfTestOptions{Probes: 2000})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", rep)
	if !rep.Pass {
		t.Error("self-test of a perfect link failed")
	}
	if _, err := netlab.SelfTest(context.Background(), lab, "hq--edge", netlab.SelfTestOptions{}); err == nil {
		t.Error("self-test of an unknown link succeeded")
	}
}
