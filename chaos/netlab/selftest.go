//go:build linux

package netlab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meridian-gw/meridian/chaos"
	"github.com/meridian-gw/meridian/topology/profile"
)

// SelfTestOptions tune SelfTest. Zero values take the defaults.
type SelfTestOptions struct {
	// Probes per direction for delay and loss. 0 = 20,000, enough to tell
	// 1% loss within about ±0.3% (4 standard errors).
	Probes int
	// ProbeRate is the probes per second per direction. 0 = 5,000. It is
	// lowered so that probes use at most a quarter of a rate-limited link:
	// they must not queue.
	ProbeRate int
	// MaxProbeTime caps the probing phase; on a thin link the probe count
	// drops to fit (and the loss tolerance widens with it). 0 = 6s.
	MaxProbeTime time.Duration
	// RateTime is the length of the bulk transfer that measures the rate
	// limit, per direction. 0 = 2s.
	RateTime time.Duration
	// MaxRate is the highest rate limit that is checked; above it the
	// measurement would show the pump's own speed rather than the
	// profile's. 0 = 200 Mbit/s.
	MaxRate int64
	// Tolerance is the relative error a check may show. 0 = 10%.
	Tolerance float64
}

// Report is the outcome of SelfTest: measured against configured, per
// check and direction.
type Report struct {
	Link    string   `json:"link"`
	Profile string   `json:"profile"`
	Seed    uint64   `json:"seed"`
	Results []Result `json:"results"`
	Pass    bool     `json:"pass"`
	Seconds float64  `json:"seconds"`
	Notes   []string `json:"notes,omitempty"`
}

// Result is one measured property of one direction of a link. It passes when
// |Measured - Configured| <= Tolerance.
type Result struct {
	Name       string  `json:"name"` // "delay" (one-way), "loss" or "rate"
	Dir        string  `json:"dir"`  // "up" (A -> B) or "down" (B -> A)
	Unit       string  `json:"unit"` // "ms", "%" or "Mbit/s"
	Configured float64 `json:"configured"`
	Measured   float64 `json:"measured"`
	Tolerance  float64 `json:"tolerance"`
	Samples    int     `json:"samples"` // probes sent, or packets received for rate
	Pass       bool    `json:"pass"`
	Skipped    bool    `json:"skipped,omitempty"`
	Note       string  `json:"note,omitempty"`
}

// String renders the report as a table.
func (r Report) String() string {
	var b strings.Builder
	verdict := "PASS"
	if !r.Pass {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "self-test %s (%s, seed %d): %s in %.1fs\n", r.Link, r.Profile, r.Seed, verdict, r.Seconds)
	fmt.Fprintf(&b, "  %-6s %-5s %14s %14s %12s %8s  %s\n", "check", "dir", "configured", "measured", "tolerance", "samples", "result")
	for _, c := range r.Results {
		res := "ok"
		switch {
		case c.Skipped:
			res = "skipped"
		case !c.Pass:
			res = "FAIL"
		}
		if c.Note != "" {
			res += " (" + c.Note + ")"
		}
		conf, meas, tol := fmtValue(c.Configured, c.Unit), fmtValue(c.Measured, c.Unit), "±"+fmtValue(c.Tolerance, c.Unit)
		if c.Skipped {
			meas, tol = "-", "-"
		}
		fmt.Fprintf(&b, "  %-6s %-5s %14s %14s %12s %8d  %s\n", c.Name, c.Dir, conf, meas, tol, c.Samples, res)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "  note: %s\n", n)
	}
	return b.String()
}

func fmtValue(v float64, unit string) string {
	switch unit {
	case "%":
		return fmt.Sprintf("%.3f%%", v)
	case "ms":
		return fmt.Sprintf("%.2fms", v)
	}
	return fmt.Sprintf("%.2f%s", v, unit)
}

const (
	probeSize    = 24 // UDP payload: token, sequence number, send time
	udpOverhead  = 28 // IPv4 and UDP headers
	bulkPayload  = 1200
	minDelayTol  = time.Millisecond
	lossSigmas   = 4.0
	drainMinimum = 300 * time.Millisecond
)

