package mirror_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/internal/kread"
	"github.com/meridian-gw/meridian/internal/verify"
	"github.com/meridian-gw/meridian/mirror"
	"github.com/meridian-gw/meridian/mirror/progress"
)

const alarmFilter = `headers["kind"] in ["alarm", "critical"] && value.rpm > 3000`

// filterMix is record i of the filter tests: what it carries and whether
// alarmFilter keeps it (and whether evaluating it fails).
func filterMix(i int) (r *kgo.Record, keep, fails bool) {
	kind := []string{"alarm", "info", "critical", "debug"}[i%4]
	rpm := 2000 + (i*37)%2000 // over 3000 about a quarter of the time
	value := fmt.Appendf(nil, `{"seq":%d,"rpm":%d,"pad":"%050d"}`, i, rpm, i)
	r = &kgo.Record{Topic: "t.a", Key: []byte("k" + strconv.Itoa(i%31)), Value: value,
		Headers: []kgo.RecordHeader{{Key: "seq", Value: []byte(strconv.Itoa(i))}, {Key: "kind", Value: []byte(kind)}}}
	keep = (kind == "alarm" || kind == "critical") && rpm > 3000
	switch {
	case i%29 == 0:
		// No kind header: no match. CEL's && absorbs the error when the
		// other side is false, so evaluation fails only when rpm > 3000.
		r.Headers = r.Headers[:1]
		keep, fails = false, rpm > 3000
	case i%23 == 0 && (kind == "alarm" || kind == "critical"): // an alarm that is not JSON
		r.Value = []byte("not json")
		keep, fails = false, true
	}
	return r, keep, fails
}

// produceMix produces records from..from+n of filterMix over the three
// partitions of t.a and returns how many are kept and how many fail the
// filter.
func produceMix(t *testing.T, f *fixture, from, n int) (keep, fails int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.src.ListenAddrs()...), kgo.ProducerLinger(2*time.Millisecond),
		kgo.ProducerBatchMaxBytes(48<<10), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := from; i < from+n; i++ {
		r, k, e := filterMix(i)
		if k {
			keep++
		}
		if e {
			fails++
		}
		r.Partition = int32(i % 3)
		wg.Add(1)
		cl.Produce(context.Background(), r, func(_ *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return keep, fails
}

// TestFilteredRouteMirrorsExactlyTheMatchingRecords produces a mix of
// matching, non-matching and failing records, mirrors them through a
// filtered route (over a record link and over a passthrough link, which a
// filtered leg must not use as such), and checks by read-back that exactly
// the matching ones arrived, in order and once; that every source offset,
// filtered ones included, translates exactly; that a consumer group
// committed on a filtered offset resumes at the destination without loss
// or re-reads; and the filtered counts in status and metrics.
func TestFilteredRouteMirrorsExactlyTheMatchingRecords(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			mods := append(slices.Clone(m.mods), func(c *config.File) {
				c.Routes[0].Filter = alarmFilter
				c.Routes[0].Groups = &config.GroupFilter{Include: []string{"^billing$"}}
			})
			f := newFixture(t, []string{"t.a"}, 3, mods...)
			var c batchCounter
			f.wrapListener = c.wrap
			keep1, fails1 := produceMix(t, f, 0, 3000)
			f.gateway(t, "gw", 1<<20)
			f.gateway(t, "ge", 0)
			keep2, fails2 := produceMix(t, f, 3000, 3000)
			keep, fails := keep1+keep2, fails1+fails2

			src := []kgo.Opt{kgo.SeedBrokers(f.src.ListenAddrs()...)}
			dst := []kgo.Opt{kgo.SeedBrokers(f.dst.ListenAddrs()...)}
			sp := readSource(t, src)
			want := map[int32][]rec{} // the matching source records, per partition
			total := 0
			for p, rs := range sp {
				for _, r := range rs {
					if r.keep {
						want[p] = append(want[p], rec{r.off, r.fp})
						total++
					}
				}
			}
			if total != keep || total == 0 || total == 6000 {
				t.Fatalf("%d source records match, want %d (and some, not all)", total, keep)
			}
			// Wait until the leg's progress covers the whole source (the
			// filtered tail included), then read the destination back.
			waitProgress(t, f, src, dst, 60*time.Second)
			dp := readPartitions(t, dst, "t.a")
			got := 0
			for p := range sp {
				got += len(dp[p])
				if !slices.EqualFunc(dp[p], want[p], func(a, b rec) bool { return a.fp == b.fp }) {
					t.Fatalf("partition %d: destination holds %d records, want exactly the %d matching source records in order", p, len(dp[p]), len(want[p]))
				}
			}
			if got != total {
				t.Fatalf("destination holds %d records, want %d", got, total)
			}
			if c.kafka.Load() != 0 {
				t.Errorf("a filtered leg forwarded %d Kafka batches untouched", c.kafka.Load())
			}

			// Every source offset translates to the next mirrored record.
			checkFilteredTranslation(t, f, sp, dp)

			// A group committed at the source on a filtered offset reads
			// exactly the matching records after it at the destination.
			checkFilteredGroup(t, sp, src, dst)

			// Status and metrics count what the filter dropped.
			st := f.engine("ge").Status()
			var out *mirror.LegStatus
			for i := range st.Legs {
				if st.Legs[i].Direction == "out" {
					out = &st.Legs[i]
				}
			}
			if out == nil || out.Filter != alarmFilter {
				t.Fatalf("status: no outbound leg with the filter: %+v", st.Legs)
			}
			if out.FilteredRecords < int64(6000-keep) || out.FilterErrors < int64(fails) || out.FilteredBytes <= 0 || out.LastFilterError == "" {
				t.Errorf("status: filtered %d records (%d bytes), %d errors (%q); want at least %d and %d errors",
					out.FilteredRecords, out.FilteredBytes, out.FilterErrors, out.LastFilterError, 6000-keep, fails)
			}
			if out.Records < int64(keep) {
				t.Errorf("status: %d records sent, want at least %d", out.Records, keep)
			}
			f.mu.Lock()
			reg := f.regs["ge"]
			f.mu.Unlock()
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			series := map[string]float64{}
			for _, mf := range mfs {
				if strings.Contains(mf.GetName(), "filter") {
					for _, mt := range mf.GetMetric() {
						name := mf.GetName()
						for _, l := range mt.GetLabel() {
							if l.GetName() == "reason" {
								name += "/" + l.GetValue()
							}
						}
						series[name] += mt.GetCounter().GetValue()
					}
				}
			}
			if series["meridian_filtered_records_total"] < float64(6000-keep) || series["meridian_filtered_bytes_total"] <= 0 ||
				series["meridian_filter_errors_total/eval"] == 0 || series["meridian_filter_errors_total/not-json"] == 0 ||
				series["meridian_filter_errors_total/eval"]+series["meridian_filter_errors_total/not-json"] < float64(fails) {
				t.Errorf("filter metrics %v: want at least %d filtered, %d errors of both reasons", series, 6000-keep, fails)
			}
		})
	}
}

