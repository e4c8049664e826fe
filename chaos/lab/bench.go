package lab

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"runtime/pprof"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/internal/verify"
)

// BenchOptions configure RunMirrorBench. Zero values take the defaults.
type BenchOptions struct {
	Records     int64  // per run; zero: 200,000
	ValueSize   int    // pad values to about this many bytes; zero: natural JSON events (~200-350 B)
	Topics      int    // zero: 3
	Partitions  int32  // per topic; zero: 4
	Compression string // link codec; "": zstd
	Passthrough bool   // forward Kafka record batches byte for byte
	// ProduceLatency delays each produce request at the destination (see
	// Options.ProduceLatency), for both contenders.
	ProduceLatency time.Duration
	Runs           int // zero: 3
	// Transactional makes the baseline exactly once, as an application
	// would write it: one transactional producer, each fetch copied in one
	// transaction (committed before the next fetch is copied). False: an
	// async producer without transactions (at least once).
	Transactional bool
	// EdgeBootstrap and HQBootstrap, when set, are external clusters
	// (real Apache Kafka: RunMirrorBenchReal) used instead of fresh kfake
	// clusters; each contender of each run then gets fresh topics there,
	// prefixed "x<n>.". Nil: kfake.
	EdgeBootstrap, HQBootstrap []string
	Logger                     *slog.Logger
	Out                        io.Writer // per-run lines; nil: none
}

// Figures are one measured run of one contender. Seconds and the rates are
// end to end: from starting the contender to the last record acknowledged
// by the destination, startup included. SteadyRecordsPerSec leaves startup
// out: records delivered after the first one, over the time from the first
// to the last.
type Figures struct {
	Seconds             float64 `json:"seconds"`
	RecordsPerSec       float64 `json:"records_per_sec"`
	MBPerSec            float64 `json:"mb_per_sec"`
	StartupSeconds      float64 `json:"startup_seconds"` // until the first record reached the destination
	SteadyRecordsPerSec float64 `json:"steady_records_per_sec"`
	// CPUSeconds is the process's CPU time (user+system) during the phase;
	// Cores is CPUSeconds/Seconds, out of runtime.NumCPU().
	CPUSeconds float64 `json:"cpu_seconds"`
	Cores      float64 `json:"cores"`
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (f *Figures) setCPU(d time.Duration) {
	f.CPUSeconds = d.Seconds()
	if f.Seconds > 0 {
		f.Cores = f.CPUSeconds / f.Seconds
	}
}

func figures(n int64, mb float64, start, first time.Time, firstCount int64, end time.Time) Figures {
	secs := end.Sub(start).Seconds()
	f := Figures{Seconds: secs, RecordsPerSec: float64(n) / secs, MBPerSec: mb / secs, StartupSeconds: first.Sub(start).Seconds()}
	if d := end.Sub(first).Seconds(); d > 0 {
		f.SteadyRecordsPerSec = float64(n-firstCount) / d
	}
	return f
}

// BenchResult compares meridian with the baseline.
type BenchResult struct {
	Records     int64  `json:"records"`
	Kafka       string `json:"kafka"` // the clusters: kfake, or real Apache Kafka
	Bytes       int64  `json:"bytes"` // source key+value+header bytes per run
	Compression string `json:"compression"`
	Passthrough bool   `json:"passthrough"`
	// BaselineKind is "at-least-once" or "transactional" (BenchOptions.Transactional).
	BaselineKind string    `json:"baseline_kind"`
	Baseline     []Figures `json:"baseline"`
	Meridian     []Figures `json:"meridian"`
	// Medians over the runs, and the medians of the per-run ratios
	// meridian/baseline: end to end, and steady state.
	BaselineMedian Figures `json:"baseline_median"`
	MeridianMedian Figures `json:"meridian_median"`
	Ratio          float64 `json:"ratio"`
	SteadyRatio    float64 `json:"steady_ratio"`
	RawBytes       int64   `json:"link_raw_bytes"`
	WireBytes      int64   `json:"link_wire_bytes"`
	Verified       bool    `json:"verified"` // every meridian run read back exact
}

// RunMirrorBench measures meridian (two gateways over loopback QUIC, exactly
// once) against a direct franz-go consume→produce loop between the same two
// in-process clusters, in the same run. In each run every contender gets a
// fresh lab with the same preloaded source; the order alternates between
// runs. Both are timed until the last record is acknowledged by the
// destination.
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
	res := &BenchResult{Records: o.Records, Kafka: "kfake", Compression: o.Compression, Passthrough: o.Passthrough, Verified: true,
		BaselineKind: map[bool]string{false: "at-least-once", true: "transactional"}[o.Transactional]}
	if len(o.EdgeBootstrap) > 0 {
		res.Kafka = "external"
	}
	var ratios, steady []float64
	for run := 1; run <= o.Runs; run++ {
		b, m, bytes, raw, wire, ok, err := benchRun(ctx, o, topics, run%2 == 1)
		if err != nil {
			return nil, fmt.Errorf("run %d: %w", run, err)
		}
		res.Bytes = bytes
		res.RawBytes, res.WireBytes = raw, wire
		res.Verified = res.Verified && ok
		res.Baseline = append(res.Baseline, b)
		res.Meridian = append(res.Meridian, m)
		ratios = append(ratios, m.RecordsPerSec/b.RecordsPerSec)
		steady = append(steady, m.SteadyRecordsPerSec/b.SteadyRecordsPerSec)
		fmt.Fprintf(o.Out, "run %d: baseline %.0f rec/s (steady %.0f, startup %.2fs, %.2f cores), meridian %.0f rec/s (steady %.0f, startup %.2fs, %.2f cores); ratio %.2f, steady %.2f; exact=%v\n",
			run, b.RecordsPerSec, b.SteadyRecordsPerSec, b.StartupSeconds, b.Cores, m.RecordsPerSec, m.SteadyRecordsPerSec, m.StartupSeconds, m.Cores,
			m.RecordsPerSec/b.RecordsPerSec, m.SteadyRecordsPerSec/b.SteadyRecordsPerSec, ok)
	}
	res.BaselineMedian = medianFigures(res.Baseline)
	res.MeridianMedian = medianFigures(res.Meridian)
	res.Ratio = median(ratios)
	res.SteadyRatio = median(steady)
	return res, nil
}