// SelfTest measures the emulator on a link against the link's profile by
// sending real traffic between the two regions' namespaces through their
// TUN devices and the pump. Both ends are in this process, on one clock, so
// one-way delays are measured exactly. Per direction it checks:
//
//   - delay: the median one-way delay of UDP probes, paced to use at most a
//     quarter of the link's rate, against the profile's delay plus the
//     probe's serialisation time; tolerance 10% or 1 ms, whichever is more
//     (below a few milliseconds the pump's own latency shows);
//   - loss: the fraction of probes that never arrived against the profile's
//     mean random and bursty loss; tolerance 10% or 4 standard errors of a
//     sample of that size, whichever is more (for 1% loss and 20,000 probes
//     that is ±0.28 points);
//   - rate: a paced UDP bulk transfer at 1.25 times the rate (more when the
//     loss is high) against the rate limit, counting whole IP packets
//     between the first and last arrival; tolerance 10%. Rates above
//     MaxRate, and unlimited links, are skipped.
//
// Scheduled events (blackouts, handovers, rain fades) are not accounted
// for; a note says so when the profile has any. The whole run takes about
// MaxProbeTime + 2*RateTime plus twice the delay, about 11 s by default.
// SelfTest adds traffic to the link's counters.
func SelfTest(ctx context.Context, lab *Lab, link string, opts SelfTestOptions) (Report, error) {
	var lk *Link
	for _, l := range lab.links {
		if l.name == link {
			lk = l
		}
	}
	if lk == nil {
		return Report{}, fmt.Errorf("self-test: no link %q", link)
	}
	opts.defaults()
	p := lk.Profile()
	rep := Report{Link: link, Profile: p.String(), Seed: lab.seed, Pass: true}
	if p == nil {
		p = &chaos.Profile{Name: "none"}
	}
	if len(p.Events) > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("the profile has %d scheduled events, which this test does not account for", len(p.Events)))
	}
	start := time.Now()

	// Delay and loss: both directions at once.
	var probes [2][]Result
	var probeErr [2]error
	var wg sync.WaitGroup
	for i, dir := range []chaos.Dir{chaos.Up, chaos.Down} {
		wg.Go(func() { probes[i], probeErr[i] = lab.probe(ctx, lk, dir, p.Params(dir), opts) })
	}
	wg.Wait()
	if err := errors.Join(probeErr[:]...); err != nil {
		return rep, fmt.Errorf("self-test %s: %w", link, err)
	}
	rep.Results = append(rep.Results, probes[0]...)
	rep.Results = append(rep.Results, probes[1]...)

	// Rate: one direction after the other, so they do not share the CPU.
	for _, dir := range []chaos.Dir{chaos.Up, chaos.Down} {
		c, err := lab.measureRate(ctx, lk, dir, p.Params(dir), opts)
		if err != nil {
			return rep, fmt.Errorf("self-test %s: %w", link, err)
		}
		rep.Results = append(rep.Results, c)
	}
	for _, c := range rep.Results {
		if !c.Pass && !c.Skipped {
			rep.Pass = false
		}
	}
	rep.Seconds = time.Since(start).Seconds()
	lab.log.Info("lab self-test", "link", link, "pass", rep.Pass, "seconds", rep.Seconds)
	return rep, nil
}

func (o *SelfTestOptions) defaults() {
	if o.Probes <= 0 {
		o.Probes = 20_000
	}
	if o.ProbeRate <= 0 {
		o.ProbeRate = 5_000
	}
	if o.MaxProbeTime <= 0 {
		o.MaxProbeTime = 6 * time.Second
	}
	if o.RateTime <= 0 {
		o.RateTime = 2 * time.Second
	}
	if o.MaxRate <= 0 {
		o.MaxRate = 200_000_000
	}
	if o.Tolerance <= 0 {
		o.Tolerance = 0.10
	}
}

// ends returns the sending and receiving regions of direction dir.
func (lk *Link) ends(dir chaos.Dir) (from, to *region) {
	if dir == chaos.Down {
		return lk.b, lk.a
	}
	return lk.a, lk.b
}

// sockets opens a UDP socket in each end of direction dir.
func (l *Lab) sockets(lk *Link, dir chaos.Dir) (tx, rx *net.UDPConn, err error) {
	from, to := lk.ends(dir)
	rxc, err := l.ListenPacket(to.name, "udp4", to.addr.String()+":0")
	if err != nil {
		return nil, nil, err
	}
	txc, err := l.ListenPacket(from.name, "udp4", from.addr.String()+":0")
	if err != nil {
		rxc.Close()
		return nil, nil, err
	}
	rx, tx = rxc.(*net.UDPConn), txc.(*net.UDPConn)
	_ = rx.SetReadBuffer(4 << 20)
	_ = tx.SetWriteBuffer(4 << 20)
	return tx, rx, nil
}

