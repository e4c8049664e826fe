package lab

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/verify"
)

// BenchOptions configure RunMirrorBench. Zero values take the defaults.
type BenchOptions struct {
	Records     int64  // per run; zero: 200,000
	ValueSize   int    // pad values to about this many bytes; zero: natural JSON events (~200-350 B)
	Topics      int    // zero: 3
	Partitions  int32  // per topic; zero: 4
	Compression string // link codec; "": zstd
	Runs        int    // zero: 3
	Logger      *slog.Logger
	Out         io.Writer // per-run lines; nil: none
}

// Figures are one measured run of one contender.
type Figures struct {
	Seconds       float64 `json:"seconds"`
	RecordsPerSec float64 `json:"records_per_sec"`
	MBPerSec      float64 `json:"mb_per_sec"`
}

// BenchResult compares meridian with the baseline.
type BenchResult struct {
	Records     int64     `json:"records"`
	Bytes       int64     `json:"bytes"` // source key+value+header bytes per run
	Compression string    `json:"compression"`
	Baseline    []Figures `json:"baseline"`
	Meridian    []Figures `json:"meridian"`
	// Medians over the runs, and the median of the per-run ratios
	// meridian/baseline (records per second).
	BaselineMedian Figures `json:"baseline_median"`
	MeridianMedian Figures `json:"meridian_median"`
	Ratio          float64 `json:"ratio"`
	RawBytes       int64   `json:"link_raw_bytes"`
	WireBytes      int64   `json:"link_wire_bytes"`
	Verified       bool    `json:"verified"` // every meridian run read back exact
}

// RunMirrorBench measures meridian (two gateways over loopback QUIC, exactly
// once) against a direct franz-go consume→produce loop between the same two
// in-process clusters, in the same run. Each run starts fresh clusters,
// preloads the source, runs the baseline, then meridian; both are timed until
// the last record is acknowledged by the destination.
func RunMirrorBench(ctx context.Context, o BenchOptions) (*BenchResult, error) {
	if o.Records == 0 {
		o.Records = 200_000
	}
	if o.Topics == 0 {
		o.Topics = 3
	}
	if o.Partitions == 0 {
		o.Partitions = 4
	}
	if o.Compression == "" {
		o.Compression = "zstd"
	}
	if o.Runs == 0 {
		o.Runs = 3
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	topics := make([]string, o.Topics)
	for i := range topics {
		topics[i] = fmt.Sprintf("bench.%d", i)
	}
	res := &BenchResult{Records: o.Records, Compression: o.Compression, Verified: true}
	var ratios []float64
	for run := 1; run <= o.Runs; run++ {
		b, m, bytes, raw, wire, ok, err := benchRun(ctx, o, topics)
		if err != nil {
			return nil, fmt.Errorf("run %d: %w", run, err)
		}
		res.Bytes = bytes
		res.RawBytes, res.WireBytes = raw, wire
		res.Verified = res.Verified && ok
		res.Baseline = append(res.Baseline, b)
		res.Meridian = append(res.Meridian, m)
		ratios = append(ratios, m.RecordsPerSec/b.RecordsPerSec)
		fmt.Fprintf(o.Out, "run %d: baseline %.0f rec/s %.1f MB/s, meridian %.0f rec/s %.1f MB/s, ratio %.2f, exact=%v\n",
			run, b.RecordsPerSec, b.MBPerSec, m.RecordsPerSec, m.MBPerSec, m.RecordsPerSec/b.RecordsPerSec, ok)
	}
	res.BaselineMedian = medianFigures(res.Baseline)
	res.MeridianMedian = medianFigures(res.Meridian)
	res.Ratio = median(ratios)
	return res, nil
}

func benchRun(ctx context.Context, o BenchOptions, topics []string) (base, mer Figures, bytes, raw, wire int64, exact bool, err error) {
	l, err := New(Options{Topics: topics, Partitions: o.Partitions, Compression: o.Compression, Logger: o.Logger})
	if err != nil {
		return
	}
	defer l.Close()
	p, err := NewProducer(l.EdgeOpts(), topics, 42, o.ValueSize)
	if err != nil {
		return
	}
	err = p.Run(ctx, 0, o.Records)
	p.Close()
	if err != nil {
		return
	}
	bytes = p.Bytes()
	mb := float64(bytes) / 1e6

	secs, err := directCopy(ctx, l, topics, o.Partitions, o.Records)
	if err != nil {
		err = fmt.Errorf("baseline: %w", err)
		return
	}
	base = Figures{Seconds: secs, RecordsPerSec: float64(o.Records) / secs, MBPerSec: mb / secs}

	start := time.Now()
	for _, g := range []string{HQGateway, EdgeGateway} {
		if err = l.Start(g); err != nil {
			return
		}
	}
	for {
		in, _ := legTotals(l)
		if in.Records >= o.Records {
			break
		}
		if ctx.Err() != nil {
			err = ctx.Err()
			return
		}
		if time.Since(start) > 10*time.Minute {
			err = fmt.Errorf("meridian: only %d of %d records after 10 minutes", in.Records, o.Records)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	secs = time.Since(start).Seconds()
	mer = Figures{Seconds: secs, RecordsPerSec: float64(o.Records) / secs, MBPerSec: mb / secs}
	_, out := legTotals(l)
	raw, wire = out.RawBytes, out.WireBytes
	rep, err := verify.Compare(ctx, l.EdgeOpts(), l.HQOpts(), topics, l.RenameTopic)
	if err != nil {
		return
	}
	exact = rep.OK() && rep.Mirrored == o.Records
	return
}

// directCopy is the baseline: a franz-go consumer reading the source and an
// async producer writing the same partitions of "baseline.<topic>" at the
// destination, done when every record is acknowledged.
func directCopy(ctx context.Context, l *Lab, topics []string, parts int32, n int64) (float64, error) {
	dst, err := kgo.NewClient(append(l.HQOpts(), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0))...)
	if err != nil {
		return 0, err
	}
	defer dst.Close()
	for _, t := range topics {
		if _, err := kadm.NewClient(dst).CreateTopic(ctx, parts, 1, nil, "baseline."+t); err != nil {
			return 0, err
		}
	}
	start := time.Now()
	src, err := kgo.NewClient(append(l.EdgeOpts(), kgo.ConsumeTopics(topics...), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	var (
		acked   atomic.Int64
		errOnce sync.Once
		perr    error
		done    = make(chan struct{})
	)
	var consumed int64
	for consumed < n {
		fs := src.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			return 0, err
		}
		fs.EachRecord(func(r *kgo.Record) {
			consumed++
			out := &kgo.Record{Topic: "baseline." + r.Topic, Partition: r.Partition, Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp}
			dst.Produce(ctx, out, func(_ *kgo.Record, err error) {
				if err != nil {
					errOnce.Do(func() { perr = err })
				}
				if acked.Add(1) == n {
					close(done)
				}
			})
		})
	}
	select {
	case <-done:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	if perr != nil {
		return 0, perr
	}
	return time.Since(start).Seconds(), nil
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianFigures(fs []Figures) Figures {
	var a, b, c []float64
	for _, f := range fs {
		a, b, c = append(a, f.Seconds), append(b, f.RecordsPerSec), append(c, f.MBPerSec)
	}
	return Figures{Seconds: median(a), RecordsPerSec: median(b), MBPerSec: median(c)}
}
