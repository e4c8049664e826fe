package quic

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/pki"
	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/transporttest"
)

func TestHandshake(t *testing.T) {
	checkGoroutines(t)
	s := newSession(t, func(o *ListenerOptions) {
		o.Accept = func(h *transport.Hello) (*transport.Welcome, error) {
			return &transport.Welcome{Region: "hq", Window: 1 << 20, MaxBatchBytes: 1 << 30}, nil
		}
	}, nil)

	h := s.server.Hello()
	if h.Gateway != "v7-a" || h.Region != "vessel-7" || h.VersionMin != transport.VersionMin || h.VersionMax != transport.VersionMax || len(h.Codecs) != 3 {
		t.Errorf("server saw hello %+v", h)
	}
	w := s.client.Welcome()
	want := &transport.Welcome{Version: transport.VersionMax, Gateway: "hq-a", Region: "hq", Window: 1 << 20, MaxBatchBytes: transport.DefaultMaxBatchBytes}
	if !reflect.DeepEqual(w, want) {
		t.Errorf("client got welcome %+v, want %+v (gateway from the certificate, MaxBatchBytes clamped to the limit)", w, want)
	}
	if s.client.PeerName() != "hq-a" || s.server.PeerName() != "v7-a" {
		t.Errorf("peer names: client sees %q, server sees %q", s.client.PeerName(), s.server.PeerName())
	}
	if s.client.RemoteAddr().String() != s.ln.Addr().String() {
		t.Errorf("client RemoteAddr = %v, want %v", s.client.RemoteAddr(), s.ln.Addr())
	}
	if st := s.client.Stats(); st.FramesSent != 1 || st.FramesRecvd != 1 || st.WireBytes == 0 {
		t.Errorf("client stats after handshake: %+v", st)
	}
	if s.client.Err() != nil {
		t.Errorf("Err() = %v on a live session", s.client.Err())
	}
}

func TestFramesBothWays(t *testing.T) {
	checkGoroutines(t)
	s := newSession(t, func(o *ListenerOptions) { o.Codec = transport.CodecS2 }, func(o *DialerOptions) { o.Codec = transport.CodecZstd })
	rng := transporttest.NewRand(11)
	types := []transport.FrameType{
		transport.FrameResume, transport.FrameBatch, transport.FrameAck, transport.FrameCredit,
		transport.FrameTopic, transport.FrameTopicReady, transport.FrameGoaway,
	}
	for _, dir := range []struct {
		name     string
		from, to *Conn
	}{{"client to server", s.client, s.server}, {"server to client", s.server, s.client}} {
		t.Run(dir.name, func(t *testing.T) {
			for i := range 5 {
				for _, ft := range types {
					f := transporttest.RandomFrame(rng, ft)
					if b, ok := f.(*transport.Batch); ok && i%2 == 0 {
						f = transporttest.JSONBatch(rng, b.Leg, b.Topic, b.Partition, b.Seq, 100, 32<<10)
					}
					// A user Ping is answered by the peer's transport; the
					// Pong is consumed here. Neither reaches Recv.
					send(t, dir.from, &transport.Ping{Nonce: 99, SentAt: time.Now().UnixNano()})
					send(t, dir.from, f)
					got := recv(t, dir.to)
					if b, ok := got.(*transport.Batch); ok {
						if b.WireSize == 0 || b.WireSize != f.(*transport.Batch).WireSize {
							t.Errorf("WireSize: received %d, sent %d", b.WireSize, f.(*transport.Batch).WireSize)
						}
						b.WireSize = f.(*transport.Batch).WireSize
					}
					if !reflect.DeepEqual(got, f) {
						t.Fatalf("%s: got %#v, want %#v", ft, got, f)
					}
				}
			}
		})
	}
	for _, c := range []*Conn{s.client, s.server} {
		st := c.Stats()
		if st.FramesSent < 70 || st.FramesRecvd < 70 || st.RawBytes == 0 || st.WireBytes == 0 {
			t.Errorf("stats: %+v", st)
		}
	}
	waitFor(t, 5*time.Second, "an RTT estimate", func() bool { return s.client.Stats().RTT > 0 })

	// The hello and welcome are the handshake's; Send refuses them.
	if err := s.client.Send(context.Background(), &transport.Hello{}); err == nil {
		t.Error("Send(Hello) succeeded")
	}
}

