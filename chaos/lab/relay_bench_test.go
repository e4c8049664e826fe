package lab_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/chaos/lab"
)

// TestRelayGoodput measures the relayed leg's goodput against the slower
// of its two links (issue 14: at least 80%). Gated: it saturates a
// 20 Mbit/s link for about a minute.
//
//	MERIDIAN_RELAY_BENCH=1 go test -run TestRelayGoodput -v ./chaos/lab/
//
// The fleet is examples/relay-fleet.yaml with ship--hq and ship--dr on
// mobile-lte (20 Mbit/s, 60 ms RTT, bursty loss), dr--hq on wan (1
// Gbit/s, 80 ms RTT), no compression (so record bytes are link bytes) and
// the ship producing more than the link carries. It measures the raw
// record bytes hq commits per second over the direct link, then blacks
// ship--hq out and measures the same over ship -> dr -> hq, while the
// backlog lasts.
func TestRelayGoodput(t *testing.T) {
	if os.Getenv("MERIDIAN_RELAY_BENCH") == "" {
		t.Skip("set MERIDIAN_RELAY_BENCH=1 to measure relayed goodput (about a minute at 20 Mbit/s)")
	}
	const rate = 20e6 // bit/s of mobile-lte, the slower link of the relay path
	f, _, err := lab.LoadFleetFile("../../examples/relay-fleet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for i := range f.Links {
		l := &f.Links[i]
		l.Compression = "none"
		switch l.Name {
		case "ship--hq", "ship--dr":
			l.Profile = "mobile-lte"
		default:
			l.Profile = "wan"
		}
	}
	var routes = f.Routes[:0]
	for _, r := range f.Routes {
		if r.Name == "telemetry" {
			routes = append(routes, r)
		}
	}
	f.Routes = routes
	fl, err := lab.NewFleet(f, lab.FleetOptions{Logger: testLogger(), Partitions: 4, TopicsPerRoute: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	if err := fl.StartAll(); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	pctx, stopProducing := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- fl.Produce(pctx, 12000) }() // about 32 Mbit/s of records
	defer func() {
		stopProducing()
		<-done
	}()
	const leg = "telemetry:hq/kafka"
	in := func() int64 { return legStatus(t, fl, "hq-a", leg, "in").RawBytes }
	measure := func(what string, d time.Duration) float64 {
		b0, t0 := in(), time.Now()
		time.Sleep(d)
		bps := float64(in()-b0) * 8 / time.Since(t0).Seconds()
		t.Logf("%s: %.2f Mbit/s of records committed at hq (%.0f%% of the %.0f Mbit/s link)", what, bps/1e6, 100*bps/rate, rate/1e6)
		return bps
	}
	waitFor(t, 30*time.Second, "the leg to run direct", func() bool { return legStatus(t, fl, "ship-a", leg, "out").Connected })
	time.Sleep(5 * time.Second) // past slow start
	direct := measure("direct ship--hq", 15*time.Second)
	if err := fl.Blackout("ship--hq", 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the leg to relay via dr", func() bool {
		st := legStatus(t, fl, "ship-a", leg, "out")
		return st.Path == "via dr" && st.RerouteSeconds > 0
	})
	time.Sleep(5 * time.Second) // past slow start
	relayed := measure("relayed ship--dr, dr--hq", 15*time.Second)
	t.Logf("relayed / link rate = %.2f; relayed / direct = %.2f", relayed/rate, relayed/direct)
	if lag := legStatus(t, fl, "ship-a", leg, "out").LagRecords; lag <= 0 {
		t.Logf("warning: no backlog at the end (lag %d): the producer, not the link, bounded the measure", lag)
	}
}
