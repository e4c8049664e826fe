package profile_test

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/topology/profile"
)

func TestEmbeddedProfilesLoad(t *testing.T) {
	t.Parallel()
	want := []string{"geo-satellite", "lan", "leo-satellite", "mobile-3g-flaky", "mobile-lte", "wan"}
	if got := profile.Names(); !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	for _, name := range want {
		p, err := profile.Load(name)
		if err != nil {
			t.Errorf("Load(%q): %v", name, err)
			continue
		}
		if p.Name != name {
			t.Errorf("Load(%q).Name = %q", name, p.Name)
		}
		if p.Description == "" {
			t.Errorf("%s: no description", name)
		}
		if err := p.Validate(); err != nil {
			t.Errorf("%s: Validate: %v", name, err)
		}
		for _, d := range []profile.Params{p.Up, p.Down} {
			if d.MTU != 1500 {
				t.Errorf("%s: MTU = %d, want 1500", name, d.MTU)
			}
		}
	}
}

func TestEmbeddedProfileFigures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		rtt      time.Duration
		loss     [2]float64 // steady-state mean loss range
		rate     [2]int64   // up rate range, bit/s
		events   int
		eventDir profile.EventKind
	}{
		{"lan", 500 * time.Microsecond, [2]float64{0, 0}, [2]int64{1e9, 100e9}, 0, 0},
		{"wan", 80 * time.Millisecond, [2]float64{0, 0.001}, [2]int64{100e6, 100e9}, 0, 0},
		{"geo-satellite", 600 * time.Millisecond, [2]float64{0.005, 0.02}, [2]int64{2e6, 20e6}, 2, profile.EventRainFade},
		{"leo-satellite", 40 * time.Millisecond, [2]float64{0, 0.01}, [2]int64{5e6, 100e6}, 1, profile.EventHandover},
		{"mobile-lte", 60 * time.Millisecond, [2]float64{0.001, 0.01}, [2]int64{10e6, 30e6}, 0, 0},
		{"mobile-3g-flaky", 300 * time.Millisecond, [2]float64{0.025, 0.035}, [2]int64{500e3, 2e6}, 1, profile.EventBlackout},
	}
	for _, tt := range tests {
		p, err := profile.Load(tt.name)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.RTT(); got != tt.rtt {
			t.Errorf("%s: RTT() = %v, want %v", tt.name, got, tt.rtt)
		}
		if got := p.Up.MeanLoss(); got < tt.loss[0] || got > tt.loss[1] {
			t.Errorf("%s: mean loss = %.4f, want within %v", tt.name, got, tt.loss)
		}
		if got := p.Up.Rate; got < tt.rate[0] || got > tt.rate[1] {
			t.Errorf("%s: up rate = %d, want within %v", tt.name, got, tt.rate)
		}
		if len(p.Events) != tt.events {
			t.Errorf("%s: %d events, want %d", tt.name, len(p.Events), tt.events)
		} else if tt.events > 0 && p.Events[0].Kind != tt.eventDir {
			t.Errorf("%s: first event %v, want %v", tt.name, p.Events[0].Kind, tt.eventDir)
		}
	}

	geo, _ := profile.Load("geo-satellite")
	if geo.Up.Loss != 0.01 || geo.Up.Rate != 10_000_000 {
		t.Errorf("geo-satellite defaults: loss %v rate %d, want 0.01 and 10Mbit", geo.Up.Loss, geo.Up.Rate)
	}
	leo, _ := profile.Load("leo-satellite")
	if h := leo.Events[0]; h.Every != 15*time.Second || h.ExtraDelay <= 0 || h.Loss <= 0 {
		t.Errorf("leo-satellite handover = %+v, want every 15s with extra delay and loss", h)
	}
	if leo.Up.Rate >= leo.Down.Rate {
		t.Errorf("leo-satellite: up rate %d should be below down rate %d", leo.Up.Rate, leo.Down.Rate)
	}
}

func TestLoadUnknown(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"nope", "", "../wan", "WAN"} {
		_, err := profile.Load(name)
		if !errors.Is(err, profile.ErrUnknown) {
			t.Errorf("Load(%q) err = %v, want ErrUnknown", name, err)
			continue
		}
		if !strings.Contains(err.Error(), "geo-satellite") {
			t.Errorf("Load(%q) err = %q, want it to list the known profiles", name, err)
		}
	}
}

