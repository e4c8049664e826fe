package chaos_test

import (
	"math"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/chaos"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// link builds a profile with the same params both ways.
func link(p chaos.Params, events ...chaos.Event) *chaos.Profile {
	return &chaos.Profile{Name: "test", Up: p, Down: p, Events: events}
}

func newImpairment(t *testing.T, p *chaos.Profile, seed uint64) *chaos.Impairment {
	t.Helper()
	im, err := chaos.NewImpairment(p, chaos.Up, seed, t0)
	if err != nil {
		t.Fatal(err)
	}
	return im
}

func within(got, want, rel float64) bool { return math.Abs(got-want) <= rel*want }

func TestImpairmentPerfectLink(t *testing.T) {
	t.Parallel()
	im := newImpairment(t, nil, 1)
	for i := range 1000 {
		now := t0.Add(time.Duration(i) * time.Microsecond)
		d := im.Decide(now, 1200)
		if d.Copies != 1 || !d.At[0].Equal(now) {
			t.Fatalf("packet %d: %+v, want delivered at once", i, d)
		}
	}
}

func TestImpairmentRandomLoss(t *testing.T) {
	t.Parallel()
	for _, loss := range []float64{0.01, 0.05, 0.1, 0.3} {
		const seed, n = 42, 100_000
		im := newImpairment(t, link(chaos.Params{Loss: loss}), seed)
		dropped := 0
		for i := range n {
			d := im.Decide(t0.Add(time.Duration(i)*time.Millisecond), 1000)
			if d.Copies == 0 {
				if d.Drop != chaos.DropLoss {
					t.Fatalf("drop reason %v, want loss", d.Drop)
				}
				dropped++
			}
		}
		got := float64(dropped) / n
		t.Logf("loss %.2f: measured %.4f over %d (seed %d)", loss, got, n, seed)
		if !within(got, loss, 0.10) {
			t.Errorf("loss %.2f: measured %.4f, want within 10%% (seed %d)", loss, got, seed)
		}
	}
}

func TestImpairmentDelayJitter(t *testing.T) {
	t.Parallel()
	const seed = 7
	delay, jitter := 40*time.Millisecond, 5*time.Millisecond
	im := newImpairment(t, link(chaos.Params{Delay: delay, Jitter: jitter}), seed)
	var last time.Time
	lo, hi := time.Hour, time.Duration(0)
	for i := range 10_000 {
		now := t0.Add(time.Duration(i) * 10 * time.Millisecond) // sparse: jitter shows through
		d := im.Decide(now, 1000)
		if d.Copies != 1 {
			t.Fatalf("packet %d dropped: %+v", i, d)
		}
		got := d.At[0].Sub(now)
		if got < delay-jitter || got > delay+jitter {
			t.Fatalf("packet %d delay %v outside [%v, %v] (seed %d)", i, got, delay-jitter, delay+jitter, seed)
		}
		if d.At[0].Before(last) {
			t.Fatalf("packet %d delivered before its predecessor (seed %d)", i, seed)
		}
		last = d.At[0]
		lo, hi = min(lo, got), max(hi, got)
	}
	if lo > delay-jitter+jitter/10 || hi < delay+jitter-jitter/10 {
		t.Errorf("delays span [%v, %v]; want close to [%v, %v] (seed %d)", lo, hi, delay-jitter, delay+jitter, seed)
	}

	// Dense traffic: still within bounds and in order.
	last = time.Time{}
	for i := range 10_000 {
		now := t0.Add(time.Hour + time.Duration(i)*10*time.Microsecond)
		d := im.Decide(now, 1000)
		got := d.At[0].Sub(now)
		if got < delay-jitter || got > delay+jitter || d.At[0].Before(last) {
			t.Fatalf("dense packet %d: delay %v, in order %v (seed %d)", i, got, !d.At[0].Before(last), seed)
		}
		last = d.At[0]
	}
}

func TestImpairmentRateLimit(t *testing.T) {
	t.Parallel()
	const (
		seed = 3
		rate = 8_000_000 // 1 MB/s
		size = 1000
	)
	delay := 20 * time.Millisecond
	im := newImpairment(t, link(chaos.Params{Delay: delay, Rate: rate, QueueDelay: 100 * time.Millisecond}), seed)
	// Offer 2 MB/s (twice the rate) for one simulated second.
	var offered, delivered, queueDrops int
	second := t0.Add(time.Second + delay)
	var last time.Time
	for i := range 2000 {
		now := t0.Add(time.Duration(i) * 500 * time.Microsecond)
		offered += size
		d := im.Decide(now, size)
		switch {
		case d.Copies == 0 && d.Drop == chaos.DropQueue:
			queueDrops++
		case d.Copies == 0:
			t.Fatalf("unexpected drop %v", d.Drop)
		default:
			if d.At[0].Before(last) {
				t.Fatalf("packet %d out of order", i)
			}
			last = d.At[0]
			if !d.At[0].After(second) {
				delivered += size
			}
		}
	}
	t.Logf("offered %d B, delivered %d B within 1s, %d queue drops", offered, delivered, queueDrops)
	if !within(float64(delivered), rate/8, 0.10) {
		t.Errorf("delivered %d B in 1s, want %d within 10%% (seed %d)", delivered, rate/8, seed)
	}
	// Half the offered packets cannot fit; the queue (100 KB) absorbs ~100.
	if queueDrops < 800 || queueDrops > 1000 {
		t.Errorf("queue drops = %d, want about 900", queueDrops)
	}
	// Queueing delay is bounded by the queue: 100 ms at the rate.
	if got := last.Sub(t0.Add(1999 * 500 * time.Microsecond)); got > delay+110*time.Millisecond {
		t.Errorf("last packet waited %v, want at most delay + ~100ms of queue", got)
	}
}

func TestImpairmentGilbertElliott(t *testing.T) {
	t.Parallel()
	const seed, n = 99, 200_000
	g := chaos.GilbertElliott{P: 0.01, R: 0.1, BadLoss: 1}
	im := newImpairment(t, link(chaos.Params{Burst: g}), seed)
	var dropped, runs, runLen int
	inRun := false
	for i := range n {
		d := im.Decide(t0.Add(time.Duration(i)*time.Millisecond), 1000)
		if d.Copies == 0 {
			dropped++
			runLen++
			if !inRun {
				runs++
			}
			inRun = true
		} else {
			inRun = false
		}
	}
	got, want := float64(dropped)/n, g.MeanLoss()
	meanRun := float64(runLen) / float64(runs)
	t.Logf("Gilbert-Elliott: loss %.4f (theory %.4f), mean burst %.2f packets (theory %.2f)", got, want, meanRun, 1/g.R)
	if !within(got, want, 0.10) {
		t.Errorf("loss %.4f, want %.4f within 10%% (seed %d)", got, want, seed)
	}
	if !within(meanRun, 1/g.R, 0.15) {
		t.Errorf("mean burst %.2f, want %.2f within 15%% (seed %d)", meanRun, 1/g.R, seed)
	}
}

func TestImpairmentBlackout(t *testing.T) {
	t.Parallel()
	im := newImpairment(t, link(chaos.Params{Delay: time.Millisecond}), 5)
	im.SetBlackout(true)
	for i := range 1000 {
		now := t0.Add(time.Duration(i) * time.Millisecond)
		if d := im.Decide(now, 100); d.Copies != 0 || d.Drop != chaos.DropBlackout {
			t.Fatalf("packet %d during blackout: %+v", i, d)
		}
	}
	im.SetBlackout(false)
	if d := im.Decide(t0.Add(2*time.Second), 100); d.Copies != 1 {
		t.Fatalf("after blackout: %+v", d)
	}

	im.BlackoutUntil(t0.Add(3 * time.Second))
	if d := im.Decide(t0.Add(2500*time.Millisecond), 100); d.Drop != chaos.DropBlackout {
		t.Errorf("inside BlackoutUntil: %+v", d)
	}
	if !im.BlackedOut(t0.Add(2999 * time.Millisecond)) {
		t.Error("BlackedOut inside BlackoutUntil = false")
	}
	if d := im.Decide(t0.Add(3*time.Second), 100); d.Copies != 1 {
		t.Errorf("at end of BlackoutUntil: %+v", d)
	}
}

func TestImpairmentScheduledEvents(t *testing.T) {
	t.Parallel()
	const seed = 11
	p := link(chaos.Params{Delay: 10 * time.Millisecond},
		chaos.Event{Kind: chaos.EventBlackout, At: 10 * time.Second, Every: 10 * time.Second, Duration: time.Second},
		chaos.Event{Kind: chaos.EventHandover, At: 5 * time.Second, Every: 10 * time.Second, Duration: 500 * time.Millisecond, ExtraDelay: 30 * time.Millisecond},
		chaos.Event{Kind: chaos.EventRainFade, Dir: chaos.Down, At: time.Minute, Duration: 30 * time.Second, Ramp: 10 * time.Second, Loss: 0.5},
	)
	up := newImpairment(t, p, seed)
	down, err := chaos.NewImpairment(p, chaos.Down, seed, t0)
	if err != nil {
		t.Fatal(err)
	}
	// Handover adds delay at [5s, 5.5s). (Times must not go backwards.)
	if d := up.Decide(t0.Add(5200*time.Millisecond), 100); d.At[0].Sub(t0.Add(5200*time.Millisecond)) != 40*time.Millisecond {
		t.Errorf("during handover: delay %v, want 40ms", d.At[0].Sub(t0.Add(5200*time.Millisecond)))
	}
	if d := up.Decide(t0.Add(6*time.Second), 100); d.At[0].Sub(t0.Add(6*time.Second)) != 10*time.Millisecond {
		t.Errorf("after handover: delay %v, want 10ms", d.At[0].Sub(t0.Add(6*time.Second)))
	}
	// Blackouts at [10s,11s), [20s,21s), ...
	for _, tt := range []struct {
		at   time.Duration
		drop bool
	}{{9999 * time.Millisecond, false}, {10 * time.Second, true}, {10999 * time.Millisecond, true}, {11 * time.Second, false}, {20500 * time.Millisecond, true}} {
		d := up.Decide(t0.Add(tt.at), 100)
		if got := d.Drop == chaos.DropBlackout; got != tt.drop {
			t.Errorf("at %v: blackout drop = %v, want %v", tt.at, got, tt.drop)
		}
	}
	// Rain fade on down only: loss 0 -> 50% -> 0 over [60s, 90s).
	lossIn := func(im *chaos.Impairment, from, to time.Duration) float64 {
		n, lost := 0, 0
		for at := from; at < to; at += 100 * time.Microsecond {
			if d := im.Decide(t0.Add(at), 100); d.Drop == chaos.DropLoss {
				lost++
			} else if d.Drop != chaos.DropNone && d.Drop != chaos.DropBlackout {
				t.Fatalf("unexpected drop %v", d.Drop)
			}
			n++
		}
		return float64(lost) / float64(n)
	}
	if got := lossIn(down, 71*time.Second, 79*time.Second); !within(got, 0.5, 0.05) {
		t.Errorf("rain fade peak loss %.3f, want 0.5 (seed %d)", got, seed)
	}
	if got := lossIn(down, 61500*time.Millisecond, 68500*time.Millisecond); !within(got, 0.25, 0.15) {
		t.Errorf("rain fade ramp loss %.3f, want about 0.25 (seed %d)", got, seed)
	}
	if got := lossIn(up, 71*time.Second, 79*time.Second); got != 0 {
		t.Errorf("rain fade leaked into up: loss %.3f", got)
	}
}

func TestImpairmentDuplicateReorderMTU(t *testing.T) {
	t.Parallel()
	const seed, n = 17, 100_000
	im := newImpairment(t, link(chaos.Params{Delay: 10 * time.Millisecond, Duplicate: 0.05, Reorder: 0.02, ReorderGap: 5 * time.Millisecond, MTU: 1500}), seed)
	var dups, reordered, overtaken int
	var lastInOrder time.Time
	for i := range n {
		now := t0.Add(time.Duration(i) * time.Millisecond)
		d := im.Decide(now, 1000)
		switch d.Copies {
		case 2:
			dups++
			if !d.At[1].Equal(d.At[0]) {
				t.Fatalf("duplicate at %v, original at %v", d.At[1], d.At[0])
			}
		case 0:
			t.Fatalf("dropped: %v", d.Drop)
		}
		if d.Reordered {
			reordered++
			if got := d.At[0].Sub(now); got != 15*time.Millisecond {
				t.Fatalf("reordered packet delayed %v, want 15ms", got)
			}
		} else {
			if d.At[0].Before(lastInOrder) {
				overtaken++
			}
			lastInOrder = d.At[0]
		}
	}
	if got := float64(dups) / n; !within(got, 0.05, 0.10) {
		t.Errorf("duplicates %.4f, want 0.05 within 10%% (seed %d)", got, seed)
	}
	if got := float64(reordered) / n; !within(got, 0.02, 0.10) {
		t.Errorf("reordered %.4f, want 0.02 within 10%% (seed %d)", got, seed)
	}
	if overtaken != 0 {
		t.Errorf("%d in-order packets went backwards", overtaken)
	}
	if d := im.Decide(t0.Add(time.Hour), 1501); d.Drop != chaos.DropMTU {
		t.Errorf("1501-byte packet: %+v, want MTU drop", d)
	}
}

func TestImpairmentDeterministic(t *testing.T) {
	t.Parallel()
	p, err := chaos.LoadProfile("mobile-3g-flaky")
	if err != nil {
		t.Fatal(err)
	}
	run := func(seed uint64) []chaos.Decision {
		im, err := chaos.NewImpairment(p, chaos.Up, seed, t0)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]chaos.Decision, 5000)
		for i := range out {
			out[i] = im.Decide(t0.Add(time.Duration(i)*3*time.Millisecond), 200+i%1200)
		}
		return out
	}
	a, b, c := run(1), run(1), run(2)
	same := func(x, y []chaos.Decision) bool {
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	if !same(a, b) {
		t.Error("same seed gave different decisions")
	}
	if same(a, c) {
		t.Error("different seeds gave the same decisions")
	}
}

func TestImpairmentSetProfileLive(t *testing.T) {
	t.Parallel()
	im := newImpairment(t, nil, 1)
	if d := im.Decide(t0, 100); !d.At[0].Equal(t0) {
		t.Fatalf("no profile: %+v", d)
	}
	wan, err := chaos.LoadProfile("wan")
	if err != nil {
		t.Fatal(err)
	}
	if err := im.SetProfile(wan.WithLoss(0)); err != nil {
		t.Fatal(err)
	}
	d := im.Decide(t0.Add(time.Second), 100)
	if got := d.At[0].Sub(t0.Add(time.Second)); got < 39*time.Millisecond || got > 41*time.Millisecond {
		t.Errorf("after SetProfile(wan): delay %v, want ~40ms", got)
	}
	if err := im.SetProfile(wan.WithLoss(2)); err == nil {
		t.Error("SetProfile with loss 2 succeeded")
	}
	if _, err := chaos.NewImpairment(nil, chaos.Dir(0), 1, t0); err == nil {
		t.Error("NewImpairment with direction both succeeded")
	}
}
