package amqp_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/amqptest"
	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/amqp"
	"github.com/meridian-gw/meridian/transport/transporttest"
)

var fast = amqp.Timing{KeepAlive: 200 * time.Millisecond, IdleTimeout: 3 * time.Second, Handshake: 10 * time.Second, CloseTimeout: time.Second}

type pair struct {
	ln    *amqp.Listener
	d     *amqp.Dialer
	addrs amqp.Addresses
}

func newPair(t *testing.T, b *amqptest.Broker, link string) *pair {
	t.Helper()
	addrs := amqp.AddressesFor(amqp.DefaultAddressPrefix, link, "v7-a", "hq-a")
	ln, err := amqp.Listen(amqp.ListenerOptions{
		Broker: amqp.Broker{URL: b.URL()},
		Peers:  []amqp.Peer{{Gateway: "v7-a", Addresses: addrs}},
		Accept: func(h *transport.Hello) (*transport.Welcome, error) {
			if len(h.Legs) == 0 {
				return nil, &transport.Error{Code: transport.ErrCodeUnknownLeg, Message: "no legs"}
			}
			return &transport.Welcome{Gateway: "hq-a", Region: "hq", Window: 8 << 20, MaxBatchBytes: 1 << 20}, nil
		},
		Timing: fast,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	d, err := amqp.NewDialer(amqp.DialerOptions{Broker: amqp.Broker{URL: b.URL()}, Addresses: addrs, Codec: transport.CodecZstd, Timing: fast})
	if err != nil {
		t.Fatal(err)
	}
	return &pair{ln: ln, d: d, addrs: addrs}
}

func hello() *transport.Hello {
	return &transport.Hello{VersionMin: transport.VersionMin, VersionMax: transport.VersionMax, Gateway: "v7-a", Region: "v7",
		Legs: []string{"leg1"}, Codecs: []transport.Codec{transport.CodecZstd, transport.CodecS2, transport.CodecNone}}
}

func (p *pair) open(t *testing.T, ctx context.Context) (snd, rcv transport.Conn) {
	t.Helper()
	var err error
	// The listener may still be connecting to the broker: the Hello waits
	// in the queue meanwhile.
	snd, err = p.d.Dial(ctx, "", hello())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	rcv, err = p.ln.Accept(ctx)
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	return snd, rcv
}

// TestAMQPSession runs one session over RabbitMQ: handshake, Resume, a
// Topic, batches in order (compressed), Acks that settle the batch
// messages, Credit, Groups, Fenced, and a graceful close; then a refused
// Hello; then a receiving gateway that goes away and a broker restart.
func TestAMQPSession(t *testing.T) {
	b := amqptest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := newPair(t, b, "session")
	snd, rcv := p.open(t, ctx)
	if w := snd.Welcome(); w.Gateway != "hq-a" || w.Version != transport.VersionMax || w.Window != 8<<20 {
		t.Fatalf("welcome %+v", w)
	}
	if h := rcv.Hello(); h.Gateway != "v7-a" || !reflect.DeepEqual(h.Legs, []string{"leg1"}) {
		t.Fatalf("hello %+v", h)
	}

	must(t, rcv.Send(ctx, &transport.Resume{Leg: "leg1", Gen: 1, Positions: []transport.Position{{Topic: "t", Partition: 0, NextOffset: 0}}}))
	expect(t, ctx, snd, &transport.Resume{Leg: "leg1", Gen: 1, Positions: []transport.Position{{Topic: "t", Partition: 0, NextOffset: 0}}})
	must(t, snd.Send(ctx, &transport.Topic{Leg: "leg1", Name: "t", Partitions: 1}))
	expect(t, ctx, rcv, &transport.Topic{Leg: "leg1", Name: "t", Partitions: 1})

	rng := transporttest.NewRand(1)
	const n = 50
	var sent []*transport.Batch
	off := int64(0)
	for i := range n {
		bt := transporttest.JSONBatch(rng, "leg1", "t", 0, uint64(i+1), off, 8<<10)
		off = bt.NextOffset
		sent = append(sent, bt)
		must(t, snd.Send(ctx, bt))
	}
	for i := range n {
		f := recv(t, ctx, rcv)
		got, ok := f.(*transport.Batch)
		if !ok {
			t.Fatalf("frame %d: %T, want a batch", i, f)
		}
		got.WireSize, sent[i].WireSize = 0, 0
		if !reflect.DeepEqual(got, sent[i]) {
			t.Fatalf("batch %d differs (seq %d, want %d)", i, got.Seq, sent[i].Seq)
		}
	}
	ac := rcv.(*amqp.Conn)
	if h := ac.Held(); h != n {
		t.Fatalf("%d batch messages held unsettled before the ack, want %d", h, n)
	}
	seqs := make([]uint64, 0, n)
	for i := range n - 10 {
		seqs = append(seqs, uint64(i+1))
	}
	must(t, rcv.Send(ctx, &transport.Ack{Seqs: seqs}))
	expect(t, ctx, snd, &transport.Ack{Seqs: seqs})
	if h := ac.Held(); h != 10 {
		t.Fatalf("%d held after acking %d of %d, want 10", h, n-10, n)
	}
	// A new Resume supersedes the rest: the engine drops them, so the
	// transport settles them.
	must(t, rcv.Send(ctx, &transport.Resume{Leg: "leg1", Gen: 2}))
	expect(t, ctx, snd, &transport.Resume{Leg: "leg1", Gen: 2})
	if h := ac.Held(); h != 0 {
		t.Fatalf("%d held after a new resume, want 0", h)
	}
	must(t, rcv.Send(ctx, &transport.Credit{Window: 4 << 20}))
	expect(t, ctx, snd, &transport.Credit{Window: 4 << 20})
	g := &transport.Groups{Leg: "leg1", Offsets: []transport.GroupOffset{{Group: "g", Topic: "t", Partition: 0, Offset: 7}}}
	must(t, snd.Send(ctx, g))
	expect(t, ctx, rcv, g)
	must(t, rcv.Send(ctx, &transport.Fenced{Leg: "leg1", Epoch: 3, Reason: "failed over"}))
	expect(t, ctx, snd, &transport.Fenced{Leg: "leg1", Epoch: 3, Reason: "failed over"})

	// Keep-alives flow both ways while idle, and give an RTT.
	time.Sleep(time.Second)
	if snd.Stats().RTT <= 0 {
		t.Errorf("no RTT after a second of pings")
	}
	if snd.Err() != nil || rcv.Err() != nil {
		t.Fatalf("idle session ended: %v / %v", snd.Err(), rcv.Err())
	}

	// Graceful close: the peer sees Goaway and ends.
	snd.Close(nil)
	expectType[*transport.Goaway](t, ctx, rcv)
	waitDone(t, rcv)

	// A refused Hello.
	h := hello()
	h.Legs = nil
	if _, err := p.d.Dial(ctx, "", h); err == nil || !errorsAsCode(err, transport.ErrCodeUnknownLeg) {
		t.Fatalf("dial with no legs: %v, want refusal unknown-leg", err)
	}
	// An impostor on the address.
	h = hello()
	h.Gateway = "evil"
	if _, err := p.d.Dial(ctx, "", h); err == nil || !errorsAsCode(err, transport.ErrCodeIdentity) {
		t.Fatalf("dial as another gateway: %v, want refusal identity", err)
	}

	// The receiving gateway dies without a word, holding unsettled
	// batches; a new one that never heard of the session takes its place.
	// The broker redelivers the batches to it, and it answers "unknown
	// session": the sender's session ends long before its idle timeout.
	snd, rcv = p.open(t, ctx)
	for i := range 5 {
		must(t, snd.Send(ctx, transporttest.JSONBatch(rng, "leg1", "t", 0, uint64(i+1), int64(i), 1<<10)))
	}
	for range 5 {
		expectType[*transport.Batch](t, ctx, rcv)
	}
	p.ln.CrashForTest()
	waitDone(t, rcv)
	crashed := time.Now()
	p2 := newPair(t, b, "session")
	select {
	case <-snd.Done():
		t.Logf("sender session ended %s after the receiver died: %v", time.Since(crashed).Round(time.Millisecond), snd.Err())
		if !errorsAsCode(snd.Err(), transport.ErrCodeProtocol) {
			t.Errorf("sender session ended with %v, want the new receiver's unknown-session error", snd.Err())
		}
	case <-time.After(fast.IdleTimeout):
		t.Fatal("sender session still open an idle timeout after its receiver died")
	}
	snd, rcv = p2.open(t, ctx)

	// The broker restarts: both ends see it, the listener reconnects and
	// a new session opens.
	b.Stop()
	waitDone(t, snd)
	waitDone(t, rcv)
	t.Logf("after broker stop: sender %v; receiver %v", snd.Err(), rcv.Err())
	b.Start()
	snd, rcv = p2.open(t, ctx)
	must(t, rcv.Send(ctx, &transport.Resume{Leg: "leg1", Gen: 3}))
	expect(t, ctx, snd, &transport.Resume{Leg: "leg1", Gen: 3})
	snd.Close(nil)
	waitDone(t, rcv)
}

// TestAMQPSendFailsWhenBrokerStops: a stopped broker ends the session and
// Send fails, rather than buffering without end.
func TestAMQPSendFailsWhenBrokerStops(t *testing.T) {
	b := amqptest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := newPair(t, b, "wait")
	snd, _ := p.open(t, ctx)
	b.Stop()
	rng := transporttest.NewRand(2)
	var err error
	for i := range 1000 {
		bt := transporttest.JSONBatch(rng, "leg1", "t", 0, uint64(i+1), int64(i), 1<<10)
		sctx, c := context.WithTimeout(ctx, 5*time.Second)
		err = snd.Send(sctx, bt)
		c()
		if err != nil {
			break
		}
	}
	if err == nil {
		t.Fatal("1000 sends to a stopped broker all succeeded")
	}
	t.Logf("send to a stopped broker: %v", err)
	waitDone(t, snd)
	b.Start()
}

func errorsAsCode(err error, code uint16) bool {
	var e *transport.Error
	return errors.As(err, &e) && e.Code == code
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func recv(t *testing.T, ctx context.Context, c transport.Conn) transport.Frame {
	t.Helper()
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	f, err := c.Recv(rctx)
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	return f
}

func expect(t *testing.T, ctx context.Context, c transport.Conn, want transport.Frame) {
	t.Helper()
	got := recv(t, ctx, c)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("received %s, want %s", show(got), show(want))
	}
}

func expectType[T transport.Frame](t *testing.T, ctx context.Context, c transport.Conn) T {
	t.Helper()
	f := recv(t, ctx, c)
	v, ok := f.(T)
	if !ok {
		t.Fatalf("received %s, want %T", show(f), v)
	}
	return v
}

func waitDone(t *testing.T, c transport.Conn) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("session did not end within 15 s")
	}
}