func TestPingsMeasureRTT(t *testing.T) {
	s := newSession(t, nil, func(o *DialerOptions) { o.PingPeriod = 20 * time.Millisecond })
	waitFor(t, 5*time.Second, "a pong", func() bool { return s.client.pingRTT.Load() > 0 })
	if st := s.server.Stats(); st.FramesRecvd < 2 {
		t.Errorf("server received %d frames, want pings", st.FramesRecvd)
	}
}

// TestManyBatchesKeepPartitionOrder sends 10,000 batches over 2 legs × 3
// topics × 20 partitions from 4 goroutines and checks that each partition's
// batches arrive complete and in order.
func TestManyBatchesKeepPartitionOrder(t *testing.T) {
	checkGoroutines(t)
	s := newSession(t, nil, func(o *DialerOptions) { o.Codec = transport.CodecZstd; o.Lanes = 6 })
	const total = 10_000
	type part struct {
		leg, topic string
		p          int32
	}
	var parts []part
	for _, leg := range []string{"leg-a", "leg-b"} {
		for _, topic := range []string{"orders", "clicks", "audit"} {
			for p := range int32(20) {
				parts = append(parts, part{leg, topic, p})
			}
		}
	}
	const senders = 4
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for g := range senders {
		wg.Go(func() {
			rng := transporttest.NewRand(uint64(g))
			next := map[int]int64{}
			for i := g; i < total; i += senders {
				// Goroutine g owns the partitions whose index is g mod senders.
				pi := g + senders*rng.IntN(len(parts)/senders)
				pt := parts[pi]
				n := 1 + rng.IntN(4)
				b := &transport.Batch{Leg: pt.leg, Gen: 1, Seq: uint64(i), Topic: pt.topic, Partition: pt.p,
					Records: transporttest.JSONRecords(rng, n, 100+rng.IntN(300), next[pi])}
				next[pi] += int64(n)
				b.NextOffset = next[pi]
				if err := s.client.Send(context.Background(), b); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	next := map[string]int64{}
	seen := 0
	for seen < total {
		f := recv(t, s.server)
		b, ok := f.(*transport.Batch)
		if !ok {
			t.Fatalf("got %T", f)
		}
		k := key(b)
		if b.Records[0].Offset != next[k] {
			t.Fatalf("%s: batch seq %d starts at offset %d, want %d (order lost)", k, b.Seq, b.Records[0].Offset, next[k])
		}
		next[k] = b.NextOffset
		seen++
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var lanes int
	for _, l := range s.client.lanes {
		if l != nil {
			lanes++
		}
	}
	if lanes != 6 {
		t.Errorf("client opened %d lanes, want 6", lanes)
	}
}

func TestVersionMismatch(t *testing.T) {
	checkGoroutines(t)
	p := getPKI(t)
	logs := &logBuffer{}
	lo := p.server("hq-a")
	lo.Logger = logs.logger()
	ln := listen(t, lo)
	_, err := dial(t, ln, p.client("v7-a", "hq-a"), &transport.Hello{VersionMin: transport.VersionMax + 1, VersionMax: transport.VersionMax + 2, Gateway: "v7-a"})
	mustContain(t, err, "dial "+ln.Addr().String(), "peer hq-a refused the session (version)",
		fmt.Sprintf("no common protocol version (receiver hq-a speaks 1-%d, sender v7-a speaks %d-%d)", transport.VersionMax, transport.VersionMax+1, transport.VersionMax+2))
	var te *transport.Error
	if !errors.As(err, &te) || te.Code != transport.ErrCodeVersion {
		t.Errorf("error %v does not wrap a version *transport.Error", err)
	}
	if !strings.Contains(logs.String(), "refused session") {
		t.Errorf("listener did not log the refusal:\n%s", logs)
	}
	// The listener carries on.
	if _, err := dial(t, ln, p.client("v7-a", "hq-a"), &transport.Hello{Gateway: "v7-a"}); err != nil {
		t.Fatal(err)
	}
	accept(t, ln)
}

func TestIdentityMismatch(t *testing.T) {
	p := getPKI(t)
	ln := listen(t, p.server("hq-a"))
	_, err := dial(t, ln, p.client("v7-a", "hq-a"), &transport.Hello{Gateway: "dr-a"})
	mustContain(t, err, "(identity)", `hello names gateway "dr-a" but its certificate is for "v7-a"`)
}

func TestAcceptRefusal(t *testing.T) {
	p := getPKI(t)
	lo := p.server("hq-a")
	lo.Accept = func(h *transport.Hello) (*transport.Welcome, error) {
		if h.Legs[0] == "boom" {
			return nil, errors.New("database on fire")
		}
		return nil, &transport.Error{Code: transport.ErrCodeUnknownLeg, Message: "leg " + h.Legs[0] + " is not routed to gateway hq-a"}
	}
	ln := listen(t, lo)
	_, err := dial(t, ln, p.client("v7-a", "hq-a"), &transport.Hello{Gateway: "v7-a", Legs: []string{"x"}})
	mustContain(t, err, "refused the session (unknown-leg): leg x is not routed to gateway hq-a")
	var re *RefusedError
	if !errors.As(err, &re) || re.Err.Code != transport.ErrCodeUnknownLeg || re.Peer != "hq-a" {
		t.Errorf("got %#v", err)
	}
	_, err = dial(t, ln, p.client("v7-a", "hq-a"), &transport.Hello{Gateway: "v7-a", Legs: []string{"boom"}})
	mustContain(t, err, "(internal): database on fire")
}

func TestTLSRejections(t *testing.T) {
	checkGoroutines(t)
	p := getPKI(t)
	logs := &logBuffer{}
	lo := p.server("hq-a")
	lo.Logger = logs.logger()
	ln := listen(t, lo)
	addr := ln.Addr().String()

	otherCA, _ := pki.NewCA("rogue CA", time.Hour)
	rogue, _ := otherCA.Issue("v7-a", []string{"localhost"})

	t.Run("client certificate from another CA", func(t *testing.T) {
		opts := DialerOptions{TLS: otherCA.ClientConfig(rogue, "hq-a")}
		opts.TLS.RootCAs = p.ca.Pool() // it trusts the server; the server must not trust it
		_, err := dial(t, ln, opts, &transport.Hello{Gateway: "v7-a"})
		mustContain(t, err, "dial "+addr, "the peer refused this gateway's certificate", "bad certificate")
		waitFor(t, 5*time.Second, "the listener's log", func() bool { return strings.Contains(logs.String(), `issued by \"rogue CA\"`) })
		mustContain(t, errors.New(logs.String()), "refused TLS client", "certificate signed by unknown authority", "remote=127.0.0.1:")
	})
	t.Run("no client certificate", func(t *testing.T) {
		opts := p.client("v7-a", "hq-a")
		opts.TLS.Certificates = nil
		opts.TLS.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tls.Certificate{}, nil }
		_, err := dial(t, ln, opts, &transport.Hello{Gateway: "v7-a"})
		mustContain(t, err, "dial "+addr, "the peer refused this gateway's certificate")
		waitFor(t, 5*time.Second, "the listener's log", func() bool { return strings.Contains(logs.String(), "client presented no certificate") })
	})
	t.Run("server certificate from another CA", func(t *testing.T) {
		opts := p.client("v7-a", "hq-a")
		opts.TLS.RootCAs = otherCA.Pool()
		_, err := dial(t, ln, opts, &transport.Hello{Gateway: "v7-a"})
		mustContain(t, err, "dial "+addr, "the peer's certificate was not accepted", "certificate signed by unknown authority")
	})
	t.Run("server name not in certificate", func(t *testing.T) {
		_, err := dial(t, ln, p.client("v7-a", "dr-a"), &transport.Hello{Gateway: "v7-a"})
		mustContain(t, err, "dial "+addr, "not dr-a")
	})
	t.Run("server name from the hook", func(t *testing.T) {
		opts := p.client("v7-a", "")
		opts.ServerName = func(a string) string {
			if a == addr {
				return "dr-a" // the topology expects dr-a there, but hq-a answers
			}
			return ""
		}
		_, err := dial(t, ln, opts, &transport.Hello{Gateway: "v7-a"})
		mustContain(t, err, "dial "+addr, "certificate is valid for hq-a, localhost, not dr-a")
	})
	t.Run("listener still serves good clients", func(t *testing.T) {
		c, err := dial(t, ln, p.client("v7-a", ""), &transport.Hello{Gateway: "v7-a"}) // ServerName from the address
		if err != nil {
			t.Fatal(err)
		}
		sc := accept(t, ln)
		send(t, c, &transport.Credit{Window: 5})
		if f := recv(t, sc); !reflect.DeepEqual(f, &transport.Credit{Window: 5}) {
			t.Fatalf("got %#v", f)
		}
	})
}

func TestNoListener(t *testing.T) {
	p := getPKI(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close() // nothing listens there now
	opts := p.client("v7-a", "hq-a")
	opts.HandshakeTimeout = 300 * time.Millisecond
	d, err := NewDialer(opts)
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.Dial(context.Background(), addr, &transport.Hello{Gateway: "v7-a"})
	mustContain(t, err, "dial "+addr, "no QUIC handshake within 300ms")
}

func TestCloseWithError(t *testing.T) {
	checkGoroutines(t)
	s := newSession(t, nil, nil)
	fenced := &transport.Error{Code: transport.ErrCodeFenced, Message: "route epoch 3 is stale (current 4)"}
	if err := s.server.Close(fenced); err != nil {
		t.Fatal(err)
	}
	// The client gets the Error frame (unless the close overtook it), then
	// the error itself.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	f, err := s.client.Recv(ctx)
	if err == nil {
		if !reflect.DeepEqual(f, fenced) {
			t.Fatalf("got frame %#v, want the error frame", f)
		}
		_, err = s.client.Recv(ctx)
	}
	var te *transport.Error
	if !errors.As(err, &te) || te.Code != transport.ErrCodeFenced || te.Message != fenced.Message {
		t.Fatalf("client Recv error %v, want the fenced error", err)
	}
	mustContain(t, err, "peer hq-a (127.0.0.1:")
	<-s.client.Done()
	if errors.Is(s.client.Err(), transport.ErrClosed) {
		t.Errorf("an error close looks graceful: %v", s.client.Err())
	}
	if err := s.client.Send(ctx, &transport.Ack{Seqs: []uint64{1}}); !errors.As(err, &te) {
		t.Errorf("Send after the session ended: %v", err)
	}
	// On the closing side, Err wraps both ErrClosed and the reason.
	if err := s.server.Err(); !errors.Is(err, transport.ErrClosed) || !errors.As(err, &te) {
		t.Errorf("server Err() = %v", err)
	}
}

func TestCloseGracefulIdempotentNoLeak(t *testing.T) {
	checkGoroutines(t)
	s := newSession(t, nil, nil)
	rng := transporttest.NewRand(3)
	for i := range 20 {
		send(t, s.client, transporttest.JSONBatch(rng, "l", "t", int32(i), uint64(i), 0, 8<<10))
	}
	// The server reads while the client closes: what was queued before
	// Close is flushed, then the Goaway, then ErrClosed naming the peer.
	var batches, goaways int
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
			switch f.(type) {
			case *transport.Batch:
				batches++
			case *transport.Goaway:
				goaways++
			}
		}
	})
	start := time.Now()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := s.client.Close(nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if d := time.Since(start); d > closeGrace/2 {
		t.Errorf("graceful Close took %s: the peer did not close promptly", d)
	}
	if err := s.client.Close(nil); err != nil {
		t.Fatal(err)
	}
	if err := s.client.Err(); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Err() = %v, want ErrClosed", err)
	}
	if err := s.client.Send(context.Background(), &transport.Ack{}); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Send after Close: %v", err)
	}
	reader.Wait()
	if !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("server Recv ended with %v, want ErrClosed", err)
	}
	mustContain(t, err, "v7-a")
	if batches != 20 || goaways != 1 {
		t.Errorf("server received %d of 20 batches queued before Close and %d goaways", batches, goaways)
	}
	t.Logf("server: %d batches, %d goaway, then %v", batches, goaways, err)
	s.server.Close(nil)
	s.ln.Close()
	s.ln.Close()
}

