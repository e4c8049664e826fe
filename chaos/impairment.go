package chaos

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/meridian-gw/meridian/topology/profile"
)

// DropReason says why an Impairment dropped a packet.
type DropReason uint8

const (
	DropNone     DropReason = iota // delivered
	DropLoss                       // random, bursty or event loss
	DropQueue                      // the bottleneck queue was full
	DropBlackout                   // the link was blacked out
	DropMTU                        // the packet was larger than the MTU
)

func (r DropReason) String() string {
	switch r {
	case DropNone:
		return "none"
	case DropLoss:
		return "loss"
	case DropQueue:
		return "queue"
	case DropBlackout:
		return "blackout"
	case DropMTU:
		return "mtu"
	}
	return fmt.Sprintf("DropReason(%d)", uint8(r))
}

// Decision is what an Impairment does with one packet.
type Decision struct {
	Drop      DropReason   // DropNone unless Copies is 0
	Copies    int          // 0 (dropped), 1, or 2 (duplicated)
	At        [2]time.Time // delivery times of the copies: At[:Copies]
	Reordered bool         // held back by the reorder gap; later packets may overtake it
}

// Times returns the delivery times, one per copy; none for a drop.
func (d *Decision) Times() []time.Time { return d.At[:d.Copies] }

// Impairment emulates one direction of a link from a profile, independently
// of the carrier: the UDP proxy and the packet-level lab feed it packet sizes
// and arrival times and honour the delivery times it returns. Given the same
// seed, start time, profile and sequence of calls it makes the same
// decisions, so tests can drive it with synthetic clocks and never sleep.
//
// The model, applied in this order to each packet at its arrival time:
//
//  1. blackout (manual or scheduled): drop;
//  2. larger than the MTU: drop;
//  3. random loss, then Gilbert-Elliott bursty loss, then event loss
//     (handover, rain fade): drop;
//  4. rate limit: the packet joins a FIFO bottleneck queue that drains at
//     the rate (scaled down during a rain fade); if the bytes queued ahead of
//     it plus its own size exceed the queue limit it is dropped, otherwise it
//     leaves the bottleneck when its last bit is serialised;
//  5. delay: one-way delay plus uniform jitter plus any handover delay. The
//     result is clamped so delivery stays in order (jitter does not reorder,
//     as in a real queue), so under dense traffic delays sit near the top of
//     the jitter band;
//  6. reorder: with its probability the packet is held back a further
//     ReorderGap and does not hold up later packets;
//  7. duplicate: with its probability a second copy is delivered with it.
//
// Sizes are whole packets on the emulated link (IP header included). An
// Impairment is safe for concurrent use.
type Impairment struct {
	dir   Dir
	seed  uint64
	start time.Time

	mu          sync.Mutex
	p           Params
	events      []Event // those that apply to dir
	rng         *rand.Rand
	bad         bool      // Gilbert-Elliott state
	busyUntil   time.Time // when the bottleneck finishes its queue
	last        time.Time // latest in-order delivery time handed out
	manual      bool      // SetBlackout(true)
	manualUntil time.Time // BlackoutUntil
}

// NewImpairment returns direction dir (Up or Down) of profile p; nil p is a
// perfect link. Scheduled events are timed from start. The random source is
// PCG seeded with (seed, dir), so both directions may share one seed.
func NewImpairment(p *Profile, dir Dir, seed uint64, start time.Time) (*Impairment, error) {
	if dir != Up && dir != Down {
		return nil, fmt.Errorf("new impairment: direction must be up or down, got %v", dir)
	}
	im := &Impairment{
		dir:   dir,
		seed:  seed,
		start: start,
		rng:   rand.New(rand.NewPCG(seed, uint64(dir))),
	}
	if err := im.SetProfile(p); err != nil {
		return nil, fmt.Errorf("new impairment: %w", err)
	}
	return im, nil
}

// Seed returns the seed the Impairment was made with; print it when a test
// fails so the run can be replayed.
func (im *Impairment) Seed() uint64 { return im.seed }

// Dir returns the direction the Impairment emulates.
func (im *Impairment) Dir() Dir { return im.dir }