func show(f transport.Frame) string { return fmt.Sprintf("%T%+v", f, f) }

// TestAMQPSenderWaitsForASlowBroker: a broker that stops answering (the
// dialer's connection runs through a proxy that stops forwarding) makes
// Send wait once MaxInFlight messages wait for their outcome: the gateway
// buffers no more. When the broker answers again everything arrives, in
// order, nothing lost or duplicated. (A memory alarm would be the natural
// way to slow RabbitMQ 3.10, but it does not block AMQP 1.0 publishers:
// see the package doc.)
func TestAMQPSenderWaitsForASlowBroker(t *testing.T) {
	b := amqptest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	px := newStallProxy(t, b.Addr())
	addrs := amqp.AddressesFor(amqp.DefaultAddressPrefix, "slow", "v7-a", "hq-a")
	timing := amqp.Timing{KeepAlive: 200 * time.Millisecond, IdleTimeout: 20 * time.Second, CloseTimeout: time.Second}
	ln, err := amqp.Listen(amqp.ListenerOptions{
		Broker: amqp.Broker{URL: b.URL()}, Peers: []amqp.Peer{{Gateway: "v7-a", Addresses: addrs}}, Timing: timing,
		Accept: func(h *transport.Hello) (*transport.Welcome, error) {
			return &transport.Welcome{Gateway: "hq-a", Window: 64 << 20, MaxBatchBytes: 1 << 20}, nil
		},
	})
	must(t, err)
	t.Cleanup(func() { ln.Close() })
	const inFlight = 16
	d, err := amqp.NewDialer(amqp.DialerOptions{Broker: amqp.Broker{URL: "amqp://guest:guest@" + px.addr()}, Addresses: addrs,
		Timing: timing, MaxInFlight: inFlight})
	must(t, err)
	p := &pair{ln: ln, d: d, addrs: addrs}
	snd, rcv := p.open(t, ctx)

	px.stall(true)
	rng := transporttest.NewRand(3)
	sent := 0
	for {
		bt := transporttest.JSONBatch(rng, "leg1", "t", 0, uint64(sent+1), int64(sent), 4<<10)
		sctx, c := context.WithTimeout(ctx, time.Second)
		err := snd.Send(sctx, bt)
		c()
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("send %d to a stalled broker: %v, want it to wait", sent+1, err)
			}
			break
		}
		sent++
		if sent > 10*inFlight {
			t.Fatalf("%d sends to a stalled broker returned; want Send to wait after %d", sent, inFlight)
		}
	}
	if sent != inFlight {
		t.Errorf("Send waited after %d batches, want after MaxInFlight (%d)", sent, inFlight)
	}
	if snd.Err() != nil {
		t.Fatalf("session ended while the broker stalled: %v", snd.Err())
	}
	px.stall(false)
	for i := range 20 {
		must(t, snd.Send(ctx, transporttest.JSONBatch(rng, "leg1", "t", 0, uint64(sent+1+i), 0, 1<<10)))
	}
	for want := uint64(1); want <= uint64(sent+20); want++ {
		f := recv(t, ctx, rcv)
		bt, ok := f.(*transport.Batch)
		if !ok || bt.Seq != want {
			t.Fatalf("received %s, want batch seq %d", show(f), want)
		}
	}
}