func TestListenerCloseKeepsSessions(t *testing.T) {
	checkGoroutines(t)
	s := newSession(t, nil, nil)
	s.ln.Close()
	send(t, s.client, &transport.Credit{Window: 1})
	recv(t, s.server)
	if _, err := s.ln.Accept(context.Background()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
	p := getPKI(t)
	_, err := dial(t, s.ln, func() DialerOptions {
		o := p.client("v7-a", "hq-a")
		o.HandshakeTimeout = 500 * time.Millisecond
		return o
	}(), &transport.Hello{Gateway: "v7-a"})
	if err == nil {
		t.Error("dial succeeded after the listener closed")
	}
	s.server.Close(nil)
	waitReleased(t, s.ln) // the last session is gone: the port is free again
}

// waitReleased waits until ln's UDP port can be bound again.
func waitReleased(t *testing.T, ln *Listener) {
	t.Helper()
	waitFor(t, 5*time.Second, "the socket to be released", func() bool {
		pc, err := net.ListenPacket("udp", ln.Addr().String())
		if err == nil {
			pc.Close()
		}
		return err == nil
	})
}

// TestListenerClosesGivenSocketAfterSessions: a socket handed over with
// ClosePacketConn outlives Close while a session drains over it, and is
// closed with the last session.
func TestListenerClosesGivenSocketAfterSessions(t *testing.T) {
	checkGoroutines(t)
	s := newSession(t, func(o *ListenerOptions) {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		o.PacketConn, o.ClosePacketConn = pc, true
	}, nil)
	s.ln.Close()
	send(t, s.client, &transport.Credit{Window: 1})
	recv(t, s.server)
	send(t, s.server, &transport.Credit{Window: 2}) // the goodbye path works
	recv(t, s.client)
	s.server.Close(nil)
	waitReleased(t, s.ln)
}

func TestPeerSilent(t *testing.T) {
	checkGoroutines(t)
	var bh *blackholeConn
	s := newSession(t, func(o *ListenerOptions) {
		o.MaxIdleTimeout = 800 * time.Millisecond
		o.KeepAlivePeriod = 100 * time.Millisecond
	}, func(o *DialerOptions) {
		o.MaxIdleTimeout = 800 * time.Millisecond
		o.KeepAlivePeriod = 100 * time.Millisecond
		o.ListenPacket = func() (net.PacketConn, error) {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			bh = &blackholeConn{PacketConn: pc}
			return bh, err
		}
	})
	time.Sleep(500 * time.Millisecond) // keep-alives hold the idle session open
	if err := s.client.Err(); err != nil {
		t.Fatalf("idle session ended: %v", err)
	}
	bh.drop.Store(true)
	for _, c := range []*Conn{s.client, s.server} {
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("silent peer not detected")
		}
	}
	mustContain(t, s.client.Err(), "peer hq-a (127.0.0.1:", "no packet for more than 800ms")
	mustContain(t, s.server.Err(), "peer v7-a (127.0.0.1:", "no packet for more than 800ms")
}

