package lab_test

import (
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/chaos/lab"
	"github.com/meridian-gw/meridian/config"
)

// TestFleetSatellite runs examples/satellite-fleet.yaml in one process
// (two ships dialling HQ over GEO satellite, HQ to DR in passthrough, a
// filter route and HQ's configuration back to the ships), blacks out one
// ship's link for 3 s, and reads every route back.
func TestFleetSatellite(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a four-region fleet for ~15 s")
	}
	base := runtime.NumGoroutine()
	topoOut := filepath.Join(t.TempDir(), "running.yaml")
	ctx := t.Context()
	sum, err := lab.RunFleetDemo(ctx, lab.FleetDemoOptions{
		File: "../../examples/satellite-fleet.yaml", Duration: 10 * time.Second, Rate: 200,
		Blackouts: []lab.Blackout{{Link: "vessel-7--hq", At: 4 * time.Second, For: 3 * time.Second}},
		CatchUp:   20 * time.Second, Logger: testLogger(), TopologyOut: topoOut, Out: testWriter{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Routes) != 6 { // 5 routes, fleet-config to both ships
		t.Errorf("got %d route legs, want 6", len(sum.Routes))
	}
	for _, r := range sum.Routes {
		t.Logf("%s → %s: topics %v: %s %s", r.Route, r.To, r.Topics, r.Report.String(), r.Err)
		if !r.Exact() {
			t.Errorf("%s → %s not exact: %s %s %v", r.Route, r.To, r.Report.String(), r.Err, r.Samples)
		}
		if r.Mirrored == 0 {
			t.Errorf("%s → %s: nothing mirrored", r.Route, r.To)
		}
		if r.Filter != "" && (r.Filtered == 0 || r.Filtered == r.Produced) {
			t.Errorf("%s → %s: filter dropped %d of %d records, want some but not all", r.Route, r.To, r.Filtered, r.Produced)
		}
	}
	blackedOut := false
	for _, l := range sum.Links {
		t.Logf("link %s via %s: %d packets, %d lost, %d dropped in blackouts", l.Link, l.Proxy, l.Packets, l.DroppedLoss, l.DroppedBlackout)
		blackedOut = blackedOut || (l.Link == "vessel-7--hq" && l.DroppedBlackout > 0)
	}
	if !blackedOut {
		t.Errorf("the blackout of vessel-7--hq dropped no packet: %+v", sum.Links)
	}
	if !sum.Exact {
		t.Errorf("summary not exact: %v", sum.NotExactBy)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base+5 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base+5 {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines leaked: %d before, %d after\n%s", base, n, buf[:runtime.Stack(buf, true)])
	}
	// The running topology is a topology file.
	if _, err := config.Load(topoOut); err != nil {
		t.Errorf("running topology %s does not load: %v", topoOut, err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}
