package lab_test

import (
	"context"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/chaos/lab"
	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/mirror"
)

// TestFleetRelay runs examples/relay-fleet.yaml (ship, hq, dr, plant) with
// every link on the wan profile and a 3 s hold-down, blacks out ship--hq
// for 20 s while ship--dr and dr--hq stay up, and checks that the ship's
// leg to hq relays through dr within 10 s of the link being declared down,
// that records produced during the outage reach hq that way, that the leg
// moves back once the link has been healthy for the hold-down, that dr's
// cluster got nothing of it, and that every route reads back exact: no
// record lost, duplicated or reordered across both switches. The fleet is
// issue 14's four regions: fan-in from two sites to hq with renames, a
// filter that sends only the ship's alarms, hq to dr, and orders
// active-active between hq and dr (each cluster's orders once in the
// other, none come back).
func TestFleetRelay(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a four-region fleet for about 45 s")
	}
	base := runtime.NumGoroutine()
	fl := relayFleet(t)
	ctx := t.Context()
	pctx, stopProducing := context.WithCancel(ctx)
	produced := make(chan error, 1)
	go func() { produced <- fl.Produce(pctx, 200) }()
	defer func() {
		stopProducing()
		<-produced
	}()

	const leg = "telemetry:hq/kafka"
	outLeg := func() mirror.LegStatus { return legStatus(t, fl, "ship-a", leg, "out") }
	inLeg := func() mirror.LegStatus { return legStatus(t, fl, "hq-a", leg, "in") }
	waitFor(t, 30*time.Second, "the ship's leg to run direct and commit at hq", func() bool {
		return outLeg().Connected && outLeg().Path == "direct" && inLeg().Records > 0
	})

	const blackout = 20 * time.Second
	t0 := time.Now()
	if err := fl.Blackout("ship--hq", blackout); err != nil {
		t.Fatal(err)
	}
	waitFor(t, blackout, "the leg to relay via dr", func() bool {
		st := outLeg()
		return st.Path == "via dr" && st.Connected && st.RerouteSeconds > 0 // hq's first Resume came via dr
	})
	tVia := time.Since(t0)
	st := outLeg()
	t.Logf("relayed %.1fs after the blackout began, %.2fs after the link was declared down", tVia.Seconds(), st.RerouteSeconds)
	if st.RerouteSeconds <= 0 || st.RerouteSeconds > 10 {
		t.Errorf("rerouted %.2fs after the link was declared down, want within 10s", st.RerouteSeconds)
	}
	waitFor(t, blackout-tVia, "hq to take the leg from the relay", func() bool { return inLeg().Path == "via dr" && inLeg().Peer == "dr-a" })
	during := inLeg().Records
	// Records committed at hq before the blackout ends crossed dr.
	time.Sleep(time.Until(t0.Add(blackout - time.Second)))
	if in := inLeg(); in.Path != "via dr" || in.Records <= during {
		t.Errorf("during the outage hq committed %d records via %q (had %d), want more via dr", in.Records, in.Path, during)
	} else {
		t.Logf("hq committed %d records via dr during the outage", in.Records-during)
	}

	waitFor(t, 30*time.Second, "the leg to move back to the direct link", func() bool { return outLeg().Path == "direct" && outLeg().Connected })
	tBack := time.Since(t0)
	t.Logf("back on the direct link %.1fs after the blackout began (it ended at %.0fs, hold-down 3s)", tBack.Seconds(), blackout.Seconds())
	if tBack < blackout+3*time.Second {
		t.Errorf("moved back %.1fs after the blackout began, before the link had been healthy for its hold-down", tBack.Seconds())
	}
	waitFor(t, 20*time.Second, "hq to take the leg directly again", func() bool { return inLeg().Path == "direct" && inLeg().Peer == "ship-a" })
	time.Sleep(2 * time.Second) // traffic on the direct link again
	stopProducing()
	if err := <-produced; err != nil {
		t.Fatalf("produce: %v", err)
	}
	produced <- nil // for the deferred receive

	for _, r := range fl.WaitVerified(ctx, 60*time.Second) {
		t.Logf("%s -> %s: %s %s", r.Route, r.To, r.Report.String(), r.Err)
		if !r.Exact() || r.Mirrored == 0 {
			t.Errorf("%s -> %s: lost %d, duplicated %d, reordered %d, unexpected %d of %d (%s) %v",
				r.Route, r.To, r.Lost, r.Duplicated, r.Reordered, r.Unexpected, r.Produced, r.Err, r.Samples)
		}
	}
	if st := outLeg(); st.PathSwitches != 2 {
		t.Errorf("the leg switched path %d times, want 2 (away and back)", st.PathSwitches)
	}
	metrics := scrape(t, fl.AdminAddrs()["ship-a"])
	for _, want := range []string{
		`meridian_leg_path_switches_total{leg="telemetry:hq/kafka",to="via dr"} 1`,
		`meridian_leg_path_switches_total{leg="telemetry:hq/kafka",to="direct"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("ship-a's metrics lack %s", want)
		}
	}
	if m := scrape(t, fl.AdminAddrs()["dr-a"]); !strings.Contains(m, `meridian_relay_frames_total{dir="down",origin="ship-a"}`) {
		t.Errorf("dr-a's metrics show no relayed frame")
	}
	// The relay wrote nothing to its own cluster.
	opts, err := fl.ClusterOpts("dr/kafka")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ts, err := kadm.NewClient(cl).ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range ts.Names() {
		if strings.Contains(name, "telemetry") {
			t.Errorf("dr's cluster has topic %s: the relay wrote the leg", name)
		}
		if strings.HasPrefix(name, "hq.dr.") || strings.HasPrefix(name, "dr.") {
			t.Errorf("dr's cluster has topic %s: an order came back from hq (active-active loop)", name)
		}
	}
	hqOpts, err := fl.ClusterOpts("hq/kafka")
	if err != nil {
		t.Fatal(err)
	}
	hcl, err := kgo.NewClient(hqOpts...)
	if err != nil {
		t.Fatal(err)
	}
	hts, err := kadm.NewClient(hcl).ListTopics(ctx)
	hcl.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range hts.Names() {
		if strings.HasPrefix(name, "dr.hq.") || strings.HasPrefix(name, "hq.") {
			t.Errorf("hq's cluster has topic %s: an order came back from dr (active-active loop)", name)
		}
	}
	// Every goroutine of the switch, the probe and the relay ends with
	// its gateway.
	cl.Close()
	stopProducing()
	if err := fl.Close(); err != nil {
		t.Errorf("close fleet: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base+5 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base+5 {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines leaked: %d before, %d after\n%s", base, n, buf[:runtime.Stack(buf, true)])
	}
}

// relayFleet runs examples/relay-fleet.yaml with every link on wan, a 3 s
// hold-down on ship--hq, and without the backup route (so that dr's
// cluster gets nothing of the ship's). edit, if not nil, changes the file
// first.
func relayFleet(t *testing.T, edit ...func(*config.File)) *lab.Fleet {
	t.Helper()
	f, _, err := lab.LoadFleetFile("../../examples/relay-fleet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range edit {
		e(f)
	}
	for i := range f.Links {
		f.Links[i].Profile = "wan"
		if f.Links[i].Name == "ship--hq" {
			f.Links[i].HoldDown = 3 * time.Second
		}
	}
	var routes = f.Routes[:0]
	for _, r := range f.Routes {
		if r.Name != "backup" {
			routes = append(routes, r)
		}
	}
	f.Routes = routes
	fl, err := lab.NewFleet(f, lab.FleetOptions{Logger: testLogger(), Partitions: 3, TopicsPerRoute: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fl.Close() })
	if err := fl.StartAll(); err != nil {
		t.Fatal(err)
	}
	return fl
}

// TestFleetRelayFlap: a direct link that comes back for a moment and dies
// again within the hold-down does not get the leg back; only once it has
// stayed up for the hold-down does the leg move, once, and every record
// still reads back exact.
func TestFleetRelayFlap(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a four-region fleet for about 40 s")
	}
	fl := relayFleet(t)
	ctx := t.Context()
	pctx, stopProducing := context.WithCancel(ctx)
	produced := make(chan error, 1)
	go func() { produced <- fl.Produce(pctx, 200) }()
	defer func() {
		stopProducing()
		<-produced
	}()
	const leg = "telemetry:hq/kafka"
	outLeg := func() mirror.LegStatus { return legStatus(t, fl, "ship-a", leg, "out") }
	waitFor(t, 30*time.Second, "the ship's leg to run direct", func() bool { return outLeg().Connected && outLeg().Path == "direct" })
	t0 := time.Now()
	if err := fl.Blackout("ship--hq", 9*time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 9*time.Second, "the leg to relay via dr", func() bool { return outLeg().Path == "via dr" })
	// Up for 2 s (less than the 3 s hold-down), then down again for 8 s.
	time.Sleep(time.Until(t0.Add(11 * time.Second)))
	if err := fl.Blackout("ship--hq", 8*time.Second); err != nil {
		t.Fatal(err)
	}
	secondEnd := t0.Add(19 * time.Second)
	waitFor(t, 30*time.Second, "the leg to move back", func() bool { return outLeg().Path == "direct" && outLeg().Connected })
	back := time.Since(t0)
	t.Logf("back on the direct link %.1fs after the first blackout began (second blackout ended at 19s)", back.Seconds())
	if time.Now().Before(secondEnd.Add(3 * time.Second)) {
		t.Errorf("moved back %.1fs after the first blackout began: during the flap, before the link had been up for its hold-down", back.Seconds())
	}
	if n := outLeg().PathSwitches; n != 2 {
		t.Errorf("the leg switched path %d times, want 2 (away once, back once)", n)
	}
	// The probe saw the link answer during the flap and drop again.
	m := scrape(t, fl.AdminAddrs()["ship-a"])
	for _, want := range []string{`meridian_relay_probes_total{outcome="dropped",peer="hq-a"} 1`, `meridian_relay_probes_total{outcome="held",peer="hq-a"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("ship-a's metrics lack %s", want)
		}
	}
	time.Sleep(2 * time.Second)
	stopProducing()
	if err := <-produced; err != nil {
		t.Fatalf("produce: %v", err)
	}
	produced <- nil
	for _, r := range fl.WaitVerified(ctx, 60*time.Second) {
		t.Logf("%s -> %s: %s %s", r.Route, r.To, r.Report.String(), r.Err)
		if !r.Exact() || r.Mirrored == 0 {
			t.Errorf("%s -> %s: lost %d, duplicated %d, reordered %d, unexpected %d of %d (%s) %v",
				r.Route, r.To, r.Lost, r.Duplicated, r.Reordered, r.Unexpected, r.Produced, r.Err, r.Samples)
		}
	}
}

