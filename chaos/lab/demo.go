package lab

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/meridian-gw/meridian/internal/verify"
)

// DemoOptions configure RunDemo.
type DemoOptions struct {
	// Duration of production; zero produces until ctx ends (Ctrl-C).
	Duration time.Duration
	// Profile of the emulated link ("": wan).
	Profile string
	// Rate in events per second (zero: 2000).
	Rate int
	// Out receives progress; Live redraws one line (a terminal) instead of
	// printing a line every few seconds.
	Out  io.Writer
	Live bool
	// Logger for the gateways; nil discards.
	Logger *slog.Logger
	// EdgeBootstrap and HQBootstrap, when set, are external clusters (real
	// Apache Kafka: RunDemoReal) instead of in-process kfake. Nil: kfake.
	EdgeBootstrap, HQBootstrap []string
}

// DemoSummary is the demo's result, counted by reading both clusters back.
type DemoSummary struct {
	Profile    string   `json:"profile"`
	Topics     []string `json:"topics"`
	EdgeKafka  []string `json:"edge_bootstrap"`
	HQKafka    []string `json:"hq_bootstrap"`
	Produced   int64    `json:"produced"`
	Mirrored   int64    `json:"mirrored"`
	Lost       int64    `json:"lost"`
	Duplicated int64    `json:"duplicated"`
	Reordered  int64    `json:"reordered"`
	Unexpected int64    `json:"unexpected"`
	RawBytes   int64    `json:"raw_bytes"`
	WireBytes  int64    `json:"wire_bytes"`
	Seconds    float64  `json:"seconds"`
	RTTMillis  float64  `json:"link_rtt_ms"`
}

// RunDemo runs the embedded default: two in-process Kafka regions, two
// gateways over a QUIC link through an impairment proxy, a producer of JSON
// events at the edge, live progress, and a final read-back of both clusters.
// ctx ending stops production; the demo still finishes mirroring and checks.
func RunDemo(ctx context.Context, o DemoOptions) (*DemoSummary, error) {
	if o.Profile == "" {
		o.Profile = "wan"
	}
	if o.Rate == 0 {
		o.Rate = 2000
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	start := time.Now()
	l, err := New(Options{Topics: DemoTopics, Partitions: 3, Profile: o.Profile, Logger: o.Logger,
		EdgeBootstrap: o.EdgeBootstrap, HQBootstrap: o.HQBootstrap})
	if err != nil {
		return nil, err
	}
	defer l.Close()
	for _, g := range []string{HQGateway, EdgeGateway} {
		if err := l.Start(g); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(o.Out, "edge Kafka (source):      %v\n", l.EdgeBootstrap())
	fmt.Fprintf(o.Out, "hq Kafka (destination):   %v\n", l.HQBootstrap())
	fmt.Fprintf(o.Out, "link: QUIC+mTLS via impairment proxy %s, profile %s\n", l.Proxy.Addr(), l.Proxy.Profile())
	fmt.Fprintf(o.Out, "try: kcat -b %s -C -t alarms -o beginning -e\n\n", l.HQBootstrap()[0])

	p, err := NewProducer(l.EdgeOpts(), DemoTopics, uint64(start.UnixNano()), 0)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	pctx := ctx
	if o.Duration > 0 {
		var cancel context.CancelFunc
		pctx, cancel = context.WithTimeout(ctx, o.Duration)
		defer cancel()
	}
	var wg sync.WaitGroup
	var perr error
	wg.Go(func() { perr = p.Run(pctx, o.Rate, 0) })

	progress := func(final bool) {
		in, out := legTotals(l)
		rate := float64(in.Records) / time.Since(start).Seconds()
		ratio := 0.0
		if out.WireBytes > 0 {
			ratio = float64(out.RawBytes) / float64(out.WireBytes)
		}
		line := fmt.Sprintf("produced %8d  mirrored %8d  %7.0f rec/s  lag %6d rec %5.1fs  raw %s wire %s (%.1fx)",
			p.Produced(), in.Records, rate, in.LagRecords, in.LagSeconds, human(out.RawBytes), human(out.WireBytes), ratio)
		switch {
		case o.Live && !final:
			fmt.Fprintf(o.Out, "\r%s ", line)
		case o.Live:
			fmt.Fprintf(o.Out, "\r%s\n", line)
		default:
			fmt.Fprintln(o.Out, line)
		}
	}
	every := time.Second
	if !o.Live {
		every = 5 * time.Second
	}
	t := time.NewTicker(every)
loop:
	for {
		select {
		case <-pctx.Done():
			break loop
		case <-t.C:
			progress(false)
		}
	}
	t.Stop()
	wg.Wait()
	if perr != nil {
		return nil, fmt.Errorf("producer: %w", perr)
	}
	// Let the mirror catch up (bounded), then count by read-back.
	produced := p.Produced()
	catchUp := time.Now().Add(2 * time.Minute)
	for time.Now().Before(catchUp) {
		if in, _ := legTotals(l); in.Records >= produced {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	progress(true)
	_, out := legTotals(l)
	sum := &DemoSummary{
		Profile: o.Profile, Topics: DemoTopics, EdgeKafka: l.EdgeBootstrap(), HQKafka: l.HQBootstrap(),
		RawBytes: out.RawBytes, WireBytes: out.WireBytes,
	}
	if gw := l.Gateway(EdgeGateway); gw != nil {
		for _, ps := range gw.Status().Peers {
			sum.RTTMillis = ps.RTTMillis
		}
	}
	vctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	rep, err := verify.Compare(vctx, l.EdgeOpts(), l.HQOpts(), DemoTopics, l.RenameTopic)
	if err != nil {
		return nil, fmt.Errorf("read-back: %w", err)
	}
	sum.Produced, sum.Mirrored, sum.Lost, sum.Duplicated, sum.Reordered, sum.Unexpected =
		rep.Produced, rep.Mirrored, rep.Lost, rep.Duplicated, rep.Reordered, rep.Unexpected
	sum.Seconds = time.Since(start).Seconds()
	return sum, nil
}

type totals struct {
	Records, RawBytes, WireBytes, LagRecords int64
	LagSeconds                               float64
}

// legTotals sums the hq gateway's inbound legs (committed) and the edge
// gateway's outbound legs (sent).
func legTotals(l *Lab) (in, out totals) {
	if gw := l.Gateway(HQGateway); gw != nil {
		for _, s := range gw.Status().Legs {
			in.Records += s.Records
			in.RawBytes += s.RawBytes
			in.WireBytes += s.WireBytes
			in.LagRecords += s.LagRecords
			in.LagSeconds = max(in.LagSeconds, s.LagSeconds)
		}
	}
	if gw := l.Gateway(EdgeGateway); gw != nil {
		for _, s := range gw.Status().Legs {
			out.Records += s.Records
			out.RawBytes += s.RawBytes
			out.WireBytes += s.WireBytes
		}
	}
	return in, out
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}
