package mirror_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/mirror"
	"github.com/meridian-gw/meridian/mirror/dr"
	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/transport"
)

// secondSender adds gateway ge2 to the fixture's source region: the leg
// then has two senders and is shared.
func secondSender(f *config.File) {
	r := &f.Regions[0]
	g := r.Gateways[0]
	g.Name, g.Listen = "ge2", "ge2:1"
	tls := *g.TLS
	tls.CertFile, tls.KeyFile = "ge2.crt", "ge2.key"
	g.TLS = &tls
	r.Gateways = append(r.Gateways, g)
}

// outShare is the outbound shared leg's status on gateway name.
func (f *fixture) outShare(name string) mirror.LegStatus {
	for _, l := range f.engine(name).Status().Legs {
		if l.Direction == "out" {
			return l
		}
	}
	return mirror.LegStatus{}
}

// inShares is the inbound leg's shares as the receiver holds them.
func (f *fixture) inShares() []mirror.ShareStatus {
	for _, l := range f.engine("gw").Status().Legs {
		if l.Direction == "in" {
			return l.Shares
		}
	}
	return nil
}

// waitShares waits until the receiver holds claims from want gateways
// that cover every one of parts partitions, each once, and returns them.
func (f *fixture) waitShares(t *testing.T, want []string, parts int, within time.Duration) []mirror.ShareStatus {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		shares := f.inShares()
		var gws, held []string
		for _, s := range shares {
			if len(s.Partitions) > 0 {
				gws = append(gws, s.Gateway)
			}
			held = append(held, s.Partitions...)
		}
		slices.Sort(held)
		if slices.Equal(gws, want) && len(held) == parts && len(slices.Compact(slices.Clone(held))) == parts {
			return shares
		}
		if time.Now().After(deadline) {
			t.Fatalf("receiver's shares after %v: %+v; want partitions split among %v covering %d partitions", within, shares, want, parts)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Two gateways of the source region share the leg: the consumer group
// splits its 8 partitions between them, both send, and the destination
// holds every record exactly once. When one stops (and leaves the group),
// the other takes all partitions from the committed positions: still
// exactly once, by read-back.
func TestSharedLegSplitsPartitions(t *testing.T) {
	f := newFixture(t, []string{"t.a", "t.b"}, 4, secondSender)
	f.tuning.ShareSession = 6 * time.Second // the broker's least
	table, err := routing.Compile(f.topo, "ge")
	if err != nil {
		t.Fatal(err)
	}
	if leg := table.Out[0].Legs[0]; !leg.Shared() || len(leg.Senders) != 2 {
		t.Fatalf("leg %s: shared %v, senders %d; want shared by ge and ge2", leg.ID, leg.Shared(), len(leg.Senders))
	}
	f.gateway(t, "gw", 1<<20)
	f.gateway(t, "ge", 0)
	stop2 := f.gateway(t, "ge2", 0)
	f.waitShares(t, []string{"ge", "ge2"}, 8, 30*time.Second)
	f.produce(t, 4000, 0)
	checkExact(t, f.waitMirrored(t, 4000, 60*time.Second), 4000)
	for _, gw := range []string{"ge", "ge2"} {
		st := f.outShare(gw)
		if st.Records == 0 || len(st.SharedPartitions) == 0 || st.ShareGroup == "" {
			t.Fatalf("%s sent %d records of partitions %v (group %q): want a share of the work", gw, st.Records, st.SharedPartitions, st.ShareGroup)
		}
	}
	// Records go on while ge2 leaves: ge takes its partitions.
	done := make(chan struct{})
	go func() { defer close(done); f.produce(t, 4000, 4000) }()
	stop2()
	<-done
	f.waitShares(t, []string{"ge"}, 8, 30*time.Second)
	f.produce(t, 2000, 8000)
	checkExact(t, f.waitMirrored(t, 10000, 60*time.Second), 10000)
	if st := f.outShare("ge"); len(st.SharedPartitions) != 8 {
		t.Fatalf("ge holds %v after ge2 left; want all 8 partitions", st.SharedPartitions)
	}
}

// dialSharer opens a session to the receiver as gateway gw sharing the
// fixture's leg, and returns it with the leg's ID.
func (f *fixture) dialSharer(ctx context.Context, t *testing.T, gw string) (transport.Conn, string) {
	t.Helper()
	table, err := routing.Compile(f.topo, gw)
	if err != nil {
		t.Fatal(err)
	}
	leg := table.Out[0].Legs[0].ID
	conn, err := f.net.Dialer().Dial(ctx, table.Out[0].Gateway.Advertise, &transport.Hello{
		VersionMin: transport.VersionMin, VersionMax: transport.VersionMax,
		Gateway: gw, Region: "east", Legs: []string{leg}, Shared: []string{leg},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(nil) })
	return conn, leg
}

// claimAndResume sends a Claim of partitions of topic t.a and returns the
// Resume that answers it (TopicReady frames on the way are skipped).
func claimAndResume(ctx context.Context, t *testing.T, conn transport.Conn, leg string, gen int32, parts ...int32) *transport.Resume {
	t.Helper()
	c := &transport.Claim{Leg: leg, Generation: gen, Member: "m"}
	if len(parts) > 0 {
		c.Topics = []transport.ClaimedTopic{{Topic: "t.a", Partitions: parts}}
	}
	if err := conn.Send(ctx, c); err != nil {
		t.Fatal(err)
	}
	for {
		fr, err := conn.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		switch fr := fr.(type) {
		case *transport.Resume:
			return fr
		case *transport.TopicReady, *transport.Credit:
		default:
			t.Fatalf("got %T while waiting for the Resume that answers a Claim", fr)
		}
	}
}

// sendRecords sends one batch of n records of t.a partition p from
// offset from, and waits for its ack (ok) or for the wait to pass (not
// acknowledged: dropped).
func sendRecords(ctx context.Context, t *testing.T, conn transport.Conn, leg string, gen, seq uint64, p int32, from, n int64, value string) (acked bool) {
	t.Helper()
	b := &transport.Batch{Leg: leg, Gen: gen, Seq: seq, Topic: "t.a", Partition: p, NextOffset: from + n, HighWatermark: from + n}
	for i := range n {
		b.Records = append(b.Records, transport.Record{Offset: from + i, Timestamp: 1_700_000_000_000, Value: []byte(value)})
	}
	if err := conn.Send(ctx, b); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	for {
		fr, err := conn.Recv(wctx)
		if err != nil {
			return false
		}
		if a, ok := fr.(*transport.Ack); ok && slices.Contains(a.Seqs, seq) {
			return true
		}
	}
}

// A gateway that claims partitions in an older consumer group generation
// than one the receiver has accepted for them is a zombie (paused past
// its group session, say): its claim is refused and its batches of those
// partitions are dropped unwritten, while the claimer's are written.
// The claimer taking a partition from another session moves it at the
// committed position.
func TestSharedLegRefusesZombieClaims(t *testing.T) {
	f := newFixture(t, []string{"t.a"}, 2, secondSender)
	f.gateway(t, "gw", 1<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	zombie, leg := f.dialSharer(ctx, t, "ge2")
	if err := zombie.Send(ctx, &transport.Topic{Leg: leg, Name: "t.a", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	rs := claimAndResume(ctx, t, zombie, leg, 4, 0, 1)
	if !sendRecords(ctx, t, zombie, leg, rs.Gen, 1, 0, 0, 10, "gen4") {
		t.Fatal("the claimer's first batch was not acknowledged")
	}

	// The group moves both partitions to ge in generation 5.
	live, _ := f.dialSharer(ctx, t, "ge")
	rs5 := claimAndResume(ctx, t, live, leg, 5, 0, 1)
	var pos int64 = -1
	for _, p := range rs5.Positions {
		if p.Topic == "t.a" && p.Partition == 0 {
			pos = p.NextOffset
		}
	}
	if pos != 10 {
		t.Fatalf("the new claimer resumes t.a/0 at %d (positions %v); want 10, after what the zombie committed", pos, rs5.Positions)
	}
	// The zombie wakes up: it still sends what it was sending, then
	// claims again in its old generation.
	if sendRecords(ctx, t, zombie, leg, rs.Gen, 2, 0, 10, 5, "zombie") {
		t.Fatal("a batch of a partition that moved to another session was acknowledged")
	}
	rsZ := claimAndResume(ctx, t, zombie, leg, 4, 0, 1)
	if sendRecords(ctx, t, zombie, leg, rsZ.Gen, 3, 0, 10, 5, "zombie") {
		t.Fatal("a zombie's batch (claim of generation 4 after 5) was acknowledged")
	}
	if !sendRecords(ctx, t, live, leg, rs5.Gen, 1, 0, 10, 5, "gen5") {
		t.Fatal("the claimer's batch was not acknowledged")
	}
	m, err := f.regs["gw"].Gather()
	if err != nil {
		t.Fatal(err)
	}
	refused := 0.0
	for _, mf := range m {
		if mf.GetName() == "meridian_share_claims_total" {
			for _, s := range mf.GetMetric() {
				for _, l := range s.GetLabel() {
					if l.GetName() == "result" && l.GetValue() == "refused" {
						refused += s.GetCounter().GetValue()
					}
				}
			}
		}
	}
	if refused != 2 {
		t.Fatalf("meridian_share_claims_total{result=refused} = %v; want 2 (both partitions of the zombie's claim)", refused)
	}
	// Read back: offsets 0-9 from generation 4, 10-14 from generation 5,
	// nothing of the zombie's.
	var got []string
	for _, r := range readKV(t, []kgo.Opt{kgo.SeedBrokers(f.dst.ListenAddrs()...)}, "t.a")[0] {
		got = append(got, string(r.Value))
	}
	want := slices.Concat(slices.Repeat([]string{"gen4"}, 10), slices.Repeat([]string{"gen5"}, 5))
	if !slices.Equal(got, want) {
		t.Fatalf("destination t.a/0 holds %v; want 10 × gen4 then 5 × gen5", got)
	}
}

// A fenced shared leg (failed over) tells every sharing session, not
// only an owner: each stops reading its source.
func TestSharedLegFencedTellsEverySharer(t *testing.T) {
	f := newFixture(t, []string{"t.a"}, 2, secondSender)
	f.tuning.FenceRecheck = 200 * time.Millisecond
	f.gateway(t, "gw", 1<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, leg := f.dialSharer(ctx, t, "ge")
	b, _ := f.dialSharer(ctx, t, "ge2")
	ra := claimAndResume(ctx, t, a, leg, 3, 0)
	claimAndResume(ctx, t, b, leg, 3, 1)
	if err := a.Send(ctx, &transport.Topic{Leg: leg, Name: "t.a", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := dr.FenceLeg(ctx, []kgo.Opt{kgo.SeedBrokers(f.dst.ListenAddrs()...)}, leg, 2, "failover to west"); err != nil {
		t.Fatal(err)
	}
	// A transaction fails on the fence, the leg reloads and finds it.
	if err := a.Send(ctx, &transport.Batch{Leg: leg, Gen: ra.Gen, Seq: 1, Topic: "t.a", Partition: 0, NextOffset: 1, HighWatermark: 1,
		Records: []transport.Record{{Offset: 0, Timestamp: 1_700_000_000_000, Value: []byte("x")}}}); err != nil {
		t.Fatal(err)
	}
	for name, conn := range map[string]transport.Conn{"ge": a, "ge2": b} {
		for {
			fr, err := conn.Recv(ctx)
			if err != nil {
				t.Fatalf("%s: no Fenced frame: %v", name, err)
			}
			if fd, ok := fr.(*transport.Fenced); ok {
				if fd.Leg != leg || fd.Reason != "failover to west" {
					t.Fatalf("%s: Fenced %+v", name, fd)
				}
				break
			}
		}
	}
}