// TestBackpressure checks that a receiver that does not Recv stops the
// sender (bounded buffers), and that everything arrives once it reads.
func TestBackpressure(t *testing.T) {
	checkGoroutines(t)
	s := newSession(t, func(o *ListenerOptions) {
		o.InitialStreamReceiveWindow, o.MaxStreamReceiveWindow = 256<<10, 256<<10
		o.InitialConnectionReceiveWindow, o.MaxConnectionReceiveWindow = 512<<10, 512<<10
	}, func(o *DialerOptions) { o.Lanes = 1 })
	rng := transporttest.NewRand(5)
	sent := 0
	for {
		b := transporttest.JSONBatch(rng, "l", "t", 0, uint64(sent), int64(sent)*64, 64<<10)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err := s.client.Send(ctx, b)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		sent++
		if sent > 200 {
			t.Fatal("sender never blocked: something buffers without bound")
		}
	}
	t.Logf("sender blocked after %d batches of 64 KiB", sent)
	for i := range sent {
		b := recv(t, s.server).(*transport.Batch)
		if b.Seq != uint64(i) {
			t.Fatalf("got seq %d, want %d", b.Seq, i)
		}
	}
	if err := s.client.Err(); err != nil {
		t.Fatalf("session broke: %v", err)
	}
}