func TestParseOverridesAndUnits(t *testing.T) {
	t.Parallel()
	src := `
description: test
link:
  delay: 100ms
  jitter: 10ms
  loss: 0.5%
  rate: 8Mbit/s
  queue: 64KiB
  burst_loss: {p: 1%, r: 0.2}
up:
  rate: 512kbit
  queue: 250ms
  burst_loss: {bad_loss: 40%}
down:
  delay: 50ms
  mtu: 1400
events:
  - {kind: blackout, every: 30s, duration: 1s}
  - {kind: rain_fade, direction: down, at: 1m, duration: 40s, ramp: 10s, loss: 30%, rate_factor: 50%}
`
	p, err := profile.Parse("custom", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := profile.Profile{
		Name:        "custom",
		Description: "test",
		Up: profile.Params{Delay: 100 * time.Millisecond, Jitter: 10 * time.Millisecond, Loss: 0.005,
			Burst: profile.GilbertElliott{P: 0.01, R: 0.2, BadLoss: 0.4}, Rate: 512_000, QueueDelay: 250 * time.Millisecond, MTU: 1500},
		Down: profile.Params{Delay: 50 * time.Millisecond, Jitter: 10 * time.Millisecond, Loss: 0.005,
			Burst: profile.GilbertElliott{P: 0.01, R: 0.2, BadLoss: 1}, Rate: 8_000_000, QueueBytes: 64 << 10, MTU: 1400},
		Events: []profile.Event{
			{Kind: profile.EventBlackout, At: 30 * time.Second, Every: 30 * time.Second, Duration: time.Second},
			{Kind: profile.EventRainFade, Dir: profile.Down, At: time.Minute, Duration: 40 * time.Second, Ramp: 10 * time.Second, Loss: 0.3, RateFactor: 0.5},
		},
	}
	if p.Up != want.Up {
		t.Errorf("Up = %+v\nwant %+v", p.Up, want.Up)
	}
	if p.Down != want.Down {
		t.Errorf("Down = %+v\nwant %+v", p.Down, want.Down)
	}
	if !slices.Equal(p.Events, want.Events) {
		t.Errorf("Events = %+v\nwant %+v", p.Events, want.Events)
	}
	if got, want := p.Up.QueueLimit(p.Up.Rate), 512_000/8/4; got != want {
		t.Errorf("up QueueLimit = %d, want %d", got, want)
	}
	if got := p.RTT(); got != 150*time.Millisecond {
		t.Errorf("RTT = %v, want 150ms", got)
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		src  string
		want []string // substrings of the error, all required
	}{
		{"unknown field", "link:\n  delay: 1ms\n  lsos: 1%\n", []string{`3:3: link.lsos: unknown field`, "loss"}},
		{"unknown top", "lnk: {}\n", []string{`1:1: lnk: unknown field`}},
		{"loss over one", "link:\n  loss: 1.5\n", []string{`2:9: link.loss: 1.5 is over 1 (write 1.5% for a percentage)`}},
		{"loss percent", "link:\n  loss: 150%\n", []string{`link.loss`, `within [0, 1]`}},
		{"bad duration", "link:\n  delay: 40\n", []string{`2:10: link.delay: "40" is not a duration`}},
		{"bad rate", "link:\n  rate: 10MB\n", []string{`link.rate: "10MB" is not a rate`}},
		{"bad queue", "link:\n  queue: lots\n", []string{`link.queue`, `not a queue size`}},
		{"jitter over delay", "link:\n  delay: 1ms\n  jitter: 5ms\n", []string{`3:11: link.jitter: (5ms) must not exceed delay (1ms)`}},
		{"jitter over up delay", "link:\n  delay: 10ms\n  jitter: 5ms\nup:\n  delay: 1ms\n", []string{`up.jitter: (5ms) must not exceed delay (1ms)`}},
		{"duplicate key", "link:\n  loss: 1%\n  loss: 2%\n", []string{`3:3: link.loss: duplicate key`}},
		{"two documents", "link: {}\n---\nlink: {}\n", []string{"more than one YAML document"}},
		{"empty", "", []string{"empty document"}},
		{"not a mapping", "- a\n", []string{"want a mapping"}},
		{"syntax", "link: [\n", []string{`profile "bad"`, "yaml"}},
		{"burst without r", "link:\n  burst_loss: {p: 1%}\n", []string{"link.burst_loss.r: must be > 0"}},
		{"event overlap", "events:\n  - {kind: blackout, every: 1s, duration: 2s}\n", []string{"events[0].every: (1s) must not be shorter than duration (2s)"}},
		{"event kind", "events:\n  - {kind: tornado, every: 1s, duration: 1s}\n", []string{`events[0].kind: unknown kind "tornado"`}},
		{"event no at", "events:\n  - {kind: blackout, duration: 1s}\n", []string{"events[0].at: missing"}},
		{"event wrong field", "events:\n  - {kind: blackout, every: 10s, duration: 1s, ramp: 1s}\n", []string{"events[0].ramp: only for kind rain_fade"}},
		{"ramp too long", "events:\n  - {kind: rain_fade, every: 10m, duration: 10s, ramp: 6s, loss: 5%}\n", []string{"events[0].ramp: (6s) twice must fit in duration (10s)"}},
		{"small mtu queue", "link:\n  rate: 1Mbit\n  queue: 1000\n", []string{"link.queue: (1000 bytes) must hold one MTU-sized packet (1500 bytes)"}},
		{"missing value", "link:\n  delay:\n", []string{"link.delay: missing value"}},
		{"many at once", "link:\n  loss: 2\n  rate: fast\n  mtu: big\n", []string{"link.loss", "link.rate", "link.mtu"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := profile.Parse("bad", []byte(tt.src))
			if err == nil {
				t.Fatalf("Parse succeeded, want error containing %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
	// Reported once even though it applies to both directions.
	_, err := profile.Parse("bad", []byte("link:\n  delay: 1ms\n  jitter: 5ms\n"))
	if n := strings.Count(err.Error(), "jitter"); n != 1 {
		t.Errorf("jitter error reported %d times, want once: %v", n, err)
	}
	var pe *profile.Error
	if !errors.As(err, &pe) || pe.Line != 3 || pe.Path != "link.jitter" {
		t.Errorf("errors.As(*Error) = %+v, want line 3 path link.jitter", pe)
	}
	if _, err := profile.Parse("has space", []byte("link: {}\n")); err == nil {
		t.Error("Parse with a bad name succeeded")
	}
}

func TestWithCopies(t *testing.T) {
	t.Parallel()
	geo, err := profile.Load("geo-satellite")
	if err != nil {
		t.Fatal(err)
	}
	orig := geo.Clone()

	l := geo.WithLoss(0.02)
	if l.Up.Loss != 0.02 || l.Down.Loss != 0.02 || l.Up.MeanLoss() != 0.02 {
		t.Errorf("WithLoss(0.02): up %v down %v mean %v", l.Up.Loss, l.Down.Loss, l.Up.MeanLoss())
	}
	r := geo.WithRate(2_000_000)
	if r.Up.Rate != 2_000_000 || r.Down.Rate != 2_000_000 {
		t.Errorf("WithRate: %d/%d", r.Up.Rate, r.Down.Rate)
	}
	if got, want := r.Up.QueueLimit(r.Up.Rate), 2_000_000/8/2; got != want {
		t.Errorf("WithRate: queue %d bytes, want %d (500ms at the new rate)", got, want)
	}
	d := geo.WithRTT(800 * time.Millisecond)
	if d.RTT() != 800*time.Millisecond || d.Up.Delay != 400*time.Millisecond {
		t.Errorf("WithRTT(800ms): rtt %v up %v", d.RTT(), d.Up.Delay)
	}
	small := geo.WithRTT(2 * time.Millisecond)
	if err := small.Validate(); err != nil {
		t.Errorf("WithRTT(2ms) invalid: %v", err)
	}
	if e := geo.WithoutEvents(); len(e.Events) != 0 {
		t.Errorf("WithoutEvents left %d", len(e.Events))
	}
	l.Events[0].Loss = 0.9 // must not alias the original
	if geo.Up != orig.Up || geo.Down != orig.Down || !slices.Equal(geo.Events, orig.Events) {
		t.Error("With* changed the original profile")
	}
}

func TestParseRate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want int64
	}{
		{"10Mbit", 10_000_000}, {"10Mbit/s", 10_000_000}, {"1.5Gbit", 1_500_000_000},
		{"512kbit", 512_000}, {"64kbit", 64_000}, {"0", 0}, {"unlimited", 0}, {"100 mbit", 100_000_000},
		{"200Gbit", 200_000_000_000}, {"10 Mbit/s", 10_000_000},
	}
	for _, tt := range tests {
		got, err := profile.ParseRate(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	// A bare number is refused as in topology files (bits or bytes?): one
	// grammar, package internal/units.
	for _, bad := range []string{"10MB", "fast", "-1Mbit", "10/s", "1bit", "64000", "10Mbps", "2Tbit"} {
		if _, err := profile.ParseRate(bad); err == nil {
			t.Errorf("ParseRate(%q) succeeded", bad)
		}
	}
}

func TestGilbertElliottMean(t *testing.T) {
	t.Parallel()
	g := profile.GilbertElliott{P: 0.01, R: 0.1, BadLoss: 1}
	if got, want := g.MeanLoss(), 0.01/0.11; math.Abs(got-want) > 1e-12 {
		t.Errorf("MeanLoss = %v, want %v", got, want)
	}
}

func TestEventSchedule(t *testing.T) {
	t.Parallel()
	e := profile.Event{Kind: profile.EventRainFade, At: 10 * time.Second, Every: time.Minute, Duration: 20 * time.Second, Ramp: 5 * time.Second, Loss: 0.5}
	tests := []struct {
		t        time.Duration
		active   bool
		strength float64
	}{
		{0, false, 0}, {10 * time.Second, true, 0}, {12500 * time.Millisecond, true, 0.5},
		{20 * time.Second, true, 1}, {27500 * time.Millisecond, true, 0.5}, {30 * time.Second, false, 0},
		{72500 * time.Millisecond, true, 0.5},
	}
	for _, tt := range tests {
		in, ok := e.ActiveAt(tt.t)
		if ok != tt.active {
			t.Errorf("ActiveAt(%v) = %v, want %v", tt.t, ok, tt.active)
			continue
		}
		if ok {
			if got := e.Strength(in); math.Abs(got-tt.strength) > 1e-9 {
				t.Errorf("Strength at %v = %v, want %v", tt.t, got, tt.strength)
			}
		}
	}
}
