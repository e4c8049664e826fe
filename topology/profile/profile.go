package profile

import (
	"errors"
	"fmt"
	"time"

	"github.com/meridian-gw/meridian/internal/units"
)

// Dir is a direction of a link.
type Dir uint8

const (
	Both Dir = iota // both directions (events only)
	Up              // from the dialing side to the listening side
	Down            // from the listening side to the dialing side
)

func (d Dir) String() string {
	switch d {
	case Both:
		return "both"
	case Up:
		return "up"
	case Down:
		return "down"
	}
	return fmt.Sprintf("Dir(%d)", uint8(d))
}

// Includes reports whether an event scoped to d applies to direction x.
func (d Dir) Includes(x Dir) bool { return d == Both || d == x }

// DefaultMTU is the MTU of a profile that does not set one.
const DefaultMTU = 1500

// DefaultQueueDelay sizes the bottleneck queue of a rate-limited direction
// that sets no queue: this much time at the rate.
const DefaultQueueDelay = 100 * time.Millisecond

// DefaultReorderGap is how long a reordered packet is held back when the
// profile does not say.
const DefaultReorderGap = 10 * time.Millisecond

// Params describe one direction of a link. The zero value is a perfect link:
// no delay, no loss, no rate limit, no MTU limit.
type Params struct {
	Delay  time.Duration // one-way delay, >= 0
	Jitter time.Duration // delay varies uniformly in [Delay-Jitter, Delay+Jitter]; 0 = none; <= Delay

	Loss  float64        // independent random loss probability in [0, 1]
	Burst GilbertElliott // bursty loss on top of Loss; zero = none

	Rate       int64         // bottleneck rate in bit/s; 0 = unlimited
	QueueBytes int           // bottleneck queue in bytes; 0 = use QueueDelay
	QueueDelay time.Duration // bottleneck queue as time at Rate; 0 (and QueueBytes 0) = DefaultQueueDelay

	MTU int // largest packet in bytes; bigger packets are dropped; 0 = no limit

	Reorder    float64       // probability a packet is held back by ReorderGap and overtaken
	ReorderGap time.Duration // 0 = DefaultReorderGap
	Duplicate  float64       // probability a packet is delivered twice
}

// GilbertElliott is a two-state (good, bad) Markov loss model evaluated per
// packet. It is off while P is 0.
type GilbertElliott struct {
	P        float64 // good -> bad transition probability per packet
	R        float64 // bad -> good transition probability per packet; > 0 when P > 0
	BadLoss  float64 // loss probability in the bad state
	GoodLoss float64 // loss probability in the good state
}

// Enabled reports whether the model is on.
func (g GilbertElliott) Enabled() bool { return g.P > 0 }

// MeanLoss is the steady-state loss probability of the model.
func (g GilbertElliott) MeanLoss() float64 {
	if !g.Enabled() {
		return 0
	}
	pb := g.P / (g.P + g.R)
	return pb*g.BadLoss + (1-pb)*g.GoodLoss
}

// MeanLoss is the steady-state loss probability of the direction from random
// and bursty loss (scheduled events not included).
func (p Params) MeanLoss() float64 {
	if !p.Burst.Enabled() {
		return p.Loss
	}
	return 1 - (1-p.Loss)*(1-p.Burst.MeanLoss())
}

// QueueLimit is the bottleneck queue in bytes at the given rate (bit/s), or
// 0 when the direction has no rate limit. It holds at least one MTU-sized
// packet.
func (p Params) QueueLimit(rate int64) int {
	if rate <= 0 {
		return 0
	}
	q := p.QueueBytes
	if q == 0 {
		d := p.QueueDelay
		if d == 0 {
			d = DefaultQueueDelay
		}
		q = int(float64(rate) / 8 * d.Seconds())
	}
	mtu := p.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	return max(q, mtu)
}

// EventKind names a scheduled event.
type EventKind uint8

const (
	EventBlackout EventKind = iota + 1 // nothing gets through
	EventHandover                      // ExtraDelay and Loss for the duration
	EventRainFade                      // loss ramps up to Loss and back; rate scaled by RateFactor at the peak
)