func TestMaxBatchBytes(t *testing.T) {
	s := newSession(t, func(o *ListenerOptions) {
		o.Accept = func(*transport.Hello) (*transport.Welcome, error) {
			return &transport.Welcome{MaxBatchBytes: 10_000}, nil
		}
	}, nil)
	big := transporttest.JSONBatch(transporttest.NewRand(1), "l", "t", 0, 1, 0, 20_000)
	err := s.client.Send(context.Background(), big)
	mustContain(t, err, "send batch t/0 seq 1", "exceed the peer's MaxBatchBytes of 10000")
	small := transporttest.JSONBatch(transporttest.NewRand(1), "l", "t", 0, 2, 0, 5_000)
	send(t, s.client, small)
	if b := recv(t, s.server).(*transport.Batch); b.Seq != 2 {
		t.Fatalf("got seq %d", b.Seq)
	}
}

func TestMalformedFrameEndsSession(t *testing.T) {
	s := newSession(t, nil, nil)
	// Bypass the encoder: write an unknown frame type on the control stream.
	if _, err := s.client.ctlStream.Write([]byte{0x7f, 0}); err != nil {
		t.Fatal(err)
	}
	<-s.server.Done()
	mustContain(t, s.server.Err(), "peer v7-a", "control stream", "unknown frame type frame(0x7f)")
	<-s.client.Done()
	var te *transport.Error
	if !errors.As(s.client.Err(), &te) || te.Code != transport.ErrCodeProtocol {
		t.Fatalf("client Err() = %v, want a protocol error from the peer", s.client.Err())
	}
}

