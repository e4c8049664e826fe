package lab_test

import (
	"context"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/chaos/lab"
)

// TestSoakGeoSatellite streams over the geo-satellite profile (600 ms RTT,
// 1% loss, 10 Mbit/s) through the impairment proxy while the link blacks out
// at random times (2-8 s each) and the receiving gateway restarts once, then
// checks by read-back that nothing was lost, duplicated or reordered.
// MERIDIAN_SOAK sets the streaming time (default 90s; CI keeps the whole
// test under 3 minutes).
func TestSoakGeoSatellite(t *testing.T) {
	if testing.Short() {
		t.Skip("soak")
	}
	run := 90 * time.Second
	if v := os.Getenv("MERIDIAN_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("MERIDIAN_SOAK=%q: %v", v, err)
		}
		run = d
	}
	const rate = 150 // records/s, about 36 KB/s raw
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	l := newLab(t, lab.Options{Profile: "geo-satellite", Seed: seed, Window: 4 << 20, MaxBatchBytes: 256 << 10})
	for _, g := range []string{lab.HQGateway, lab.EdgeGateway} {
		if err := l.Start(g); err != nil {
			t.Fatal(err)
		}
	}
	p, err := lab.NewProducer(l.EdgeOpts(), e2eTopics, seed, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	total := int64(rate * run.Seconds())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, rate, total) }()

	// The schedule: blackouts spread over the run, one restart in the middle.
	start := time.Now()
	type event struct {
		at       time.Duration
		blackout time.Duration // 0: restart the receiving gateway
	}
	var events []event
	for i := range 3 {
		slot := run / 4
		events = append(events, event{at: slot*time.Duration(i) + time.Duration(rng.Int64N(int64(slot/2))) + 5*time.Second,
			blackout: 2*time.Second + time.Duration(rng.Int64N(int64(6*time.Second)))})
	}
	events = append(events, event{at: run * 5 / 8})
	for len(events) > 0 {
		next := 0
		for i, e := range events {
			if e.at < events[next].at {
				next = i
			}
		}
		e := events[next]
		events = append(events[:next], events[next+1:]...)
		time.Sleep(time.Until(start.Add(e.at)))
		if e.blackout > 0 {
			t.Logf("%v: blackout for %v", time.Since(start).Round(time.Second), e.blackout.Round(100*time.Millisecond))
			l.Proxy.Blackout(e.blackout)
			continue
		}
		t.Logf("%v: restarting %s", time.Since(start).Round(time.Second), lab.HQGateway)
		if err := l.Stop(lab.HQGateway); err != nil {
			t.Fatal(err)
		}
		if err := l.Start(lab.HQGateway); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	produced := time.Now()
	rep := waitExact(t, l, total, 2*time.Minute)
	st := l.Proxy.Stats()
	t.Logf("read-back after %v streaming and %v catching up: %v; proxy: %+v", produced.Sub(start).Round(time.Second),
		time.Since(produced).Round(time.Second), rep, st)
}
