package quic

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/chaos"
	"github.com/meridian-gw/meridian/transport"
)

// Goodput over an emulated GEO satellite link (chaos.UDPProxy with the
// geo-satellite profile, events off, random loss set, 10 Mbit/s each way).
// Each run is bounded: a 30 s transfer, the first 15 s reported as startup
// and the last 15 s as the steady state.
//
//	MERIDIAN_LINK_BENCH=all go test -run TestLinkGoodput -v -timeout 60m ./transport/quic/
//	MERIDIAN_LINK_BENCH='loss=1%/any' go test -run TestLinkGoodput -v -timeout 60m ./transport/quic/
//	go test -run '^$' -bench BenchmarkLinkGoodput -benchtime 1x -timeout 60m ./transport/quic/
//
// The filter is a substring of the run names printed by the test. The
// benchmark runs the same table as sub-benchmarks (-bench
// 'BenchmarkLinkGoodput/loss=5%' selects). MERIDIAN_LINK_LOG=1 logs the
// dialer at debug level to stderr (the stripe controller's epochs).

// linkRun is one goodput measurement.
type linkRun struct {
	name       string
	loss       float64
	stripes    int // dialer Stripes (0: the single-connection binding)
	maxStripes int // dialer MaxStripes; -1: adaptive as SessionFor derives it (Stripes too)
	placement  Placement
	partitions int // hot partitions, one sending goroutine each
}

const (
	linkBatchBytes = 32 << 10
	linkDuration   = 30 * time.Second
	linkSteadyFrom = 15 * time.Second
	linkRate       = 10_000_000
)

// linkRuns is the table the test and the benchmark measure.
func linkRuns() []linkRun {
	var runs []linkRun
	for _, loss := range []float64{0.01, 0.05} {
		l := fmt.Sprintf("loss=%g%%", loss*100)
		runs = append(runs, linkRun{name: l + "/single", loss: loss, partitions: 4})
		for _, pl := range []Placement{PlaceAny, PlacePinned} {
			for _, n := range []int{2, 4, 8, 16, 32, 64} {
				if pl == PlacePinned && n > 16 {
					continue // 4 partitions use at most 4 stripes
				}
				runs = append(runs, linkRun{name: fmt.Sprintf("%s/%s/stripes=%d", l, pl, n), loss: loss, stripes: n, placement: pl, partitions: 4})
			}
			runs = append(runs, linkRun{name: fmt.Sprintf("%s/%s/adaptive", l, pl), loss: loss, maxStripes: -1, placement: pl, partitions: 4})
		}
		runs = append(runs, linkRun{name: l + "/pinned/adaptive/partitions=64", loss: loss, maxStripes: -1, placement: PlacePinned, partitions: 64})
	}
	return runs
}

// linkResult is what one run measured.
type linkResult struct {
	perSecond              []float64 // Mbit/s of lane bytes the receiver read from QUIC, per second
	total, startup, steady float64   // Mbit/s, from perSecond
	inOrder                []float64 // Mbit/s of batch frames handed to Recv (in partition order), per second
	delivered              float64   // Mbit/s of inOrder over the steady state
	stripes, resumed       int
	maxHeld                int64 // most raw bytes in the receiver's reorder buffer
	proxy                  chaos.ProxyStats
	seed                   uint64
	dial                   time.Duration
	cpu                    float64 // CPU seconds per second of the whole process (proxy, both gateways)
}

func (r linkResult) String() string {
	return fmt.Sprintf("steady %5.2f Mbit/s (%3.0f%% of link; in order %5.2f), startup %5.2f, stripes %3d (%d resumed), reorder max %5.1f MiB, cpu %.2f cores, dial %v, loss up %d/%d pkts, queue drops %d, seed %d",
		r.steady, 100*r.steady*1e6/linkRate, r.delivered, r.startup, r.stripes, r.resumed, float64(r.maxHeld)/(1<<20), r.cpu, r.dial.Round(time.Millisecond),
		r.proxy.Up.Dropped.Loss, r.proxy.Up.Received, r.proxy.Up.Dropped.Queue, r.seed)
}