// SetProfile switches to profile p (nil = perfect link) from now on. Queue,
// burst and blackout state carry over, and events keep their schedule from
// the original start time.
func (im *Impairment) SetProfile(p *Profile) error {
	var params Params
	var events []Event
	if p != nil {
		if err := p.Validate(); err != nil {
			return err
		}
		params = p.Params(im.dir)
		for _, e := range p.Events {
			if e.Dir.Includes(im.dir) {
				events = append(events, e)
			}
		}
	}
	if params.ReorderGap == 0 {
		params.ReorderGap = profile.DefaultReorderGap
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	im.p, im.events = params, events
	if !params.Burst.Enabled() {
		im.bad = false
	}
	return nil
}

// SetBlackout turns a manual blackout on or off. Turning it off also ends a
// BlackoutUntil; scheduled blackouts still happen.
func (im *Impairment) SetBlackout(on bool) {
	im.mu.Lock()
	defer im.mu.Unlock()
	im.manual = on
	if !on {
		im.manualUntil = time.Time{}
	}
}

// BlackoutUntil blacks the link out until t (or longer if one is already
// in force).
func (im *Impairment) BlackoutUntil(t time.Time) {
	im.mu.Lock()
	defer im.mu.Unlock()
	if t.After(im.manualUntil) {
		im.manualUntil = t
	}
}

// BlackedOut reports whether the link is blacked out at t, manually or by a
// scheduled event. Carriers call it again at delivery time so that nothing
// arrives during a blackout, not even packets sent before it began.
func (im *Impairment) BlackedOut(t time.Time) bool {
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.blackedOutLocked(t)
}

func (im *Impairment) blackedOutLocked(t time.Time) bool {
	if im.manual || t.Before(im.manualUntil) {
		return true
	}
	off := t.Sub(im.start)
	for _, e := range im.events {
		if e.Kind == profile.EventBlackout {
			if _, ok := e.ActiveAt(off); ok {
				return true
			}
		}
	}
	return false
}

// effects is the combined state of the scheduled events at one time.
type effects struct {
	blackout   bool
	loss       float64
	extraDelay time.Duration
	rateFactor float64
}

func (im *Impairment) effectsLocked(t time.Time) effects {
	fx := effects{rateFactor: 1}
	off := t.Sub(im.start)
	for _, e := range im.events {
		in, ok := e.ActiveAt(off)
		if !ok {
			continue
		}
		switch e.Kind {
		case profile.EventBlackout:
			fx.blackout = true
		case profile.EventHandover:
			fx.extraDelay += e.ExtraDelay
			fx.loss = 1 - (1-fx.loss)*(1-e.Loss)
		case profile.EventRainFade:
			s := e.Strength(in)
			fx.loss = 1 - (1-fx.loss)*(1-e.Loss*s)
			if e.RateFactor > 0 {
				fx.rateFactor = min(fx.rateFactor, 1-(1-e.RateFactor)*s)
			}
		}
	}
	return fx
}

// Decide decides the fate of a packet of size bytes arriving at now: dropped
// (and why), or delivered at one or two times no earlier than now. Calls
// should come in roughly increasing now.
func (im *Impairment) Decide(now time.Time, size int) Decision {
	im.mu.Lock()
	defer im.mu.Unlock()
	p := &im.p
	fx := effects{rateFactor: 1}
	if len(im.events) > 0 {
		fx = im.effectsLocked(now)
	}
	if fx.blackout || im.manual || now.Before(im.manualUntil) {
		return Decision{Drop: DropBlackout}
	}
	if p.MTU > 0 && size > p.MTU {
		return Decision{Drop: DropMTU}
	}

	lost := p.Loss > 0 && im.rng.Float64() < p.Loss
	if g := p.Burst; g.Enabled() {
		if im.bad {
			im.bad = im.rng.Float64() >= g.R
		} else {
			im.bad = im.rng.Float64() < g.P
		}
		h := g.GoodLoss
		if im.bad {
			h = g.BadLoss
		}
		if h > 0 && im.rng.Float64() < h {
			lost = true
		}
	}
	if fx.loss > 0 && im.rng.Float64() < fx.loss {
		lost = true
	}
	if lost {
		return Decision{Drop: DropLoss}
	}

	leave := now
	if p.Rate > 0 {
		rate := int64(float64(p.Rate) * fx.rateFactor)
		rate = max(rate, 8)
		begin := now
		if im.busyUntil.After(now) {
			begin = im.busyUntil
		}
		queued := float64(begin.Sub(now)) * float64(rate) / 8 / float64(time.Second)
		if int(queued)+size > p.QueueLimit(rate) {
			return Decision{Drop: DropQueue}
		}
		im.busyUntil = begin.Add(time.Duration(int64(size) * 8 * int64(time.Second) / rate))
		leave = im.busyUntil
	}

	delay := p.Delay + fx.extraDelay
	if p.Jitter > 0 {
		delay += time.Duration(im.rng.Int64N(2*int64(p.Jitter)+1)) - p.Jitter
		delay = max(delay, 0)
	}
	at := leave.Add(delay)
	if at.Before(im.last) {
		at = im.last
	}

	d := Decision{Copies: 1}
	if p.Reorder > 0 && im.rng.Float64() < p.Reorder {
		d.Reordered = true
		at = at.Add(p.ReorderGap)
	} else {
		im.last = at
	}
	d.At[0] = at
	if p.Duplicate > 0 && im.rng.Float64() < p.Duplicate {
		d.Copies = 2
		d.At[1] = at
	}
	return d
}
