package mirror_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/mirror/progress"
)

// BenchmarkGroupSyncLag measures how far the destination's consumer group
// offsets trail the source's commits while the route mirrors a steady
// stream: 20 groups commit every 100 ms at the source, at lags of 0 to
// 1,000 records, on 4 partitions. For every source commit it finds, by
// polling the destination every 10 ms, when the translated offset (or a
// later one) became visible there. It reports the p50, p99 and maximum of
// that delay in milliseconds; the target is p99 ≤ 1,000.
//
//	go test -run '^$' -bench GroupSyncLag -benchtime 1x ./mirror/
func BenchmarkGroupSyncLag(b *testing.B) {
	for b.Loop() {
		groupSyncLag(b, 15*time.Second)
	}
}

type srcCommit struct {
	at    time.Time
	group string
	part  int32
	off   int64
}

type dstSeen struct {
	at    time.Time
	group string
	part  int32
	off   int64
}

func groupSyncLag(b *testing.B, run time.Duration) {
	const (
		groups = 20
		parts  = 4
	)
	f := newFixture(b, []string{"t.a"}, parts)
	f.topo.Routes[0].GroupInclude = []string{"^g"}
	f.gateway(b, "gw", 0)
	f.gateway(b, "ge", 0)
	ctx, cancel := context.WithTimeout(context.Background(), run+30*time.Second)
	defer cancel()
	src := []kgo.Opt{kgo.SeedBrokers(f.src.ListenAddrs()...)}
	dst := []kgo.Opt{kgo.SeedBrokers(f.dst.ListenAddrs()...)}
	scl, err := kgo.NewClient(append(slices.Clone(src), kgo.ProducerLinger(5*time.Millisecond))...)
	if err != nil {
		b.Fatal(err)
	}
	defer scl.Close()
	dcl, err := kgo.NewClient(dst...)
	if err != nil {
		b.Fatal(err)
	}
	defer dcl.Close()
	sadm, dadm := kadm.NewClient(scl), kadm.NewClient(dcl)

	names := make([]string, groups)
	for g := range names {
		names[g] = fmt.Sprintf("g%02d", g)
	}
	r := &syncLagRun{ctx: ctx, names: names, scl: scl, sadm: sadm, dadm: dadm, stop: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Go(r.produce)      // a steady stream, about 2,000 records/s
	wg.Go(r.commitGroups) // the groups commit every 100 ms, each at its own lag behind the end
	wg.Go(r.pollDest)     // the destination, polled every 10 ms
	time.Sleep(run)
	close(r.stop)
	wg.Wait()
	time.Sleep(2 * time.Second) // let the last commits land, so they count as late rather than missing

	m, err := progress.LoadOffsetMap(ctx, dst, "r:west/kafka")
	if err != nil {
		b.Fatal(err)
	}
	commits, seen := r.commits, r.seen
	lags, missing := syncLags(m, commits, seen)
	if len(lags) == 0 {
		b.Fatalf("no source commit was seen at the destination (%d commits, %d observations)", len(commits), len(seen))
	}
	slices.Sort(lags)
	pct := func(q float64) float64 {
		return float64(lags[min(len(lags)-1, int(q*float64(len(lags))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(lags[len(lags)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(len(lags)), "commits")
	b.ReportMetric(float64(missing), "never-seen")
}

// syncLagRun is the traffic of groupSyncLag: a producer, the source groups'
// commits, and the destination's offsets as observed.
type syncLagRun struct {
	ctx        context.Context
	names      []string
	scl        *kgo.Client
	sadm, dadm *kadm.Client
	stop       chan struct{}

	mu      sync.Mutex
	commits []srcCommit
	seen    []dstSeen
}

func (r *syncLagRun) produce() {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	i := 0
	for {
		select {
		case <-r.stop:
			return
		case <-tick.C:
		}
		for range 20 {
			r.scl.Produce(r.ctx, &kgo.Record{Topic: "t.a", Key: fmt.Append(nil, i), Value: fmt.Appendf(nil, `{"seq":%d}`, i)}, nil)
			i++
		}
	}
}

func (r *syncLagRun) commitGroups() {
	rng := rand.New(rand.NewPCG(1, 1))
	lag := make([]int64, len(r.names))
	for g := range lag {
		lag[g] = int64(g) * 50 // 0 .. 950 records behind
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-tick.C:
		}
		ends, err := r.sadm.ListEndOffsets(r.ctx, "t.a")
		if err != nil {
			continue
		}
		for g, name := range r.names {
			os := kadm.Offsets{}
			var cs []srcCommit
			ends.Each(func(o kadm.ListedOffset) {
				at := max(0, o.Offset-lag[g]-rng.Int64N(10))
				os.Add(kadm.Offset{Topic: "t.a", Partition: o.Partition, At: at, LeaderEpoch: -1})
				cs = append(cs, srcCommit{group: name, part: o.Partition, off: at})
			})
			if err := r.sadm.CommitAllOffsets(r.ctx, name, os); err != nil {
				continue
			}
			now := time.Now()
			r.mu.Lock()
			for _, c := range cs {
				c.at = now
				r.commits = append(r.commits, c)
			}
			r.mu.Unlock()
		}
	}
}

func (r *syncLagRun) pollDest() {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-tick.C:
		}
		rs := r.dadm.FetchManyOffsets(r.ctx, r.names...)
		now := time.Now()
		r.mu.Lock()
		for _, fr := range rs {
			if fr.Err != nil {
				continue
			}
			fr.Fetched.Each(func(o kadm.OffsetResponse) {
				if o.Err == nil && o.At >= 0 {
					r.seen = append(r.seen, dstSeen{now, fr.Group, o.Partition, o.At})
				}
			})
		}
		r.mu.Unlock()
	}
}

// syncLags is, for each source commit made after the first second
// (start-up), how long until the destination was first seen at or past its
// translation; missing counts those never seen.
func syncLags(m *progress.OffsetMap, commits []srcCommit, seen []dstSeen) (lags []time.Duration, missing int) {
	type key struct {
		group string
		part  int32
	}
	obs := map[key][]dstSeen{}
	for _, s := range seen {
		k := key{s.group, s.part}
		obs[k] = append(obs[k], s)
	}
	warm := commits[0].at.Add(time.Second)
	last := commits[len(commits)-1].at.Add(-2 * time.Second)
	for _, c := range commits {
		if c.at.Before(warm) || c.at.After(last) {
			continue
		}
		want := m.Translate("t.a", c.part, c.off).Dest
		os := obs[key{c.group, c.part}]
		i := sort.Search(len(os), func(i int) bool { return !os[i].at.Before(c.at) && os[i].off >= want })
		// os is in time order and offsets only grow, so the search holds.
		if i == len(os) {
			missing++
			continue
		}
		lags = append(lags, os[i].at.Sub(c.at))
	}
	return lags, missing
}
