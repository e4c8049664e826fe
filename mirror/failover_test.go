package mirror_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/mirror/dr"
	"github.com/meridian-gw/meridian/routing"
)

func failoverOpts(t *testing.T, f *fixture) dr.FailoverOptions {
	t.Helper()
	table, err := routing.Compile(f.topo, "gw")
	if err != nil {
		t.Fatal(err)
	}
	return dr.FailoverOptions{
		Leg: table.In[0],
		Src: []kgo.Opt{kgo.SeedBrokers(f.src.ListenAddrs()...)},
		Dst: []kgo.Opt{kgo.SeedBrokers(f.dst.ListenAddrs()...)},
	}
}

func TestPlannedFailover(t *testing.T) {
	f := newFixture(t, []string{"t.a", "t.b"}, 2)
	f.topo.Routes[0].GroupInclude = []string{"^billing$"}
	f.gateway(t, "ge", 0)
	f.gateway(t, "gw", 0)
	f.produce(t, 3000, 0)

	// A group at the source, behind on one partition and caught up on another.
	ctx := context.Background()
	o := failoverOpts(t, f)
	scl, err := kgo.NewClient(o.Src...)
	if err != nil {
		t.Fatal(err)
	}
	defer scl.Close()
	sp := readPartitions(t, o.Src, "t.a")
	os := kadm.Offsets{}
	os.Add(kadm.Offset{Topic: "t.a", Partition: 0, At: sp[0][len(sp[0])/2].off, LeaderEpoch: -1})
	os.Add(kadm.Offset{Topic: "t.a", Partition: 1, At: sp[1][len(sp[1])-1].off + 1, LeaderEpoch: -1})
	if err := kadm.NewClient(scl).CommitAllOffsets(ctx, "billing", os); err != nil {
		t.Fatal(err)
	}

	dry, err := dr.Failover(ctx, dr.FailoverOptions{Leg: o.Leg, Src: o.Src, Dst: o.Dst, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if dry.Fenced {
		t.Fatal("a dry run fenced the leg")
	}

	start := time.Now()
	rep, err := dr.Failover(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("planned failover in %v: steps %q", time.Since(start).Round(time.Millisecond), rep.Steps)
	if !rep.SourceReachable || !rep.Drained || !rep.Fenced || rep.RPORecords != 0 || !rep.RPOExact {
		t.Fatalf("report %+v, want reachable, drained, fenced, RPO exactly 0", rep)
	}
	// Nothing skipped, nothing re-read: the mirror is complete and the
	// group's offsets at the new primary point at the same records.
	checkExact(t, f.waitMirrored(t, 3000, 5*time.Second), 3000)
	if len(rep.Groups) != 1 || !rep.Groups[0].Committed {
		t.Fatalf("groups %+v, want billing committed", rep.Groups)
	}
	dcl, err := kgo.NewClient(o.Dst...)
	if err != nil {
		t.Fatal(err)
	}
	defer dcl.Close()
	got, err := kadm.NewClient(dcl).FetchOffsets(ctx, "billing")
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range rep.Groups[0].Partitions {
		if o, ok := got.Lookup(tr.DestTopic, tr.Partition); !ok || o.At != tr.Dest {
			t.Errorf("billing %s/%d at the new primary = %v, want %d", tr.DestTopic, tr.Partition, o.At, tr.Dest)
		}
	}

	// The old direction is fenced: new source records do not land.
	f.produce(t, 500, 3000)
	time.Sleep(1500 * time.Millisecond)
	if rep := f.waitMirrored(t, 3000, time.Second); rep.Mirrored != 3000 {
		t.Errorf("after the failover the old primary still wrote: %v", rep)
	}
	if v := f.counter(t, "gw", "meridian_leg_fenced", map[string]string{"leg": o.Leg.ID}); v != 1 {
		t.Errorf("meridian_leg_fenced{leg=%q} = %v on the receiving gateway, want 1", o.Leg.ID, v)
	}
	if _, err := dr.Failover(ctx, o); !errors.Is(err, dr.ErrAlreadyFailedOver) {
		t.Errorf("second failover: err = %v, want ErrAlreadyFailedOver", err)
	}
}

func TestUnplannedFailoverReportsExactRPO(t *testing.T) {
	f := newFixture(t, []string{"t.a", "t.b"}, 2)
	f.gateway(t, "ge", 0)
	f.gateway(t, "gw", 0)
	f.produce(t, 1000, 0)
	checkExact(t, f.waitMirrored(t, 1000, 30*time.Second), 1000)

	// The primary is cut off from DR; records keep arriving there.
	f.net.SetDown(true)
	f.produce(t, 700, 1000)

	o := failoverOpts(t, f)
	o.Drain, o.Stall = 10*time.Second, time.Second
	rep, err := dr.Failover(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Drained || !rep.Fenced || !rep.RPOExact {
		t.Fatalf("report %+v, want not drained, fenced, exact RPO", rep)
	}
	back := f.waitMirrored(t, 1700, time.Second)
	if rep.RPORecords != back.Lost || back.Lost != 700 {
		t.Fatalf("RPO %d records, read-back finds %d missing (want both 700)", rep.RPORecords, back.Lost)
	}
	if rep.RPOSeconds < 0 {
		t.Errorf("RPO seconds %v", rep.RPOSeconds)
	}
	// The link returns: the fenced leg still writes nothing.
	f.net.SetDown(false)
	time.Sleep(1500 * time.Millisecond)
	if after := f.waitMirrored(t, 1700, time.Second); after.Mirrored != 1000 {
		t.Errorf("after the link returned the fenced leg wrote: %v", after)
	}
}

// TestPlannedFailoverAtScale is the target: a route with 50
// partitions and 20 consumer groups at lags from 0 to over 100,000 fails
// over in at most 30 s, and every group resumes at the new primary with
// nothing re-read and nothing skipped.
func TestPlannedFailoverAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("150k records")
	}
	topics := []string{"t.a", "t.b", "t.c", "t.d", "t.e"}
	f := newFixture(t, topics, 10) // 50 partitions
	f.topo.Routes[0].GroupInclude = []string{"^app-"}
	f.gateway(t, "ge", 0)
	f.gateway(t, "gw", 0)
	f.produce(t, 150_000, 0)
	checkExact(t, f.waitMirrored(t, 150_000, 2*time.Minute), 150_000)

	ctx := context.Background()
	o := failoverOpts(t, f)
	scl, err := kgo.NewClient(o.Src...)
	if err != nil {
		t.Fatal(err)
	}
	defer scl.Close()
	src := map[string]map[int32][]rec{}
	for _, tp := range topics {
		src[tp] = readPartitions(t, o.Src, tp)
	}
	// Group i has read fraction i/19 of every partition: group 0 is at the
	// start (lag 150,000), group 19 at the end (lag 0), the others between.
	groups := make([]string, 20)
	for i := range groups {
		groups[i] = fmt.Sprintf("app-%02d", i)
		os := kadm.Offsets{}
		lag := 0
		for tp, parts := range src {
			for p, recs := range parts {
				k := len(recs) * i / 19
				at := int64(0)
				if k < len(recs) {
					at = recs[k].off
				} else if len(recs) > 0 {
					at = recs[len(recs)-1].off + 1
				}
				lag += len(recs) - k
				os.Add(kadm.Offset{Topic: tp, Partition: p, At: at, LeaderEpoch: -1})
			}
		}
		if err := kadm.NewClient(scl).CommitAllOffsets(ctx, groups[i], os); err != nil {
			t.Fatal(err)
		}
		if i == 0 && lag < 100_000 {
			t.Fatalf("the most lagging group is only %d behind", lag)
		}
	}

	start := time.Now()
	rep, err := dr.Failover(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("planned failover of 50 partitions and %d groups in %v (drain %.2fs)", len(rep.Groups), took.Round(time.Millisecond), rep.DrainSeconds)
	if took > 30*time.Second {
		t.Errorf("failover took %v, want at most 30s", took)
	}
	if len(rep.Groups) != 20 || rep.RPORecords != 0 || !rep.Fenced {
		t.Fatalf("report: %d groups, RPO %d, fenced %v", len(rep.Groups), rep.RPORecords, rep.Fenced)
	}

	// For every group and partition: the destination record at the
	// translated offset is the source record the group reads next, and the
	// destination records before it are exactly those the group has read.
	dst := map[string]map[int32][]rec{}
	for _, tp := range topics {
		dst[tp] = readPartitions(t, o.Dst, tp)
	}
	dcl, err := kgo.NewClient(o.Dst...)
	if err != nil {
		t.Fatal(err)
	}
	defer dcl.Close()
	for _, g := range groups {
		srcOffs, err := kadm.NewClient(scl).FetchOffsets(ctx, g)
		if err != nil {
			t.Fatal(err)
		}
		dstOffs, err := kadm.NewClient(dcl).FetchOffsets(ctx, g)
		if err != nil {
			t.Fatal(err)
		}
		srcOffs.Each(func(so kadm.OffsetResponse) {
			do, ok := dstOffs.Lookup(so.Topic, so.Partition)
			if !ok {
				t.Fatalf("group %s: no offset for %s/%d at the new primary", g, so.Topic, so.Partition)
			}
			read, unread := 0, []uint64(nil)
			for _, r := range src[so.Topic][so.Partition] {
				if r.off < so.At {
					read++
				} else {
					unread = append(unread, r.fp)
				}
			}
			before, after := 0, []uint64(nil)
			for _, r := range dst[so.Topic][so.Partition] {
				if r.off < do.At {
					before++
				} else {
					after = append(after, r.fp)
				}
			}
			if before != read || !slices.Equal(after, unread) {
				t.Fatalf("group %s %s/%d: at the new primary %d records precede its offset (want %d read) and %d follow (want %d unread, same records)",
					g, so.Topic, so.Partition, before, read, len(after), len(unread))
			}
		})
	}
}
