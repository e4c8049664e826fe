package mirror_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/meridian-gw/meridian/transport"
)

// A sender's Groups frame is taken only for the groups the route's groups
// filter names, and the pending set is bounded
// (Tuning.MaxPendingGroupOffsets): a group outside the filter is never
// committed at the destination, and offers beyond the bound are dropped.
func TestGroupOffsetsOnlyForTheRoutesGroupsAndBounded(t *testing.T) {
	f := newFixture(t, []string{"t.a"}, 2)
	f.topo.Routes[0].GroupInclude = []string{"^billing$"}
	f.tuning.MaxPendingGroupOffsets = 1
	f.gateway(t, "gw", 0)
	leg := "r:west/kafka"
	conn, err := dialAs(t, f, "ge", "east", leg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rs := firstResume(t, ctx, conn)
	if err := conn.Send(ctx, &transport.Topic{Leg: leg, Name: "t.a", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	// Ten records in each partition, committed before any offset is offered.
	const n = 10
	for p := range int32(2) {
		b := &transport.Batch{Leg: leg, Gen: rs.Gen, Seq: uint64(p + 1), Topic: "t.a", Partition: p, NextOffset: n, HighWatermark: n}
		for i := range n {
			b.Records = append(b.Records, transport.Record{Offset: int64(i), Timestamp: time.Now().UnixMilli(), Value: []byte(strconv.Itoa(i))})
		}
		if err := conn.Send(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	acked := 0
	for acked < 2 {
		fr, err := conn.Recv(ctx)
		if err != nil {
			t.Fatalf("waiting for acks: %v", err)
		}
		if a, ok := fr.(*transport.Ack); ok {
			acked += len(a.Seqs)
		}
	}
	// One frame: a group outside the filter, then billing on two
	// partitions, of which the bound (1) takes only the first.
	if err := conn.Send(ctx, &transport.Groups{Leg: leg, Offsets: []transport.GroupOffset{
		{Group: "audit", Topic: "t.a", Partition: 0, Offset: 5},
		{Group: "billing", Topic: "t.a", Partition: 0, Offset: 5},
		{Group: "billing", Topic: "t.a", Partition: 1, Offset: 5},
	}}); err != nil {
		t.Fatal(err)
	}
	dadm := destAdmin(t, f)
	offsets := func(group string) map[int32]int64 {
		out := map[int32]int64{}
		r, err := dadm.FetchOffsets(ctx, group)
		if err == nil {
			r.Each(func(o kadm.OffsetResponse) {
				if o.Err == nil {
					out[o.Partition] = o.At
				}
			})
		}
		return out
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(offsets("billing")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("billing's offsets were never committed at the destination")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second) // time for anything else to be committed, wrongly
	if got := offsets("billing"); len(got) != 1 || got[0] != 5 {
		t.Errorf("billing committed at the destination: %v, want only partition 0 at 5 (the pending set holds 1)", got)
	}
	for reason, want := range map[string]float64{"filter": 1, "full": 1} {
		if got := f.counter(t, "gw", "meridian_group_offsets_dropped_total", map[string]string{"leg": leg, "reason": reason}); got != want {
			t.Errorf("group offsets dropped {reason=%s} = %v, want %v", reason, got, want)
		}
	}
	if got := offsets("audit"); len(got) != 0 {
		t.Errorf("group audit committed at the destination: %v; the route names only billing", got)
	}
}
