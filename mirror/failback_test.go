package mirror_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/kread"
	"github.com/meridian-gw/meridian/mirror/dr"
)

func readKV(t *testing.T, opts []kgo.Opt, topic string) map[int32][]kgo.Record {
	t.Helper()
	out := map[int32][]kgo.Record{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kread.Each(ctx, opts, []string{topic}, func(r *kgo.Record) { out[r.Partition] = append(out[r.Partition], *r) }); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestFailbackAfterUnplannedFailover(t *testing.T) {
	f := newFixture(t, []string{"t.a"}, 2)
	f.tuning.FenceRecheck = 200 * time.Millisecond
	f.topo.Routes[0].GroupInclude = []string{"^app$"}
	f.gateway(t, "ge", 0)
	f.gateway(t, "gw", 0)
	f.produce(t, 1000, 0)
	checkExact(t, f.waitMirrored(t, 1000, 30*time.Second), 1000)
	o := failoverOpts(t, f)
	ctx := context.Background()

	// Cut off: 300 records at the old primary never reach DR.
	f.net.SetDown(true)
	f.produce(t, 300, 1000)
	o.Drain, o.Stall = 5*time.Second, time.Second
	if rep, err := dr.Failover(ctx, o); err != nil || rep.RPORecords != 300 {
		t.Fatalf("failover: %v, RPO %v", err, rep)
	}
	mirroredAtB := readKV(t, o.Dst, "t.a")

	// DR is the primary now: producers write there, and a group reads.
	bcl, err := kgo.NewClient(append(o.Dst, kgo.ProducerLinger(0))...)
	if err != nil {
		t.Fatal(err)
	}
	defer bcl.Close()
	for i := 0; i < 500; i++ {
		r := &kgo.Record{Topic: "t.a", Key: []byte(fmt.Sprint("dr-", i%11)), Value: []byte(fmt.Sprint("written at DR ", i))}
		if err := bcl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	atB := readKV(t, o.Dst, "t.a")
	native := map[int32][]kgo.Record{} // records produced at DR
	for p, recs := range atB {
		native[p] = recs[len(mirroredAtB[p]):]
	}
	if len(native[0]) == 0 || len(native[1]) < 3 {
		t.Fatalf("DR records per partition: %d and %d; want some in both", len(native[0]), len(native[1]))
	}
	// Group app at DR: on p0 it has read everything mirrored and nothing
	// of DR's own; on p1 it has read DR's first two records.
	os := kadm.Offsets{}
	lastMirrored0 := mirroredAtB[0][len(mirroredAtB[0])-1].Offset
	os.Add(kadm.Offset{Topic: "t.a", Partition: 0, At: lastMirrored0 + 1, LeaderEpoch: -1})
	os.Add(kadm.Offset{Topic: "t.a", Partition: 1, At: native[1][2].Offset, LeaderEpoch: -1})
	if err := kadm.NewClient(bcl).CommitAllOffsets(ctx, "app", os); err != nil {
		t.Fatal(err)
	}

	// The old primary is back.
	f.net.SetDown(false)
	fb := dr.FailbackOptions{Leg: o.Leg, Src: o.Src, Dst: o.Dst}
	dry, err := dr.Failback(ctx, dr.FailbackOptions{Leg: o.Leg, Src: o.Src, Dst: o.Dst, DryRun: true})
	if err != nil || len(dry.Stragglers) != 300 {
		t.Fatalf("dry run: %v, %d stragglers", err, len(dry.Stragglers))
	}
	rep, err := dr.Failback(ctx, fb)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("failback: %q", rep.Steps)
	if len(rep.Stragglers) != 300 {
		t.Errorf("failback lists %d stragglers, want the 300 that never reached DR", len(rep.Stragglers))
	}

	// The old primary now holds: what it had (stragglers kept), then DR's
	// records, in DR's order, per partition.
	atA := readKV(t, o.Src, "t.a")
	for p, recs := range native {
		got := atA[p][len(atA[p])-len(recs):]
		for i := range recs {
			if string(got[i].Key) != string(recs[i].Key) || string(got[i].Value) != string(recs[i].Value) {
				t.Fatalf("p%d: copy %d at the old primary is %q=%q, want %q=%q", p, i, got[i].Key, got[i].Value, recs[i].Key, recs[i].Value)
			}
		}
	}
	// Group app at the old primary: p0 resumes before the stragglers (it
	// never read them), p1 at the copy of DR's third record.
	acl, err := kgo.NewClient(o.Src...)
	if err != nil {
		t.Fatal(err)
	}
	defer acl.Close()
	aadm := kadm.NewClient(acl)
	offs, err := aadm.FetchOffsets(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	if x, _ := offs.Lookup("t.a", 0); x.At != atA[0][len(mirroredAtB[0])].Offset {
		t.Errorf("app p0 at the old primary = %d, want %d (the first record DR never had)", x.At, atA[0][len(mirroredAtB[0])].Offset)
	}
	copyOf2 := atA[1][len(atA[1])-len(native[1])+2]
	if x, _ := offs.Lookup("t.a", 1); x.At != copyOf2.Offset {
		t.Errorf("app p1 at the old primary = %d, want %d (the copy of DR's third record)", x.At, copyOf2.Offset)
	}

	// Mirroring resumes: new records at the old primary reach DR once;
	// DR's own records and the stragglers are not sent again.
	f.produce(t, 200, 5000)
	want := 0
	for _, recs := range atB {
		want += len(recs)
	}
	want += 200
	if n := waitRecords(t, o.Dst, "t.a", want, 30*time.Second); n != want {
		t.Fatalf("DR holds %d records, want %d (mirrored, its own 500, then the 200 new)", n, want)
	}
	if _, err := dr.Failback(ctx, fb); !errors.Is(err, dr.ErrNotFailedOver) {
		t.Errorf("second failback: %v, want ErrNotFailedOver", err)
	}
}

// waitRecords waits until topic holds want records at the cluster opts
// reach, or more, or within passes, and returns how many it holds.
func waitRecords(t *testing.T, opts []kgo.Opt, topic string, want int, within time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		n := 0
		for _, recs := range readKV(t, opts, topic) {
			n += len(recs)
		}
		if n >= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(200 * time.Millisecond)
	}
}