func TestOptionsValidation(t *testing.T) {
	_, err := NewDialer(DialerOptions{Session: Session{Lanes: 100, Codec: 9, KeepAlivePeriod: time.Minute}})
	mustContain(t, err, "DialerOptions.TLS is nil", "Lanes (100) must be between 1 and 64", "unknown codec codec(9)", "KeepAlivePeriod (1m0s) must be shorter than MaxIdleTimeout (10s)")
	_, err = Listen("127.0.0.1:0", ListenerOptions{TLS: &tls.Config{}})
	mustContain(t, err, "ClientCAs is nil")
	p := getPKI(t)
	o := p.client("v7-a", "")
	o.TLS.Certificates = nil
	_, err = NewDialer(o)
	mustContain(t, err, "no client certificate")
}

func TestLaneOfSpreads(t *testing.T) {
	counts := make([]int, 4)
	for p := range int32(400) {
		counts[laneOf(&transport.Batch{Leg: "leg", Topic: "events", Partition: p}, 4)]++
	}
	for i, n := range counts {
		if n < 60 {
			t.Errorf("lane %d got %d of 400 partitions: %v", i, n, counts)
		}
	}
	b := &transport.Batch{Leg: "x", Topic: "y", Partition: 7}
	if laneOf(b, 4) != laneOf(b, 4) || laneOf(b, 1) != 0 {
		t.Error("laneOf is not deterministic")
	}
}

func TestSimultaneousCloseIsPrompt(t *testing.T) {
	checkGoroutines(t)
	s := newSession(t, nil, nil)
	start := time.Now()
	var wg sync.WaitGroup
	wg.Go(func() { s.client.Close(nil) })
	wg.Go(func() { s.server.Close(errors.New("shutting down")) })
	wg.Wait()
	if d := time.Since(start); d > closeGrace/2 {
		t.Errorf("simultaneous graceful close took %s", d)
	}
	for _, c := range []*Conn{s.client, s.server} {
		if !errors.Is(c.Err(), transport.ErrClosed) {
			t.Errorf("Err() = %v, want ErrClosed", c.Err())
		}
	}
}

func TestListenerCloseClosesPendingSessions(t *testing.T) {
	checkGoroutines(t)
	p := getPKI(t)
	ln := listen(t, p.server("hq-a"))
	c, err := dial(t, ln, p.client("v7-a", "hq-a"), &transport.Hello{Gateway: "v7-a"})
	if err != nil {
		t.Fatal(err)
	}
	// Nobody calls Accept: the session waits in the queue until Close.
	ln.Close()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("pending session not closed with the listener")
	}
	mustContain(t, c.Err(), "session closed by peer hq-a", "listener closed")
	if !errors.Is(c.Err(), transport.ErrClosed) {
		t.Errorf("Err() = %v, want ErrClosed", c.Err())
	}
}

func TestDialHonoursContext(t *testing.T) {
	checkGoroutines(t)
	p := getPKI(t)
	release := make(chan struct{})
	lo := p.server("hq-a")
	lo.Accept = func(*transport.Hello) (*transport.Welcome, error) {
		<-release // a routing decision that hangs
		return &transport.Welcome{}, nil
	}
	ln := listen(t, lo)
	t.Cleanup(func() { close(release) }) // runs before the listener's Close
	d, err := NewDialer(p.client("v7-a", "hq-a"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = d.Dial(ctx, ln.Addr().String(), &transport.Hello{Gateway: "v7-a"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want a deadline error", err)
	}
	mustContain(t, err, "dial peer hq-a at "+ln.Addr().String())
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Dial returned after %s", d)
	}
}

func TestPeerClosesControlStream(t *testing.T) {
	s := newSession(t, nil, nil)
	s.client.ctlStream.Close() // FIN without Goaway
	for _, l := range s.client.lanes {
		l.stream.Close()
	}
	<-s.server.Done()
	<-s.client.Done()
	t.Logf("client: %v", s.client.Err())
	if err := s.server.Err(); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("server Err() = %v", err)
	}
	mustContain(t, s.server.Err(), "closed its control stream")
}