// measureLink runs one measurement: it opens a session across the
// emulated link, sends from one goroutine per partition, receives and
// checks order on another, and samples the receiver's byte counters once a
// second for linkDuration.
func measureLink(tb testing.TB, r linkRun) linkResult {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := openLink(ctx, tb, r)
	defer l.close()
	res := linkResult{dial: l.dial, seed: l.seed}

	senders := sendLinkBatches(ctx, l.client, r.partitions)
	var delivered atomic.Int64
	var recvErr error
	var receiver sync.WaitGroup
	receiver.Go(func() { recvErr = receiveLinkBatches(ctx, cancel, l.server, &delivered) })

	t0 := time.Now()
	cpu0 := cpuTime()
	sampleLink(ctx, l.server, &delivered, &res)
	res.cpu = (cpuTime() - cpu0).Seconds() / time.Since(t0).Seconds()
	res.stripes = l.client.Stripes()
	for _, st := range l.client.StripeStats() {
		if st.Resumed {
			res.resumed++
		}
	}
	res.proxy = l.px.Stats()
	cancel()
	senders.Wait()
	receiver.Wait()
	if recvErr != nil {
		tb.Fatalf("%s: %v", r.name, recvErr)
	}
	res.summarize()
	return res
}

// link is a session across the emulated GEO link of a linkRun.
type link struct {
	px             *chaos.UDPProxy
	client, server *Conn
	dial           time.Duration
	seed           uint64
}

func (l *link) close() {
	l.server.Close(nil)
	l.client.Close(nil)
	l.px.Close()
}

