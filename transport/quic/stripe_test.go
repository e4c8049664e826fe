package quic

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/transporttest"
)

// sendOrdered sends total batches over parts partitions from senders
// goroutines (each owns the partitions p with p%senders == g) and checks at
// the receiver that every partition's batches arrive complete and in order.
func sendOrdered(t *testing.T, from, to *Conn, parts, senders, total int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for g := range senders {
		wg.Go(func() {
			rng := transporttest.NewRand(uint64(g))
			next := map[int]int64{}
			for i := g; i < total; i += senders {
				p := g + senders*rng.IntN(max(parts/senders, 1))
				n := 1 + rng.IntN(4)
				b := &transport.Batch{Leg: "leg", Gen: 1, Seq: uint64(i), Topic: "events", Partition: int32(p),
					Records: transporttest.JSONRecords(rng, n, 100+rng.IntN(2000), next[p])}
				next[p] += int64(n)
				b.NextOffset = next[p]
				if err := from.Send(context.Background(), b); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	next := map[string]int64{}
	for range total {
		b, ok := recv(t, to).(*transport.Batch)
		if !ok {
			t.Fatal("got a frame that is not a batch")
		}
		k := key(b)
		if b.Records[0].Offset != next[k] {
			t.Fatalf("%s: batch seq %d starts at offset %d, want %d (order lost)", k, b.Seq, b.Records[0].Offset, next[k])
		}
		next[k] = b.NextOffset
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func waitStripes(t *testing.T, s *session, n int) {
	t.Helper()
	waitFor(t, 10*time.Second, "stripes to join", func() bool { return s.client.Stripes() == n && s.server.Stripes() == n })
}

func TestStripesKeepPartitionOrder(t *testing.T) {
	for _, pl := range []Placement{PlaceAny, PlacePinned} {
		t.Run(pl.String(), func(t *testing.T) {
			checkGoroutines(t)
			s := newSession(t, nil, func(o *DialerOptions) {
				o.Codec = transport.CodecS2
				o.Stripes, o.Placement, o.Lanes = 4, pl, 2
			})
			if !s.client.Striped() || !s.server.Striped() {
				t.Fatalf("session not striped (ALPN %s / %s)", s.client.alpn(), s.server.alpn())
			}
			waitStripes(t, s, 4)
			sendOrdered(t, s.client, s.server, 8, 4, 3000)
			used := 0
			for _, st := range s.client.StripeStats() {
				if st.BatchBytes > 0 {
					used++
				}
			}
			if used < 2 {
				t.Errorf("batches used %d of 4 stripes: %+v", used, s.client.StripeStats())
			}
			// Control frames still flow both ways, and a listener's batches
			// (sequenced, on its first stripe) arrive in order too.
			send(t, s.server, &transport.Credit{Window: 1 << 20})
			if f := recv(t, s.client); f.(*transport.Credit).Window != 1<<20 {
				t.Fatalf("got %#v", f)
			}
			sendOrdered(t, s.server, s.client, 4, 2, 200)
			if held := s.server.reo.heldBytes(); held != 0 {
				t.Errorf("reorder buffer holds %d bytes after everything was received", held)
			}
		})
	}
}

func TestStripesGracefulClose(t *testing.T) {
	checkGoroutines(t)
	s := newSession(t, nil, func(o *DialerOptions) { o.Stripes = 3 })
	waitStripes(t, s, 3)
	rng := transporttest.NewRand(3)
	for i := range 30 {
		send(t, s.client, transporttest.JSONBatch(rng, "l", "t", int32(i%2), uint64(i), 0, 8<<10))
	}
	var got int
	var err error
	var reader sync.WaitGroup
	reader.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for {
			var f transport.Frame
			if f, err = s.server.Recv(ctx); err != nil {
				return
			}
			if _, ok := f.(*transport.Batch); ok {
				got++
			}
		}
	})
	start := time.Now()
	s.client.Close(nil)
	reader.Wait()
	if d := time.Since(start); d > closeGrace/2 {
		t.Errorf("graceful close took %s", d)
	}
	if got != 30 || !errors.Is(err, transport.ErrClosed) {
		t.Errorf("server got %d of 30 batches, then %v", got, err)
	}
	<-s.server.Done()
}

// TestStripeDeathEndsSession: a stripe that fails (not retired) ends the
// whole session on both sides, with an error naming it.
func TestStripeDeathEndsSession(t *testing.T) {
	checkGoroutines(t)
	s := newSession(t, nil, func(o *DialerOptions) { o.Stripes = 3 })
	waitStripes(t, s, 3)
	st := s.client.stripes[2]
	name := fmt.Sprintf("stripe %d", st.idx)
	st.qc.CloseWithError(quicgo.ApplicationErrorCode(transport.ErrCodeInternal), "stripe broke")
	for _, c := range []*Conn{s.client, s.server} {
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("session survived a dead stripe")
		}
	}
	mustContain(t, s.server.Err(), name, "stripe broke")
	if errors.Is(s.server.Err(), transport.ErrClosed) {
		t.Errorf("a dead stripe looks like a graceful close: %v", s.server.Err())
	}
}

// TestStripeRetiredKeepsSession: a stripe closed with the retire code goes
// away and the session carries on.
func TestStripeRetiredKeepsSession(t *testing.T) {
	checkGoroutines(t)
	s := newSession(t, nil, func(o *DialerOptions) { o.Stripes, o.Placement = 2, PlacePinned })
	waitStripes(t, s, 2)
	// A joined stripe the dialer never used (as after an abandoned join).
	s.client.lanesMu.Lock()
	st := s.client.stripes[1]
	s.client.stripes = s.client.stripes[:1]
	s.client.lanesMu.Unlock()
	for _, l := range st.lanes {
		l.stream.Close()
	}
	st.qc.CloseWithError(codeStripeRetired, "join abandoned")
	waitFor(t, 5*time.Second, "the listener to drop the stripe", func() bool { return s.server.Stripes() == 1 })
	sendOrdered(t, s.client, s.server, 4, 2, 100)
	if err := s.server.Err(); err != nil {
		t.Fatal(err)
	}
}

func TestStripeJoinRefusals(t *testing.T) {
	checkGoroutines(t)
	s := newSession(t, func(o *ListenerOptions) { o.MaxStripes = 2 }, func(o *DialerOptions) { o.Stripes = 3 })
	// The listener takes 2; the dialer learns the limit and stops there.
	waitStripes(t, s, 2)
	time.Sleep(100 * time.Millisecond)
	if n := s.client.Stripes(); n != 2 {
		t.Errorf("client has %d stripes, want 2", n)
	}
	// A join with a token of no session is refused.
	bad := s.client.token
	bad[0] ^= 0xff
	err := s.client.joinStripe(99, bad)
	mustContain(t, err, "stripe 99", "no such session")
}

func TestStripingNeedsBothSides(t *testing.T) {
	checkGoroutines(t)
	// A listener capped at one stripe does not offer the striped binding:
	// the session runs on one connection, as with an older peer.
	logs := &logBuffer{}
	s := newSession(t, func(o *ListenerOptions) { o.MaxStripes = 1 }, func(o *DialerOptions) {
		o.Stripes, o.MaxStripes = 2, 8
		o.Logger = logs.logger()
	})
	if s.client.Striped() || s.server.Striped() {
		t.Fatal("session striped although the listener does not stripe")
	}
	sendOrdered(t, s.client, s.server, 4, 2, 200)
	if n := s.client.Stripes(); n != 1 {
		t.Errorf("client has %d stripes", n)
	}
	if !strings.Contains(logs.String(), "peer does not speak the striped binding") {
		t.Errorf("no log about the fallback:\n%s", logs)
	}
}

func TestReorder(t *testing.T) {
	var r reorder
	r.init(1<<20, 10_000)
	var got []uint64
	deliver := func(b *transport.Batch) bool { got = append(got, b.Seq); return true }
	b := func(part int32, seq uint64) *transport.Batch {
		return &transport.Batch{Leg: "l", Topic: "t", Partition: part, Seq: seq}
	}
	for _, s := range []struct {
		part int32
		seq  uint64
	}{{0, 2}, {1, 0}, {0, 1}, {0, 0}, {1, 1}, {0, 3}} {
		if err := r.push(b(s.part, s.seq), s.seq, 100, deliver); err != nil {
			t.Fatal(err)
		}
	}
	if want := []uint64{0, 0, 1, 2, 1, 3}; !slices.Equal(got, want) {
		t.Errorf("delivered seqs %v, want %v", got, want)
	}
	if err := r.push(b(0, 1), 1, 100, deliver); err == nil || !strings.Contains(err.Error(), "received twice") {
		t.Errorf("duplicate: %v", err)
	}
	// Early batches count against the bound (window + 2 × max batch).
	r.init(1000, 1000)
	for i := range 29 {
		if err := r.push(b(5, uint64(i+1)), uint64(i+1), 100, deliver); err != nil {
			t.Fatalf("push %d: %v", i, err)
		}
	}
	err := r.push(b(5, 40), 40, 200, deliver)
	mustContain(t, err, "over its bound of 3000", "beyond its credit")
	r.credit(10_000)
	if err := r.push(b(5, 40), 40, 200, deliver); err != nil {
		t.Errorf("after a larger credit: %v", err)
	}
}

func TestJumpHashMovesFewPartitions(t *testing.T) {
	moved := 0
	for p := range 1000 {
		h := partHash(&transport.Batch{Leg: "l", Topic: "t", Partition: int32(p)})
		if jumpHash(h, 8) != jumpHash(h, 9) {
			moved++
		}
	}
	if moved < 60 || moved > 170 { // about 1000/9
		t.Errorf("%d of 1000 partitions moved going from 8 to 9 stripes", moved)
	}
}

func TestGrowth(t *testing.T) {
	ms := time.Millisecond
	ok := func(stripes int, rate float64) sample {
		return sample{stripes: stripes, rate: rate, demand: true, srtt: 610 * ms, minRTT: 600 * ms}
	}
	// The link has room: the rate follows the stripes.
	g := newGrowth(1, 64) // doubles below 16, then grows by a quarter
	var got []int
	for range 9 {
		g.update(ok(g.target, 100*float64(g.target)))
		got = append(got, g.target)
	}
	if want := []int{2, 4, 8, 16, 20, 25, 31, 38, 47}; !slices.Equal(got, want) {
		t.Errorf("targets %v, want %v", got, want)
	}
	g.update(ok(40, 4000))
	if g.target != 47 {
		t.Errorf("target %d while stripes were still joining", g.target)
	}
	// The rate stops following (something else holds the senders back):
	// growth stops within a doubling or so.
	g = newGrowth(1, 64)
	for range 40 {
		g.update(ok(g.target, 100*float64(min(g.target, 8))))
	}
	if !g.held || g.target > 40 {
		t.Errorf("growth did not stop: target %d", g.target)
	}
	// ... until the rate moves (the bottleneck changed).
	for range 3 {
		g.update(ok(g.target, 2000))
	}
	if g.held || g.target <= 40 {
		t.Errorf("growth did not resume: target %d", g.target)
	}
	// No growth while a queue builds, or without demand.
	g = newGrowth(4, 64)
	g.update(sample{stripes: 4, rate: 400, demand: true, srtt: 800 * ms, minRTT: 600 * ms})
	g.update(sample{stripes: 4, rate: 400, demand: false, srtt: 600 * ms, minRTT: 600 * ms})
	if g.target != 4 {
		t.Errorf("grew to %d with an inflated RTT or no demand", g.target)
	}
	g.update(ok(4, 400))
	if g.target != 8 {
		t.Errorf("target %d, want 8", g.target)
	}
	g.capAt(6)
	if g.target != 6 || g.max != 6 {
		t.Errorf("capAt: target %d max %d", g.target, g.max)
	}
}