func (k EventKind) String() string {
	switch k {
	case EventBlackout:
		return "blackout"
	case EventHandover:
		return "handover"
	case EventRainFade:
		return "rain_fade"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is a scheduled change of a link, timed from when the link comes up.
type Event struct {
	Kind     EventKind
	Dir      Dir           // Both (zero) or one direction
	At       time.Duration // first start; >= 0
	Every    time.Duration // period; 0 = once; >= Duration otherwise
	Duration time.Duration // length of each occurrence; > 0

	ExtraDelay time.Duration // handover: added one-way delay
	Loss       float64       // handover: loss; rain_fade: peak loss
	Ramp       time.Duration // rain_fade: ramp-up and ramp-down time, each; 2*Ramp <= Duration
	RateFactor float64       // rain_fade: rate multiplier at the peak in (0, 1]; 0 = unchanged
}

// ActiveAt reports whether the event is on at offset t from link start and,
// if so, how far into the occurrence t is.
func (e Event) ActiveAt(t time.Duration) (in time.Duration, ok bool) {
	if t < e.At || e.Duration <= 0 {
		return 0, false
	}
	in = t - e.At
	if e.Every > 0 {
		in %= e.Every
	}
	return in, in < e.Duration
}

// Strength is how far into its peak an active event is at in (from
// ActiveAt): 1 for the flat part, ramping linearly from 0 for a rain fade.
func (e Event) Strength(in time.Duration) float64 {
	if e.Kind != EventRainFade || e.Ramp <= 0 {
		return 1
	}
	switch {
	case in < e.Ramp:
		return float64(in) / float64(e.Ramp)
	case in > e.Duration-e.Ramp:
		return float64(e.Duration-in) / float64(e.Ramp)
	}
	return 1
}

// Profile is a named link profile. Use Load or Parse to get one and the
// With methods to derive variants; a Profile is not changed once built.
type Profile struct {
	Name        string
	Description string
	Up          Params // dialing side -> listening side
	Down        Params // listening side -> dialing side
	Events      []Event
}

// Params returns the parameters of direction d (Up or Down).
func (p *Profile) Params(d Dir) Params {
	if d == Down {
		return p.Down
	}
	return p.Up
}

// RTT is the round-trip base delay: Up.Delay + Down.Delay.
func (p *Profile) RTT() time.Duration { return p.Up.Delay + p.Down.Delay }

// String returns a one-line summary.
func (p *Profile) String() string {
	if p == nil {
		return "none"
	}
	s := fmt.Sprintf("%s: rtt=%v loss=%.2g%%/%.2g%%", p.Name, p.RTT(), 100*p.Up.MeanLoss(), 100*p.Down.MeanLoss())
	if p.Up.Rate > 0 || p.Down.Rate > 0 {
		s += fmt.Sprintf(" rate=%s/%s", FormatRate(p.Up.Rate), FormatRate(p.Down.Rate))
	}
	if len(p.Events) > 0 {
		s += fmt.Sprintf(" events=%d", len(p.Events))
	}
	return s
}

// Clone returns a deep copy.
func (p *Profile) Clone() *Profile {
	c := *p
	c.Events = append([]Event(nil), p.Events...)
	return &c
}

// WithLoss returns a copy whose steady-state loss is x in both directions:
// random loss becomes x and bursty loss is removed. Scheduled events stay.
func (p *Profile) WithLoss(x float64) *Profile {
	c := p.Clone()
	c.Up.Loss, c.Down.Loss = x, x
	c.Up.Burst, c.Down.Burst = GilbertElliott{}, GilbertElliott{}
	return c
}

// WithRate returns a copy rate-limited to bps bit/s in both directions
// (0 = unlimited). A queue given as time scales with the new rate.
func (p *Profile) WithRate(bps int64) *Profile {
	c := p.Clone()
	c.Up.Rate, c.Down.Rate = bps, bps
	return c
}

// WithRTT returns a copy whose base RTT is d, split between the directions
// in the current proportion (evenly if both delays are 0). Jitter is capped
// at the new delay.
func (p *Profile) WithRTT(d time.Duration) *Profile {
	c := p.Clone()
	up := d / 2
	if rtt := p.RTT(); rtt > 0 {
		up = time.Duration(float64(d) * float64(p.Up.Delay) / float64(rtt))
	}
	c.Up.Delay, c.Down.Delay = up, d-up
	c.Up.Jitter = min(c.Up.Jitter, c.Up.Delay)
	c.Down.Jitter = min(c.Down.Jitter, c.Down.Delay)
	return c
}

// WithoutEvents returns a copy with no scheduled events.
func (p *Profile) WithoutEvents() *Profile {
	c := p.Clone()
	c.Events = nil
	return c
}

// Validate reports every problem with p, one error per problem.
func (p *Profile) Validate() error {
	var errs []error
	p.problems(func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	})
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("profile %q: %w", p.Name, err)
	}
	return nil
}

// problems calls add once per problem, with the field's path.
func (p *Profile) problems(add addFunc) {
	for _, d := range []struct {
		name string
		p    Params
	}{{"up", p.Up}, {"down", p.Down}} {
		d.p.validate(d.name, add)
	}
	for i, e := range p.Events {
		e.validate(fmt.Sprintf("events[%d]", i), add)
	}
}

type addFunc func(path, format string, args ...any)

func checkProb(add addFunc, path string, x float64) {
	if !(x >= 0 && x <= 1) { // also catches NaN
		add(path, "must be within [0, 1], got %v", x)
	}
}