func benchRun(ctx context.Context, o BenchOptions, topics []string, baselineFirst bool) (base, mer Figures, bytes, raw, wire int64, exact bool, err error) {
	// Each contender runs in its own fresh lab (fresh clusters and heap
	// state), and the order alternates from run to run.
	runBase := func(ctx context.Context) error {
		l, topics, mb, n, err := preloaded(ctx, o, topics)
		if err != nil {
			return err
		}
		defer l.Close()
		bytes = n
		cpu0 := cpuTime()
		copyFn := directCopy
		if o.Transactional {
			copyFn = transactionalCopy
		}
		if base, err = copyFn(ctx, l, topics, o.Partitions, o.Records, mb); err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		base.setCPU(cpuTime() - cpu0)
		return nil
	}
	runMeridian := func(ctx context.Context) error {
		l, topics, mb, n, err := preloaded(ctx, o, topics)
		if err != nil {
			return err
		}
		defer l.Close()
		bytes = n
		cpu0 := cpuTime()
		start := time.Now()
		var (
			first      time.Time
			firstCount int64
		)
		for _, g := range []string{HQGateway, EdgeGateway} {
			if err := l.Start(g); err != nil {
				return err
			}
		}
		for {
			in, _ := legTotals(l)
			if in.Records > 0 && first.IsZero() {
				first, firstCount = time.Now(), in.Records
			}
			if in.Records >= o.Records {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if time.Since(start) > 10*time.Minute {
				return fmt.Errorf("meridian: only %d of %d records after 10 minutes", in.Records, o.Records)
			}
			time.Sleep(5 * time.Millisecond)
		}
		mer = figures(o.Records, mb, start, first, firstCount, time.Now())
		mer.setCPU(cpuTime() - cpu0)
		_, out := legTotals(l)
		raw, wire = out.RawBytes, out.WireBytes
		var rep *verify.Report
		pprof.Do(ctx, pprof.Labels("phase", "verify"), func(ctx context.Context) {
			rep, err = verify.Compare(ctx, l.EdgeOpts(), l.HQOpts(), topics, l.RenameTopic)
		})
		if err != nil {
			return err
		}
		exact = rep.OK() && rep.Mirrored == o.Records
		return nil
	}
	order := []func(context.Context) error{runBase, runMeridian}
	if !baselineFirst {
		order[0], order[1] = order[1], order[0]
	}
	for i, f := range order {
		// Label the contenders' goroutines so that a CPU profile of the
		// benchmark can be split: -tagfocus contender=meridian. Goroutines
		// inherit labels, so the in-process clusters (started before the
		// timed phase) carry phase=setup and the gateways phase=run.
		name := "baseline"
		if (i == 0) != baselineFirst {
			name = "meridian"
		}
		pprof.Do(ctx, pprof.Labels("contender", name), func(ctx context.Context) { err = f(ctx) })
		if err != nil {
			return
		}
		runtime.GC() // start the next contender from a collected heap
	}
	return
}

// preloaded starts a lab and fills its source with the run's records. On
// external clusters the topics get a fresh prefix, returned with the lab.
func preloaded(ctx context.Context, o BenchOptions, topics []string) (l *Lab, _ []string, mb float64, n int64, err error) {
	pprof.Do(ctx, pprof.Labels("phase", "clusters"), func(ctx context.Context) { l, topics, mb, n, err = preload(ctx, o, topics) })
	return l, topics, mb, n, err
}

// preloads numbers the labs on external clusters.
var preloads atomic.Int64

func preload(ctx context.Context, o BenchOptions, topics []string) (*Lab, []string, float64, int64, error) {
	lo := Options{Topics: topics, Partitions: o.Partitions, Compression: o.Compression, Passthrough: o.Passthrough, ProduceLatency: o.ProduceLatency, Logger: o.Logger}
	if len(o.EdgeBootstrap) > 0 {
		x := fmt.Sprintf("x%d", preloads.Add(1))
		lo.Topics = nil
		for _, t := range topics {
			lo.Topics = append(lo.Topics, x+"."+t)
		}
		topics = lo.Topics
		lo.EdgeBootstrap, lo.HQBootstrap = o.EdgeBootstrap, o.HQBootstrap
		lo.Routes = []config.Route{{Name: "mirror-" + x, From: "edge/kafka", To: []string{"hq/kafka"},
			Topics: config.TopicFilter{Include: []string{"^" + x + `\.`}}, StartAt: "earliest", Discover: time.Second}}
	}
	l, err := New(lo)
	if err != nil {
		return nil, nil, 0, 0, err
	}
	p, err := NewProducer(l.EdgeOpts(), topics, 42, o.ValueSize)
	if err != nil {
		l.Close()
		return nil, nil, 0, 0, err
	}
	err = p.Run(ctx, 0, o.Records)
	p.Close()
	if err != nil {
		l.Close()
		return nil, nil, 0, 0, err
	}
	return l, topics, float64(p.Bytes()) / 1e6, p.Bytes(), nil
}

// directCopy is the baseline: a franz-go consumer reading the source and an
// async producer writing the same partitions of "baseline.<topic>" at the
// destination, done when every record is acknowledged.
func directCopy(ctx context.Context, l *Lab, topics []string, parts int32, n int64, mb float64) (Figures, error) {
	dst, err := kgo.NewClient(append(l.HQOpts(), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0))...)
	if err != nil {
		return Figures{}, err
	}
	defer dst.Close()
	for _, t := range topics {
		if _, err := kadm.NewClient(dst).CreateTopic(ctx, parts, 1, nil, "baseline."+t); err != nil {
			return Figures{}, err
		}
	}
	start := time.Now()
	var first atomic.Int64 // unix nanos of the first ack
	src, err := kgo.NewClient(append(l.EdgeOpts(), kgo.ConsumeTopics(topics...), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		return Figures{}, err
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
			return Figures{}, err
		}
		fs.EachRecord(func(r *kgo.Record) {
			consumed++
			out := &kgo.Record{Topic: "baseline." + r.Topic, Partition: r.Partition, Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp}
			dst.Produce(ctx, out, func(_ *kgo.Record, err error) {
				if err != nil {
					errOnce.Do(func() { perr = err })
				}
				if c := acked.Add(1); c == 1 {
					first.Store(time.Now().UnixNano())
				} else if c == n {
					close(done)
				}
			})
		})
	}
	select {
	case <-done:
	case <-ctx.Done():
		return Figures{}, ctx.Err()
	}
	if perr != nil {
		return Figures{}, perr
	}
	return figures(n, mb, start, time.Unix(0, first.Load()), 1, time.Now()), nil
}