type srcRec struct {
	off  int64
	fp   uint64
	keep bool
}

// readSource reads t.a at the source with whether each record matches
// alarmFilter, by its seq header.
func readSource(t *testing.T, src []kgo.Opt) map[int32][]srcRec {
	t.Helper()
	out := map[int32][]srcRec{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kread.Each(ctx, src, []string{"t.a"}, func(r *kgo.Record) {
		seq, _ := strconv.Atoi(string(r.Headers[0].Value))
		_, keep, _ := filterMix(seq)
		out[r.Partition] = append(out[r.Partition], srcRec{r.Offset, verify.Fingerprint(r), keep})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// waitProgress waits until the leg's committed progress reaches the end
// of every source partition.
func waitProgress(t testing.TB, f *fixture, src, dst []kgo.Opt, within time.Duration) {
	t.Helper()
	ctx := context.Background()
	scl, err := kgo.NewClient(src...)
	if err != nil {
		t.Fatal(err)
	}
	defer scl.Close()
	ends, err := kadm.NewClient(scl).ListEndOffsets(ctx, "t.a")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(within)
	for {
		m, err := progress.LoadOffsetMap(ctx, dst, "r:west/kafka")
		done := err == nil
		var behind []string
		ends.Each(func(e kadm.ListedOffset) {
			if !done {
				return
			}
			if tr := m.Translate("t.a", e.Partition, e.Offset); tr.Mirrored < e.Offset {
				done = false
				behind = append(behind, fmt.Sprintf("p%d at %d of %d", e.Partition, tr.Mirrored, e.Offset))
			}
		})
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("progress did not reach the source's end within %v: %v %s", within, err, strings.Join(behind, ", "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkFilteredTranslation translates every source offset of t.a up to its
// end: the destination record there is the first matching source record at
// or after it, and exactly the matching records before it precede it.
func checkFilteredTranslation(t *testing.T, f *fixture, sp map[int32][]srcRec, dp map[int32][]rec) {
	t.Helper()
	m, err := progress.LoadOffsetMap(context.Background(), []kgo.Opt{kgo.SeedBrokers(f.dst.ListenAddrs()...)}, "r:west/kafka")
	if err != nil {
		t.Fatal(err)
	}
	filtered := 0
	for p, srcRecs := range sp {
		dstAt := map[int64]uint64{}
		for _, r := range dp[p] {
			dstAt[r.off] = r.fp
		}
		end := srcRecs[len(srcRecs)-1].off + 1
		for o := int64(0); o <= end; o++ {
			tr := m.Translate("t.a", p, o)
			next, before := -1, 0 // the first matching record at or after o; matching ones before it
			for i, r := range srcRecs {
				if r.off >= o && r.keep {
					next = i
					break
				}
				if r.keep {
					before++
				}
			}
			if i := slices.IndexFunc(srcRecs, func(r srcRec) bool { return r.off == o }); i >= 0 && !srcRecs[i].keep {
				filtered++
			}
			if next < 0 {
				if tr.Status != progress.CaughtUp && tr.Status != progress.Exact {
					t.Fatalf("p%d offset %d (after the last matching record): status %s", p, o, tr.Status)
				}
				if n := len(dp[p]); n > 0 && tr.Dest <= dp[p][n-1].off {
					t.Fatalf("p%d offset %d: dest %d would re-read dest record %d", p, o, tr.Dest, dp[p][n-1].off)
				}
				continue
			}
			if tr.Status != progress.Exact || dstAt[tr.Dest] != srcRecs[next].fp {
				t.Fatalf("p%d offset %d: translated to %d (%s), which is not the next matching source record %d", p, o, tr.Dest, tr.Status, srcRecs[next].off)
			}
			n := 0
			for _, r := range dp[p] {
				if r.off < tr.Dest {
					n++
				}
			}
			if n != before {
				t.Fatalf("p%d offset %d: %d destination records precede %d, want the %d matching ones", p, o, n, tr.Dest, before)
			}
		}
	}
	if filtered == 0 {
		t.Fatal("no source offset held a filtered record")
	}
}

// checkFilteredGroup commits group billing at the source on a filtered
// record of each partition and checks that, once synced, a consumer of it
// at the destination reads exactly the matching records from there on.
func checkFilteredGroup(t *testing.T, sp map[int32][]srcRec, src, dst []kgo.Opt) {
	t.Helper()
	ctx := context.Background()
	scl, err := kgo.NewClient(src...)
	if err != nil {
		t.Fatal(err)
	}
	defer scl.Close()
	dcl, err := kgo.NewClient(dst...)
	if err != nil {
		t.Fatal(err)
	}
	defer dcl.Close()
	g := &groupEnds{t: t, ctx: ctx, dst: dst, sadm: kadm.NewClient(scl), dadm: kadm.NewClient(dcl)}
	at := map[int32]int64{}
	for p, rs := range sp {
		for _, r := range rs[len(rs)/2:] {
			if !r.keep {
				at[p] = r.off
				break
			}
		}
	}
	g.commitAt("billing", at)
	g.waitDest("group sync across filtered records", g.translate(at), 10*time.Second)

	expect := map[int32][]uint64{}
	total := 0
	for p, rs := range sp {
		for _, r := range rs {
			if r.off >= at[p] && r.keep {
				expect[p] = append(expect[p], r.fp)
				total++
			}
		}
	}
	cons, err := kgo.NewClient(append(slices.Clone(dst), kgo.ConsumerGroup("billing"), kgo.ConsumeTopics("t.a"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.DisableAutoCommit())...)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	got := map[int32][]uint64{}
	n := 0
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for n < total && rctx.Err() == nil {
		cons.PollFetches(rctx).EachRecord(func(r *kgo.Record) {
			got[r.Partition] = append(got[r.Partition], verify.Fingerprint(r))
			n++
		})
	}
	// A little longer: anything read beyond the expected is a re-read.
	pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer pcancel()
	cons.PollFetches(pctx).EachRecord(func(r *kgo.Record) { got[r.Partition] = append(got[r.Partition], verify.Fingerprint(r)) })
	for p := range sp {
		if !slices.Equal(got[p], expect[p]) {
			t.Errorf("partition %d: the destination consumer read %d records, want exactly the %d matching ones the source group had not read", p, len(got[p]), len(expect[p]))
		}
	}
}

// TestFilteredRouteSurvivesRestartsAndLinkCuts: while a filtered route
// mirrors, the receiver restarts twice and the link goes down once; the
// destination still holds exactly the matching records, in order, once.
func TestFilteredRouteSurvivesRestartsAndLinkCuts(t *testing.T) {
	f := newFixture(t, []string{"t.a"}, 3, func(c *config.File) { c.Routes[0].Filter = alarmFilter })
	f.gateway(t, "ge", 0)
	stopRecv := f.gateway(t, "gw", 256<<10)
	const per = 2500
	for round := range 4 {
		produceMix(t, f, round*per, per)
		time.Sleep(150 * time.Millisecond) // let some of it be in flight
		switch round {
		case 0, 2:
			stopRecv()
			stopRecv = f.gateway(t, "gw", 256<<10)
		case 1:
			f.net.SetDown(true)
			time.Sleep(500 * time.Millisecond)
			f.net.SetDown(false)
		}
	}
	src := []kgo.Opt{kgo.SeedBrokers(f.src.ListenAddrs()...)}
	dst := []kgo.Opt{kgo.SeedBrokers(f.dst.ListenAddrs()...)}
	waitProgress(t, f, src, dst, 90*time.Second)
	sp := readSource(t, src)
	dp := readPartitions(t, dst, "t.a")
	for p, rs := range sp {
		var want []uint64
		for _, r := range rs {
			if r.keep {
				want = append(want, r.fp)
			}
		}
		var got []uint64
		for _, r := range dp[p] {
			got = append(got, r.fp)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("partition %d: destination holds %d records, want exactly the %d matching ones in order", p, len(got), len(want))
		}
	}
	checkFilteredTranslation(t, f, sp, dp)
}
