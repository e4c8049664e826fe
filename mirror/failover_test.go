package mirror_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/mirror"
	"github.com/meridian-gw/meridian/routing"
)

func failoverOpts(t *testing.T, f *fixture) mirror.FailoverOptions {
	t.Helper()
	table, err := routing.Compile(f.topo, "gw")
	if err != nil {
		t.Fatal(err)
	}
	return mirror.FailoverOptions{
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

	dry, err := mirror.Failover(ctx, mirror.FailoverOptions{Leg: o.Leg, Src: o.Src, Dst: o.Dst, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if dry.Fenced {
		t.Fatal("a dry run fenced the leg")
	}

	start := time.Now()
	rep, err := mirror.Failover(ctx, o)
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
	if _, err := mirror.Failover(ctx, o); !errors.Is(err, mirror.ErrAlreadyFailedOver) {
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
	rep, err := mirror.Failover(context.Background(), o)
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