// pace calls send(i) for i in [0, n) at rate per second, in bursts on a
// 1 ms tick, until ctx ends. It returns how many it sent.
func pace(ctx context.Context, n int, rate float64, send func(i int) error) (int, error) {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	start := time.Now()
	sent := 0
	for sent < n {
		due := min(n, int(time.Since(start).Seconds()*rate)+1)
		for ; sent < due; sent++ {
			if err := send(sent); err != nil {
				return sent, err
			}
		}
		if sent >= n {
			break
		}
		select {
		case <-ctx.Done():
			return sent, ctx.Err()
		case <-t.C:
		}
	}
	return sent, nil
}

// drainTime is how long after the last packet is sent a receiver waits for
// stragglers: the worst delay of the direction plus its queue, and a
// margin.
func drainTime(p chaos.Params) time.Duration {
	d := p.Delay + p.Jitter + p.ReorderGap + drainMinimum
	if p.Rate > 0 {
		d += time.Duration(float64(p.QueueLimit(p.Rate)) * 8 / float64(p.Rate) * float64(time.Second))
	}
	return d
}

// probe measures one-way delay and loss of one direction.
func (l *Lab) probe(ctx context.Context, lk *Link, dir chaos.Dir, p chaos.Params, o SelfTestOptions) ([]Result, error) {
	tx, rx, err := l.sockets(lk, dir)
	if err != nil {
		return nil, err
	}
	defer tx.Close()
	defer rx.Close()

	size := probeSize + udpOverhead
	rate := float64(o.ProbeRate)
	if p.Rate > 0 {
		rate = min(rate, float64(p.Rate)/4/float64(size*8))
	}
	n := min(o.Probes, max(100, int(rate*o.MaxProbeTime.Seconds())))

	token := rand.Uint64()
	base := time.Now()
	delays := make([]time.Duration, 0, n)
	seen := make([]bool, n)
	var rxErr error
	var wg sync.WaitGroup
	sendDone := make(chan struct{})
	wg.Go(func() {
		rxErr = receive(rx, drainTime(p), sendDone, func() bool { return len(delays) == n }, func(b []byte, recvd time.Time) {
			now := recvd.Sub(base)
			if len(b) != probeSize || binary.BigEndian.Uint64(b) != token {
				return
			}
			seq := binary.BigEndian.Uint64(b[8:])
			if seq >= uint64(n) || seen[seq] {
				return // a duplicate
			}
			seen[seq] = true
			delays = append(delays, now-time.Duration(binary.BigEndian.Uint64(b[16:])))
		})
	})

	dst := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	msg := make([]byte, probeSize)
	binary.BigEndian.PutUint64(msg, token)
	sent, err := pace(ctx, n, rate, func(i int) error {
		binary.BigEndian.PutUint64(msg[8:], uint64(i))
		binary.BigEndian.PutUint64(msg[16:], uint64(time.Since(base)))
		_, err := tx.WriteToUDPAddrPort(msg, dst)
		return err
	})
	close(sendDone)
	wg.Wait()
	if err != nil {
		return nil, fmt.Errorf("%v probes: %w", dir, err)
	}
	if rxErr != nil {
		return nil, fmt.Errorf("%v probes: receive: %w", dir, rxErr)
	}

	checks := make([]Result, 0, 2)
	// Delay.
	want := p.Delay
	if p.Rate > 0 {
		want += time.Duration(float64(size*8) / float64(p.Rate) * float64(time.Second))
	}
	dc := Result{Name: "delay", Dir: dir.String(), Unit: "ms", Samples: len(delays),
		Configured: ms(want), Tolerance: ms(max(time.Duration(float64(want)*o.Tolerance), minDelayTol))}
	if len(delays) == 0 {
		dc.Note = "no probe arrived"
	} else {
		slices.Sort(delays)
		dc.Measured = ms(delays[len(delays)/2])
		dc.Pass = math.Abs(dc.Measured-dc.Configured) <= dc.Tolerance
		dc.Note = fmt.Sprintf("median; min %.2fms p99 %.2fms", ms(delays[0]), ms(delays[len(delays)*99/100]))
		if p.Jitter > 0 {
			dc.Note += fmt.Sprintf("; jitter ±%.2fms configured", ms(p.Jitter))
		}
	}
	checks = append(checks, dc)

	// Loss.
	pl := p.MeanLoss()
	lost := 1 - float64(len(delays))/float64(sent)
	se := math.Sqrt(max(pl, 1/float64(sent)) * (1 - pl) / float64(sent))
	lc := Result{Name: "loss", Dir: dir.String(), Unit: "%", Samples: sent,
		Configured: 100 * pl, Measured: 100 * lost, Tolerance: 100 * max(o.Tolerance*pl, lossSigmas*se)}
	lc.Pass = math.Abs(lc.Measured-lc.Configured) <= lc.Tolerance
	lc.Note = fmt.Sprintf("%d of %d lost; tolerance max(%.0f%%, %.0f standard errors)", sent-len(delays), sent, 100*o.Tolerance, lossSigmas)
	checks = append(checks, lc)
	return checks, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// measureRate checks the rate limit of one direction with a paced UDP bulk
// transfer above the rate.
func (l *Lab) measureRate(ctx context.Context, lk *Link, dir chaos.Dir, p chaos.Params, o SelfTestOptions) (Result, error) {
	c := Result{Name: "rate", Dir: dir.String(), Unit: "Mbit/s", Configured: float64(p.Rate) / 1e6}
	switch {
	case p.Rate == 0:
		c.Skipped, c.Note = true, "unlimited"
		return c, nil
	case p.Rate > o.MaxRate:
		c.Skipped, c.Note = true, fmt.Sprintf("above %s, the pump would be measured", profile.FormatRate(o.MaxRate))
		return c, nil
	}
	c.Tolerance = c.Configured * o.Tolerance
	payload := bulkPayload
	if p.MTU > 0 {
		payload = min(payload, p.MTU-udpOverhead)
	}
	size := payload + udpOverhead
	offer := 1.25 / max(1-p.MeanLoss(), 0.05) // offered load over the rate, so that the queue never runs dry
	pps := float64(p.Rate) * offer / float64(size*8)
	n := int(pps * o.RateTime.Seconds())

	tx, rx, err := l.sockets(lk, dir)
	if err != nil {
		return c, err
	}
	defer tx.Close()
	defer rx.Close()

	var first, last time.Time
	var got int
	var rxErr error
	var wg sync.WaitGroup
	sendDone := make(chan struct{})
	wg.Go(func() {
		rxErr = receive(rx, drainTime(p), sendDone, func() bool { return false }, func(b []byte, now time.Time) {
			if len(b) != payload {
				return
			}
			if got == 0 {
				first = now
			}
			last = now
			got++
		})
	})
	dst := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	msg := make([]byte, payload)
	_, err = pace(ctx, n, pps, func(int) error {
		_, err := tx.WriteToUDPAddrPort(msg, dst)
		return err
	})
	close(sendDone)
	wg.Wait()
	if err != nil {
		return c, fmt.Errorf("%v rate: %w", dir, err)
	}
	if rxErr != nil {
		return c, fmt.Errorf("%v rate: receive: %w", dir, rxErr)
	}
	c.Samples = got
	if got < 10 {
		c.Note = fmt.Sprintf("only %d packets arrived", got)
		return c, nil
	}
	// The first packet starts the clock: count the bits that followed it.
	c.Measured = float64((got-1)*size*8) / last.Sub(first).Seconds() / 1e6
	c.Pass = math.Abs(c.Measured-c.Configured) <= c.Tolerance
	c.Note = fmt.Sprintf("offered %.2fx, %d-byte packets", offer, size)
	return c, nil
}

// receive reads datagrams from rx into handle (with their arrival time)
// until done reports true, or until drain has passed since sendDone closed;
// read timeouts are not errors.
func receive(rx net.Conn, drain time.Duration, sendDone <-chan struct{}, done func() bool, handle func(b []byte, at time.Time)) error {
	buf := make([]byte, 2048)
	var deadline time.Time
	for {
		if deadline.IsZero() {
			select {
			case <-sendDone:
				deadline = time.Now().Add(drain)
			default:
			}
		}
		wait := 50 * time.Millisecond
		if !deadline.IsZero() {
			if wait = time.Until(deadline); wait <= 0 || done() {
				return nil
			}
		}
		_ = rx.SetReadDeadline(time.Now().Add(wait))
		k, err := rx.Read(buf)
		now := time.Now()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		handle(buf[:k], now)
	}
}