func (p Params) validate(dir string, add addFunc) {
	if p.Delay < 0 {
		add(dir+".delay", "must not be negative, got %v", p.Delay)
	}
	if p.Jitter < 0 {
		add(dir+".jitter", "must not be negative, got %v", p.Jitter)
	} else if p.Jitter > p.Delay && p.Delay >= 0 {
		add(dir+".jitter", "(%v) must not exceed delay (%v)", p.Jitter, p.Delay)
	}
	checkProb(add, dir+".loss", p.Loss)
	if g := p.Burst; g != (GilbertElliott{}) {
		checkProb(add, dir+".burst_loss.p", g.P)
		checkProb(add, dir+".burst_loss.r", g.R)
		checkProb(add, dir+".burst_loss.bad_loss", g.BadLoss)
		checkProb(add, dir+".burst_loss.good_loss", g.GoodLoss)
		if g.P > 0 && g.R <= 0 {
			add(dir+".burst_loss.r", "must be > 0 when p is set (the bad state would never end)")
		}
	}
	if p.Rate < 0 {
		add(dir+".rate", "must not be negative, got %d", p.Rate)
	}
	if p.QueueBytes < 0 {
		add(dir+".queue", "must not be negative, got %d bytes", p.QueueBytes)
	}
	if p.QueueDelay < 0 {
		add(dir+".queue", "must not be negative, got %v", p.QueueDelay)
	}
	if p.QueueBytes > 0 && p.QueueDelay > 0 {
		add(dir+".queue", "set bytes (%d) or time (%v), not both", p.QueueBytes, p.QueueDelay)
	}
	if p.MTU < 0 || p.MTU > 65535 {
		add(dir+".mtu", "must be within [0, 65535], got %d", p.MTU)
	} else if p.MTU > 0 && p.MTU < 68 {
		add(dir+".mtu", "(%d) must be at least 68 (the IPv4 minimum)", p.MTU)
	}
	if p.QueueBytes > 0 && p.MTU > 0 && p.QueueBytes < p.MTU {
		add(dir+".queue", "(%d bytes) must hold one MTU-sized packet (%d bytes)", p.QueueBytes, p.MTU)
	}
	checkProb(add, dir+".reorder", p.Reorder)
	if p.ReorderGap < 0 {
		add(dir+".reorder_gap", "must not be negative, got %v", p.ReorderGap)
	}
	checkProb(add, dir+".duplicate", p.Duplicate)
}

func (e Event) validate(path string, add addFunc) {
	switch e.Kind {
	case EventBlackout, EventHandover, EventRainFade:
	default:
		add(path+".kind", "unknown event kind %v", e.Kind)
	}
	if e.Dir > Down {
		add(path+".direction", "unknown direction %v", e.Dir)
	}
	if e.At < 0 {
		add(path+".at", "must not be negative, got %v", e.At)
	}
	if e.Duration <= 0 {
		add(path+".duration", "must be > 0, got %v", e.Duration)
	}
	if e.Every < 0 {
		add(path+".every", "must not be negative, got %v", e.Every)
	} else if e.Every > 0 && e.Every < e.Duration {
		add(path+".every", "(%v) must not be shorter than duration (%v): occurrences would overlap", e.Every, e.Duration)
	}
	if e.ExtraDelay < 0 {
		add(path+".extra_delay", "must not be negative, got %v", e.ExtraDelay)
	}
	checkProb(add, path+".loss", e.Loss)
	if e.RateFactor < 0 || e.RateFactor > 1 || e.RateFactor != e.RateFactor {
		add(path+".rate_factor", "must be within (0, 1], got %v", e.RateFactor)
	}
	if e.Ramp < 0 {
		add(path+".ramp", "must not be negative, got %v", e.Ramp)
	} else if 2*e.Ramp > e.Duration && e.Duration > 0 {
		add(path+".ramp", "(%v) twice must fit in duration (%v)", e.Ramp, e.Duration)
	}
	if e.Kind != EventHandover && e.ExtraDelay != 0 {
		add(path+".extra_delay", "only for kind handover")
	}
	if e.Kind == EventBlackout && e.Loss != 0 {
		add(path+".loss", "not for kind blackout (a blackout loses everything)")
	}
	if e.Kind != EventRainFade && e.Ramp != 0 {
		add(path+".ramp", "only for kind rain_fade")
	}
	if e.Kind != EventRainFade && e.RateFactor != 0 {
		add(path+".rate_factor", "only for kind rain_fade")
	}
}

// FormatRate renders bit/s as e.g. "10Mbit/s", or "unlimited" for 0.
func FormatRate(bps int64) string {
	if bps <= 0 {
		return "unlimited"
	}
	return units.BitRate(bps).String()
}