// openLink listens, puts the impairment proxy in front of the listener and
// dials through it with the stripes and placement r asks for.
func openLink(ctx context.Context, tb testing.TB, r linkRun) *link {
	tb.Helper()
	geo, err := chaos.LoadProfile("geo-satellite")
	if err != nil {
		tb.Fatal(err)
	}
	prof := geo.WithoutEvents().WithLoss(r.loss).WithRate(linkRate)
	p := getPKI(tb)

	base := SessionFor(prof)
	lo := p.server("hq-a")
	lo.Session = base
	lo.Stripes, lo.MaxStripes = 0, 0 // take what the dialer opens
	ln := listen(tb, lo)
	const seed = 42
	px, err := chaos.NewUDPProxy(chaos.UDPProxyOptions{Target: ln.Addr().String(), Profile: prof, Seed: seed})
	if err != nil {
		tb.Fatal(err)
	}

	do := p.client("v7-a", "hq-a")
	do.Session = base
	switch {
	case r.maxStripes < 0: // adaptive, as SessionFor says
		do.Placement = r.placement
	case r.stripes == 0: // the single-connection binding
		do.Stripes, do.MaxStripes, do.Lanes = 0, 0, 0
	default:
		do.Stripes, do.MaxStripes, do.Placement = r.stripes, r.maxStripes, r.placement
	}
	if os.Getenv("MERIDIAN_LINK_LOG") != "" {
		do.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	d, err := NewDialer(do)
	if err != nil {
		px.Close()
		tb.Fatal(err)
	}
	dctx, dcancel := context.WithTimeout(ctx, time.Minute)
	start := time.Now()
	conn, err := d.Dial(dctx, px.Addr().String(), &transport.Hello{Gateway: "v7-a", Legs: []string{"bench"}})
	dcancel()
	if err != nil {
		px.Close()
		tb.Fatalf("dial: %v (seed %d)", err, seed)
	}
	l := &link{px: px, client: conn.(*Conn), dial: time.Since(start), seed: seed}
	l.server = accept(tb, ln)
	return l
}

// sendLinkBatches starts one sender per hot partition, sending 32 KiB
// batches of random (incompressible, codec none) values until ctx ends.
func sendLinkBatches(ctx context.Context, client *Conn, partitions int) *sync.WaitGroup {
	payload := make([]byte, 1000)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range payload {
		payload[i] = byte(rng.Uint32())
	}
	recsPer := linkBatchBytes / (len(payload) + 20)
	var senders sync.WaitGroup
	for part := range partitions {
		senders.Go(func() {
			var off int64
			for seq := uint64(0); ctx.Err() == nil; seq++ {
				recs := make([]transport.Record, recsPer)
				for i := range recs {
					recs[i] = transport.Record{Offset: off + int64(i), Timestamp: int64(i), Value: payload}
				}
				off += int64(recsPer)
				b := &transport.Batch{Leg: "bench", Gen: 1, Seq: seq, Topic: "events", Partition: int32(part), NextOffset: off, Records: recs}
				if err := client.Send(ctx, b); err != nil {
					return
				}
			}
		})
	}
	return &senders
}

// receiveLinkBatches receives until ctx ends, checks every partition's
// order and counts the batch frame bytes into delivered. It returns the
// first failure (and cancels the run), nil if ctx ended first.
func receiveLinkBatches(ctx context.Context, cancel context.CancelFunc, server *Conn, delivered *atomic.Int64) error {
	next := map[int32]int64{}
	for {
		f, err := server.Recv(ctx)
		if err != nil {
			if ctx.Err() == nil {
				return err
			}
			return nil
		}
		b, ok := f.(*transport.Batch)
		if !ok {
			continue
		}
		if b.Records[0].Offset != next[b.Partition] {
			cancel()
			return fmt.Errorf("partition %d: batch at offset %d, want %d (order lost)", b.Partition, b.Records[0].Offset, next[b.Partition])
		}
		next[b.Partition] = b.NextOffset
		delivered.Add(int64(b.WireSize))
	}
}

// sampleLink records, once a second for linkDuration (or until ctx ends),
// what crossed the link: bytes the receiver read from its QUIC streams
// (batch frames and their sequence numbers; control frames are a few
// bytes a second), whether or not their partition's order lets them reach
// Recv yet; and what reached Recv.
func sampleLink(ctx context.Context, server *Conn, delivered *atomic.Int64, res *linkResult) {
	t0 := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last, lastInOrder := server.Stats().WireBytes, delivered.Load()
	for time.Since(t0) < linkDuration && ctx.Err() == nil {
		<-tick.C
		now, inOrder := server.Stats().WireBytes, delivered.Load()
		res.perSecond = append(res.perSecond, float64(now-last)*8/1e6)
		res.inOrder = append(res.inOrder, float64(inOrder-lastInOrder)*8/1e6)
		last, lastInOrder = now, inOrder
		res.maxHeld = max(res.maxHeld, server.reo.heldBytes())
	}
}

// summarize computes the means of the per-second series: over the whole
// run, the startup (before linkSteadyFrom) and the steady state.
func (res *linkResult) summarize() {
	mean := func(xs []float64) float64 {
		if len(xs) == 0 {
			return 0
		}
		s := 0.0
		for _, x := range xs {
			s += x
		}
		return s / float64(len(xs))
	}
	split := int(linkSteadyFrom / time.Second)
	res.total = mean(res.perSecond)
	if len(res.perSecond) > split {
		res.startup, res.steady = mean(res.perSecond[:split]), mean(res.perSecond[split:])
		res.delivered = mean(res.inOrder[split:])
	}
}

func linkFilter() (string, bool) {
	f := os.Getenv("MERIDIAN_LINK_BENCH")
	if f == "" {
		return "", false
	}
	if f == "all" || f == "1" {
		f = ""
	}
	return f, true
}

// TestLinkGoodput prints the goodput table; see the comment at the top of
// the file. It is skipped unless MERIDIAN_LINK_BENCH is set, and under
// -short.
func TestLinkGoodput(t *testing.T) {
	filter, ok := linkFilter()
	if !ok || testing.Short() {
		t.Skip("set MERIDIAN_LINK_BENCH=all (or a run-name filter) to measure goodput over emulated GEO links (30 s per run)")
	}
	for _, r := range linkRuns() {
		if !strings.Contains(r.name, filter) {
			continue
		}
		res := measureLink(t, r)
		t.Logf("%-40s %s", r.name, res)
		t.Logf("%-40s per second: %s", "", fmtSeries(res.perSecond))
		t.Logf("%-40s in order:   %s", "", fmtSeries(res.inOrder))
	}
}

// BenchmarkLinkGoodput measures the same table; run it with -benchtime 1x
// (each run takes 30 s whatever b.N says).
func BenchmarkLinkGoodput(b *testing.B) {
	for _, r := range linkRuns() {
		b.Run(r.name, func(b *testing.B) {
			var res linkResult
			for range b.N {
				res = measureLink(b, r)
			}
			b.ReportMetric(res.steady, "Mbit/s")
			b.ReportMetric(100*res.steady*1e6/linkRate, "%link")
			b.ReportMetric(res.startup, "startup-Mbit/s")
			b.ReportMetric(float64(res.stripes), "stripes")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func fmtSeries(xs []float64) string {
	var sb strings.Builder
	for i, x := range xs {
		if i > 0 {
			sb.WriteByte(' ')
		}
		fmt.Fprintf(&sb, "%.1f", x)
	}
	return sb.String()
}
