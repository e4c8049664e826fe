package quic

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/chaos"
	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/transporttest"
)

// firstBatch dials through addr, sends one batch as soon as Dial returns,
// and returns the accepted session and how long it took from the start of
// the dial until the listener received the batch.
func firstBatch(t *testing.T, d *Dialer, ln *Listener, addr string) (*Conn, *Conn, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	c, err := d.Dial(ctx, addr, &transport.Hello{Gateway: "v7-a", Legs: []string{"v7-to-hq"}})
	if err != nil {
		t.Fatal(err)
	}
	cc := c.(*Conn)
	t.Cleanup(func() { cc.Close(nil) })
	b := transporttest.JSONBatch(transporttest.NewRand(1), "v7-to-hq", "t", 0, 1, 0, 4<<10)
	if err := cc.Send(ctx, b); err != nil {
		t.Fatal(err)
	}
	sc := accept(t, ln)
	if _, ok := recv(t, sc).(*transport.Batch); !ok {
		t.Fatal("first frame is not the batch")
	}
	return cc, sc, time.Since(start)
}

// lossless puts a UDP proxy with the named profile's delays, but no loss and
// no scheduled events, in front of ln.
func lossless(t *testing.T, ln *Listener, profile string) *chaos.UDPProxy {
	t.Helper()
	prof, err := chaos.LoadProfile(profile)
	if err != nil {
		t.Fatal(err)
	}
	px, err := chaos.NewUDPProxy(chaos.UDPProxyOptions{Target: ln.Addr().String(), Profile: prof.WithoutEvents().WithLoss(0), Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	return px
}

// TestZeroRTTRedial dials over a 600 ms link twice with one Dialer. The
// redial resumes the TLS session and sends its Hello as 0-RTT data; the
// listener answers it in its first flight, so the first batch arrives about
// one RTT sooner: 1.5 RTT after the dial started instead of 2.5.
func TestZeroRTTRedial(t *testing.T) {
	checkGoroutines(t)
	p := getPKI(t)
	ln := listen(t, p.server("hq-a"))
	px := lossless(t, ln, "geo-satellite")
	geo := px.Profile()
	d, err := NewDialer(p.client("v7-a", "hq-a"))
	if err != nil {
		t.Fatal(err)
	}
	rtt := geo.RTT()

	c1, s1, first := firstBatch(t, d, ln, px.Addr().String())
	if c1.qc.ConnectionState().Used0RTT || s1.qc.ConnectionState().Used0RTT {
		t.Fatal("first dial used 0-RTT: there was no ticket to resume")
	}
	c1.Close(nil)
	<-s1.Done()

	c2, s2, redial := firstBatch(t, d, ln, px.Addr().String())
	t.Logf("first batch at the listener: first dial %.2f RTT (%v), redial %.2f RTT (%v); seed %d",
		float64(first)/float64(rtt), first.Round(time.Millisecond), float64(redial)/float64(rtt), redial.Round(time.Millisecond), px.Seed())
	if !c2.qc.ConnectionState().Used0RTT {
		t.Error("the redial did not send its Hello as 0-RTT data")
	}
	if !s2.qc.ConnectionState().Used0RTT {
		t.Error("the listener did not take the Hello from 0-RTT data")
	}
	if s1.Tentative() || !s2.Tentative() {
		t.Errorf("Tentative: first session %v, 0-RTT session %v; want false, true", s1.Tentative(), s2.Tentative())
	}
	select {
	case <-s2.Confirmed():
	case <-time.After(5 * time.Second):
		t.Error("the 0-RTT session was not confirmed once its handshake completed")
	}
	// One round trip saved: the count, not the wall time, is what this
	// checks (half an RTT of slack either way).
	if saved := float64(first-redial) / float64(rtt); saved < 0.5 {
		t.Errorf("the redial saved %.2f RTT, want about 1", saved)
	}
}

// TestZeroRTTAfterAbandonedDials: redials abandoned during a blackout
// (crypto/tls drops the ticket of every resumption that fails) do not cost
// the redial that gets through its 0-RTT.
func TestZeroRTTAfterAbandonedDials(t *testing.T) {
	checkGoroutines(t)
	p := getPKI(t)
	ln := listen(t, p.server("hq-a"))
	px := lossless(t, ln, "lan")
	d, err := NewDialer(p.client("v7-a", "hq-a"))
	if err != nil {
		t.Fatal(err)
	}
	c1, s1, _ := firstBatch(t, d, ln, px.Addr().String())
	c1.Close(nil)
	<-s1.Done()

	px.SetBlackout(true)
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		c, err := d.Dial(ctx, px.Addr().String(), &transport.Hello{Gateway: "v7-a", Legs: []string{"v7-to-hq"}})
		cancel()
		if err == nil {
			c.Close(nil)
			t.Fatal("a dial through a blacked-out link succeeded")
		}
	}
	time.Sleep(200 * time.Millisecond) // crypto/tls gives up on the abandoned handshakes
	px.SetBlackout(false)

	c2, s2, _ := firstBatch(t, d, ln, px.Addr().String())
	if !c2.qc.ConnectionState().Used0RTT || !s2.qc.ConnectionState().Used0RTT {
		t.Errorf("after abandoned dials the redial did not use 0-RTT (dialer %v, listener %v)",
			c2.qc.ConnectionState().Used0RTT, s2.qc.ConnectionState().Used0RTT)
	}
}

// TestZeroRTTRejectedFallsBack: after the listener restarts (new ticket
// keys) the dialer's 0-RTT Hello is rejected and sent again after the
// handshake.
func TestZeroRTTRejectedFallsBack(t *testing.T) {
	checkGoroutines(t)
	p := getPKI(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	lo := p.server("hq-a")
	lo.PacketConn = pc
	ln1, err := Listen("", lo)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	do := p.client("v7-a", "hq-a")
	do.Logger = logs.logger()
	d, err := NewDialer(do)
	if err != nil {
		t.Fatal(err)
	}
	c1, s1, _ := firstBatch(t, d, ln1, pc.LocalAddr().String())
	c1.Close(nil)
	s1.Close(nil)
	ln1.Close()

	lo.TLS = p.ca.ServerConfig(p.certs["hq-a"]) // fresh ticket keys, as after a restart
	ln2, err := Listen("", lo)
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	c2, s2, _ := firstBatch(t, d, ln2, pc.LocalAddr().String())
	if s2.qc.ConnectionState().Used0RTT {
		t.Error("a restarted listener took 0-RTT data")
	}
	send(t, s2, &transport.Credit{Window: 1})
	recv(t, c2)
	if !strings.Contains(logs.String(), "0-RTT rejected") {
		t.Errorf("the dialer did not try 0-RTT (or did not notice the rejection):\n%s", logs)
	}
}

// TestMigrate moves a striped session to a new socket while batches flow,
// then blackholes the old socket: nothing is lost or reordered.
func TestMigrate(t *testing.T) {
	checkGoroutines(t)
	var old *blackholeConn
	s := newSession(t, nil, func(o *DialerOptions) {
		o.Stripes, o.Lanes = 2, 2
		o.ListenPacket = func() (net.PacketConn, error) {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			old = &blackholeConn{PacketConn: pc}
			return old, err
		}
	})
	waitStripes(t, s, 2)
	streamDuring(t, s, 400, 100, func() {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = s.client.Migrate(ctx, pc)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		old.drop.Store(true) // the old address is gone
		for _, st := range s.client.StripeStats() {
			if st.LocalAddr.String() != pc.LocalAddr().String() {
				t.Errorf("stripe %d still on %v after migrating to %v", st.Index, st.LocalAddr, pc.LocalAddr())
			}
		}
	})
	if err := s.client.Migrate(context.Background(), nil); err == nil {
		t.Error("Migrate(nil) succeeded")
	}
	if err := s.server.Migrate(context.Background(), old); err == nil || !errors.Is(err, err) {
		t.Error("a listener's session migrated")
	}
}

// TestMigrateWhenLocalAddressChanges: when the route to the peer starts
// using another local address, the session moves to a socket on it by
// itself (the old address then goes dead) and batches flow on, none lost
// or reordered.
func TestMigrateWhenLocalAddressChanges(t *testing.T) {
	checkGoroutines(t)
	var (
		old   *blackholeConn
		local atomic.Value
	)
	local.Store(netip.MustParseAddr("127.0.0.1"))
	logs := &logBuffer{}
	s := newSession(t, nil, func(o *DialerOptions) {
		o.Stripes, o.Lanes = 2, 2
		o.Logger = logs.logger()
		o.ListenPacket = func() (net.PacketConn, error) {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			old = &blackholeConn{PacketConn: pc}
			return old, err
		}
		o.LocalAddrFor = func(*net.UDPAddr) (netip.Addr, error) { return local.Load().(netip.Addr), nil }
		o.ListenPacketAt = func(ip netip.Addr) (net.PacketConn, error) {
			return net.ListenPacket("udp", netip.AddrPortFrom(ip, 0).String())
		}
		o.PathCheck = 50 * time.Millisecond
	})
	waitStripes(t, s, 2)
	streamDuring(t, s, 300, 100, func() {
		local.Store(netip.MustParseAddr("127.0.0.2")) // the harbour network
		waitFor(t, 10*time.Second, "the session to move to 127.0.0.2", func() bool {
			for _, st := range s.client.StripeStats() {
				if !strings.HasPrefix(st.LocalAddr.String(), "127.0.0.2:") {
					return false
				}
			}
			return true
		})
		old.drop.Store(true) // the satellite modem is gone
	})
	if !strings.Contains(logs.String(), "session migrated") {
		t.Errorf("no migration logged:\n%s", logs)
	}
	for _, st := range s.server.StripeStats() {
		if !strings.HasPrefix(st.RemoteAddr.String(), "127.0.0.2:") {
			t.Errorf("the listener sees stripe %d at %v, want 127.0.0.2", st.Index, st.RemoteAddr)
		}
	}
}

// streamDuring sends total batches over three partitions from s.client and
// reads them at s.server, failing unless each partition's batches arrive in
// order; when the at-th batch is due it calls during, and the sender waits
// for it halfway.
func streamDuring(t *testing.T, s *session, total, at int, during func()) {
	t.Helper()
	done := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(done) }) }
	defer release() // also when during fails the test
	var wg sync.WaitGroup
	var sendErr error
	wg.Go(func() {
		rng := transporttest.NewRand(9)
		next := map[int32]int64{}
		for i := range total {
			if i == total/2 {
				<-done
			}
			p := int32(i % 3)
			b := &transport.Batch{Leg: "l", Topic: "t", Partition: p, Seq: uint64(i),
				Records: transporttest.JSONRecords(rng, 2, 1000, next[p])}
			next[p] += 2
			b.NextOffset = next[p]
			if sendErr = s.client.Send(context.Background(), b); sendErr != nil {
				return
			}
			time.Sleep(time.Millisecond)
		}
	})
	next := map[int32]int64{}
	for i := range total {
		if i == at {
			during()
			release()
		}
		b := recv(t, s.server).(*transport.Batch)
		if b.Records[0].Offset != next[b.Partition] {
			t.Fatalf("partition %d: batch starts at %d, want %d", b.Partition, b.Records[0].Offset, next[b.Partition])
		}
		next[b.Partition] = b.NextOffset
	}
	wg.Wait()
	if sendErr != nil {
		t.Fatal(sendErr)
	}
}
