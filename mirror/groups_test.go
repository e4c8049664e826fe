package mirror_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/verify"
	"github.com/meridian-gw/meridian/mirror/progress"
)

func TestGroupOffsetSync(t *testing.T) {
	f := newFixture(t, []string{"t.a"}, 2)
	f.topo.Routes[0].GroupInclude = []string{"^billing$"}
	f.produce(t, 1000, 0)
	f.gateway(t, "gw", 0)
	f.gateway(t, "ge", 0)
	checkExact(t, f.waitMirrored(t, 1000, 30*time.Second), 1000)

	ctx := context.Background()
	src := []kgo.Opt{kgo.SeedBrokers(f.src.ListenAddrs()...)}
	dst := []kgo.Opt{kgo.SeedBrokers(f.dst.ListenAddrs()...)}
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
	sadm, dadm := kadm.NewClient(scl), kadm.NewClient(dcl)
	sp := readPartitions(t, src, "t.a")

	g := &groupEnds{t: t, ctx: ctx, dst: dst, sadm: sadm, dadm: dadm}
	commitAt, destOffsets, translate, waitDest := g.commitAt, g.destOffsets, g.translate, g.waitDest

	// 1. The source group's commits reach the destination, translated.
	first := map[int32]int64{0: sp[0][len(sp[0])/3].off, 1: sp[1][len(sp[1])/2].off}
	commitAt("billing", first)
	commitAt("other", map[int32]int64{0: 1}) // not named by the route
	waitDest("first sync", translate(first), 2*time.Second)
	if got := destOffsets("other"); len(got) != 0 {
		t.Errorf("group other was synced (%v); the route names only billing", got)
	}

	// 2. A consumer at the destination in that group reads exactly the
	// records the source group had not read: none again, none skipped.
	want := map[int32][]uint64{}
	total := 0
	for p, recs := range sp {
		for _, r := range recs {
			if r.off >= first[p] {
				want[p] = append(want[p], r.fp)
				total++
			}
		}
	}
	cons, err := kgo.NewClient(append(slices.Clone(dst), kgo.ConsumerGroup("billing"), kgo.ConsumeTopics("t.a"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.DisableAutoCommit())...)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int32][]uint64{}
	n := 0
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	for n < total && rctx.Err() == nil {
		cons.PollFetches(rctx).EachRecord(func(r *kgo.Record) {
			got[r.Partition] = append(got[r.Partition], verify.Fingerprint(r))
			n++
		})
	}
	cancel()
	for p := range want {
		if !slices.Equal(got[p], want[p]) {
			t.Errorf("partition %d: the destination consumer read %d records, want exactly the %d the source group had not read", p, len(got[p]), len(want[p]))
		}
	}

	// 3. While the group has members at the destination, it is left alone.
	second := map[int32]int64{0: sp[0][len(sp[0])-1].off, 1: sp[1][len(sp[1])-1].off}
	commitAt("billing", second)
	time.Sleep(1500 * time.Millisecond)
	if d := destOffsets("billing"); equalOffsets(d, translate(second)) {
		t.Errorf("offsets of billing were overwritten while it had members at the destination")
	}
	// 4. Once the destination consumers leave, the pending offsets land.
	cons.Close()
	waitDest("sync after the group went idle", translate(second), 5*time.Second)
}

// groupEnds commits a group's offsets at the source and reads them at the
// destination, for TestGroupOffsetSync.
type groupEnds struct {
	t          *testing.T
	ctx        context.Context
	dst        []kgo.Opt
	sadm, dadm *kadm.Client
}

func (g *groupEnds) commitAt(group string, at map[int32]int64) {
	g.t.Helper()
	os := kadm.Offsets{}
	for p, o := range at {
		os.Add(kadm.Offset{Topic: "t.a", Partition: p, At: o, LeaderEpoch: -1})
	}
	if err := g.sadm.CommitAllOffsets(g.ctx, group, os); err != nil {
		g.t.Fatal(err)
	}
}

func (g *groupEnds) destOffsets(group string) map[int32]int64 {
	out := map[int32]int64{}
	r, err := g.dadm.FetchOffsets(g.ctx, group)
	if err != nil {
		return out
	}
	r.Each(func(o kadm.OffsetResponse) {
		if o.Topic == "t.a" && o.Err == nil {
			out[o.Partition] = o.At
		}
	})
	return out
}

func (g *groupEnds) translate(at map[int32]int64) map[int32]int64 {
	g.t.Helper()
	m, err := progress.LoadOffsetMap(g.ctx, g.dst, "r:west/kafka")
	if err != nil {
		g.t.Fatal(err)
	}
	out := map[int32]int64{}
	for p, o := range at {
		out[p] = m.Translate("t.a", p, o).Dest
	}
	return out
}

func (g *groupEnds) waitDest(what string, want map[int32]int64, within time.Duration) {
	g.t.Helper()
	start := time.Now()
	for {
		got := g.destOffsets("billing")
		if len(got) == len(want) && equalOffsets(got, want) {
			g.t.Logf("%s after %v", what, time.Since(start).Round(10*time.Millisecond))
			return
		}
		if time.Since(start) > within {
			g.t.Fatalf("%s: destination offsets %v, want %v within %v", what, got, want, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func equalOffsets(a, b map[int32]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