// TestFleetRelayNextPath: with a second relay region (eu, dearer than
// dr), cutting both ship--hq and ship--dr sends the leg through eu: the
// sender tries the next relay path when the cheapest fails, and every
// record still reads back exact.
func TestFleetRelayNextPath(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a five-region fleet for about 40 s")
	}
	fl := relayFleet(t, func(f *config.File) {
		f.Regions = append(f.Regions, config.Region{Name: "eu",
			Clusters: []config.Cluster{{Name: "kafka", Kind: "kafka", Bootstrap: []string{"127.0.0.1:9092"}}},
			Gateways: []config.Gateway{{Name: "eu-a", Listen: "127.0.0.1:1"}}})
		f.Links = append(f.Links,
			config.Link{Name: "ship--eu", Between: []string{"ship", "eu"}, Transport: "quic", Profile: "wan", Compression: "zstd", Dial: "ship", Cost: 40},
			config.Link{Name: "eu--hq", Between: []string{"eu", "hq"}, Transport: "quic", Profile: "wan", Compression: "zstd", Dial: "eu", Cost: 40})
	})
	ctx := t.Context()
	pctx, stopProducing := context.WithCancel(ctx)
	produced := make(chan error, 1)
	go func() { produced <- fl.Produce(pctx, 200) }()
	defer func() {
		stopProducing()
		<-produced
	}()
	const leg = "telemetry:hq/kafka"
	outLeg := func() mirror.LegStatus { return legStatus(t, fl, "ship-a", leg, "out") }
	waitFor(t, 30*time.Second, "the ship's leg to run direct", func() bool { return outLeg().Connected && outLeg().Path == "direct" })
	for _, l := range []string{"ship--hq", "ship--dr"} {
		if err := fl.Blackout(l, 40*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now()
	waitFor(t, 40*time.Second, "the leg to relay via eu", func() bool {
		st := outLeg()
		return st.Path == "via eu" && st.Connected && st.RerouteSeconds > 0
	})
	st := outLeg()
	t.Logf("relayed via eu %.1fs after both links went dark (declared down to first Resume: %.1fs)", time.Since(t0).Seconds(), st.RerouteSeconds)
	if st.RerouteSeconds > 10 {
		t.Errorf("rerouted %.1fs after the direct link was declared down, want within 10s even when the cheapest relay is down too", st.RerouteSeconds)
	}
	time.Sleep(3 * time.Second) // records cross eu
	stopProducing()
	if err := <-produced; err != nil {
		t.Fatalf("produce: %v", err)
	}
	produced <- nil
	for _, r := range fl.WaitVerified(ctx, 60*time.Second) {
		t.Logf("%s -> %s: %s %s", r.Route, r.To, r.Report.String(), r.Err)
		if !r.Exact() || r.Mirrored == 0 {
			t.Errorf("%s -> %s: lost %d, duplicated %d, reordered %d, unexpected %d of %d (%s) %v",
				r.Route, r.To, r.Lost, r.Duplicated, r.Reordered, r.Unexpected, r.Produced, r.Err, r.Samples)
		}
	}
}

func legStatus(t *testing.T, fl *lab.Fleet, gw, leg, dir string) mirror.LegStatus {
	t.Helper()
	g := fl.Gateway(gw)
	if g == nil {
		t.Fatalf("gateway %s is not running", gw)
	}
	for _, l := range g.Status().Legs {
		if l.Leg == leg && l.Direction == dir {
			return l
		}
	}
	t.Fatalf("gateway %s has no %s leg %s", gw, dir, leg)
	return mirror.LegStatus{}
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