// txnRecords caps a transaction of transactionalCopy.
const txnRecords = 10_000

// transactionalCopy is the exactly-once baseline: the consumer of
// directCopy and one transactional producer that copies each poll (at most
// txnRecords) in a transaction, committed before the next is copied (an application's
// consume-transform-produce loop, without a group: the bench has none). Done
// when the last transaction has committed.
func transactionalCopy(ctx context.Context, l *Lab, topics []string, parts int32, n int64, mb float64) (Figures, error) {
	dst, err := kgo.NewClient(append(l.HQOpts(), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0),
		kgo.TransactionalID(fmt.Sprintf("bench-baseline-%d", preloads.Load())))...)
	if err != nil {
		return Figures{}, err
	}
	defer dst.Close()
	for _, t := range topics {
		if _, err := kadm.NewClient(dst).CreateTopic(ctx, parts, 1, nil, "baseline."+t); err != nil {
			return Figures{}, err
		}
	}
	start := time.Now()
	src, err := kgo.NewClient(append(l.EdgeOpts(), kgo.ConsumeTopics(topics...), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
	if err != nil {
		return Figures{}, err
	}
	defer src.Close()
	var (
		copied, firstCount int64
		first              time.Time
	)
	for copied < n {
		fs := src.PollRecords(ctx, txnRecords)
		if err := fs.Err0(); err != nil {
			return Figures{}, err
		}
		if fs.NumRecords() == 0 {
			continue
		}
		if err := dst.BeginTransaction(); err != nil {
			return Figures{}, err
		}
		var recs []*kgo.Record
		fs.EachRecord(func(r *kgo.Record) {
			recs = append(recs, &kgo.Record{Topic: "baseline." + r.Topic, Partition: r.Partition, Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp})
		})
		if err := dst.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			_ = dst.EndTransaction(context.WithoutCancel(ctx), kgo.TryAbort)
			return Figures{}, err
		}
		if err := dst.EndTransaction(ctx, kgo.TryCommit); err != nil {
			return Figures{}, err
		}
		copied += int64(len(recs))
		if first.IsZero() {
			first, firstCount = time.Now(), copied
		}
	}
	return figures(n, mb, start, first, firstCount, time.Now()), nil
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
	var a, b, c, d, e, g, h []float64
	for _, f := range fs {
		a, b, c = append(a, f.Seconds), append(b, f.RecordsPerSec), append(c, f.MBPerSec)
		d, e = append(d, f.StartupSeconds), append(e, f.SteadyRecordsPerSec)
		g, h = append(g, f.CPUSeconds), append(h, f.Cores)
	}
	return Figures{Seconds: median(a), RecordsPerSec: median(b), MBPerSec: median(c), StartupSeconds: median(d),
		SteadyRecordsPerSec: median(e), CPUSeconds: median(g), Cores: median(h)}
}