// stallProxy forwards TCP connections to a target on 127.0.0.1 and can
// stop forwarding (both ways) without closing anything.
type stallProxy struct {
	ln      net.Listener
	target  string
	mu      sync.Mutex
	cond    *sync.Cond
	stalled bool
	wg      sync.WaitGroup
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	p := &stallProxy{ln: ln, target: target}
	p.cond = sync.NewCond(&p.mu)
	var conns []net.Conn
	var cmu sync.Mutex
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			cmu.Lock()
			conns = append(conns, c, u)
			cmu.Unlock()
			p.wg.Go(func() { p.pipe(u, c) })
			p.wg.Go(func() { p.pipe(c, u) })
		}
	})
	t.Cleanup(func() {
		p.stall(false)
		ln.Close()
		cmu.Lock()
		for _, c := range conns {
			c.Close()
		}
		cmu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *stallProxy) addr() string { return p.ln.Addr().String() }

func (p *stallProxy) stall(on bool) {
	p.mu.Lock()
	p.stalled = on
	p.mu.Unlock()
	p.cond.Broadcast()
}

func (p *stallProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.stalled {
				p.cond.Wait()
			}
			p.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

// TestAMQPHeldBatchesKeepCreditFlowing: a receiver that holds batches
// until it acknowledges them in groups (as the engine does, per
// transaction) keeps getting link credit. With go-amqp's automatic credit
// this stalled after a few hundred 64 KiB batches: a few held, none
// settled, no credit left (see creditWindow).
func TestAMQPHeldBatchesKeepCreditFlowing(t *testing.T) {
	b := amqptest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := newPair(t, b, "held")
	d, err := amqp.NewDialer(amqp.DialerOptions{Broker: amqp.Broker{URL: b.URL()}, Addresses: p.addrs, Codec: transport.CodecNone, Timing: fast})
	must(t, err)
	p.d = d
	snd, rcv := p.open(t, ctx)
	rng := transporttest.NewRand(4)
	bt := transporttest.JSONBatch(rng, "leg1", "t", 0, 0, 0, 64<<10)
	const n, group = 1500, 16
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			c := *bt
			c.Seq = uint64(i + 1)
			if err := snd.Send(ctx, &c); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	var seqs []uint64
	for i := range n {
		rctx, c := context.WithTimeout(ctx, 10*time.Second)
		f, err := rcv.Recv(rctx)
		c()
		if err != nil {
			t.Fatalf("batch %d of %d: %v (holding %d)", i+1, n, err, rcv.(*amqp.Conn).Held())
		}
		seqs = append(seqs, f.(*transport.Batch).Seq)
		if len(seqs) == group {
			must(t, rcv.Send(ctx, &transport.Ack{Seqs: seqs}))
			seqs = nil
		}
	}
	must(t, <-errc)
}

// TestAMQPStaleHellosExpire: dials that gave up while no receiver ran
// leave Hellos that expire in the broker (TTL = the handshake timeout), so
// a receiver that starts later opens a session only for the dial that
// waits for it.
func TestAMQPStaleHellosExpire(t *testing.T) {
	b := amqptest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addrs := amqp.AddressesFor(amqp.DefaultAddressPrefix, "stale", "v7-a", "hq-a")
	short := fast
	short.Handshake = 500 * time.Millisecond
	d, err := amqp.NewDialer(amqp.DialerOptions{Broker: amqp.Broker{URL: b.URL()}, Addresses: addrs, Timing: short})
	must(t, err)
	for range 3 {
		if _, err := d.Dial(ctx, "", hello()); err == nil {
			t.Fatal("dial without a receiver succeeded")
		}
	}
	time.Sleep(short.Handshake)
	p := newPair(t, b, "stale")
	snd, rcv := p.open(t, ctx)
	if got, want := rcv.(*amqp.Conn).ID(), snd.(*amqp.Conn).ID(); got != want {
		t.Fatalf("first accepted session %s, want the live dial's %s (a stale Hello was answered)", got, want)
	}
	actx, c := context.WithTimeout(ctx, time.Second)
	defer c()
	if extra, err := p.ln.Accept(actx); err == nil {
		t.Fatalf("a second session %s was accepted", extra.(*amqp.Conn).ID())
	}
}
