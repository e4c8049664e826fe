package amqp_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/meridian-gw/meridian/internal/amqptest"
	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/amqp"
	"github.com/meridian-gw/meridian/transport/transporttest"
)

// BenchmarkAMQP compares, on one RabbitMQ and in one run, a link session
// carrying batches of 1 KiB JSON records (about 64 KiB raw, zstd) with a
// plain go-amqp loop sending messages of the same wire size (64 in flight,
// receiver credit 256, accept on receipt). b.N is batches (messages). The
// figure to compare is msg/s; raw MB/s is the link's goodput.
//
//	go test -run '^$' -bench BenchmarkAMQP -benchtime 3000x ./transport/amqp/
func BenchmarkAMQP(b *testing.B) {
	br := amqptest.Start(b)
	rng := transporttest.NewRand(9)
	batches := make([]*transport.Batch, 64)
	for i := range batches {
		batches[i] = transporttest.JSONBatch(rng, "leg1", "t", 0, 0, 0, 64<<10)
	}
	raw := batches[0].RawSize()
	for _, codec := range []transport.Codec{transport.CodecZstd, transport.CodecNone} {
		enc, err := transport.NewEncoder(codec)
		if err != nil {
			b.Fatal(err)
		}
		wire, err := enc.AppendFrame(nil, batches[0])
		if err != nil {
			b.Fatal(err)
		}
		b.Run("plain/"+codec.String(), func(b *testing.B) { benchPlain(b, br, wire, raw) })
		b.Run("link/"+codec.String(), func(b *testing.B) { benchLink(b, br, batches, codec) })
	}
}

func benchPlain(b *testing.B, br *amqptest.Broker, wire []byte, raw int) {
	{
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		c, err := goamqp.Dial(ctx, br.URL(), nil)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		ss, _ := c.NewSession(ctx, nil)
		snd, err := ss.NewSender(ctx, "/queue/bench-plain-"+strconv.Itoa(len(wire)), nil)
		if err != nil {
			b.Fatal(err)
		}
		rs, _ := c.NewSession(ctx, nil)
		rcv, err := rs.NewReceiver(ctx, "/queue/bench-plain-"+strconv.Itoa(len(wire)), &goamqp.ReceiverOptions{Credit: 256})
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(raw))
		b.ResetTimer()
		var wg sync.WaitGroup
		wg.Go(func() {
			for range b.N {
				m, err := rcv.Receive(ctx, nil)
				if err != nil {
					b.Error(err)
					return
				}
				rcv.AcceptMessage(ctx, m)
			}
		})
		receipts := make(chan goamqp.SendReceipt, 64)
		wg.Go(func() {
			for r := range receipts {
				if _, err := r.Wait(ctx); err != nil {
					b.Error(err)
				}
			}
		})
		for range b.N {
			r, err := snd.SendWithReceipt(ctx, &goamqp.Message{Data: [][]byte{wire}}, nil)
			if err != nil {
				b.Fatal(err)
			}
			receipts <- r
		}
		close(receipts)
		wg.Wait()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
		b.ReportMetric(float64(len(wire)), "wire-bytes/msg")
	}
}

func benchLink(b *testing.B, br *amqptest.Broker, batches []*transport.Batch, codec transport.Codec) {
	raw := batches[0].RawSize()
	{
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		addrs := amqp.AddressesFor(amqp.DefaultAddressPrefix, "bench", "v7-a", "hq-a")
		ln, err := amqp.Listen(amqp.ListenerOptions{
			Broker: amqp.Broker{URL: br.URL()}, Peers: []amqp.Peer{{Gateway: "v7-a", Addresses: addrs}}, Timing: benchTiming,
			Accept: func(h *transport.Hello) (*transport.Welcome, error) {
				return &transport.Welcome{Gateway: "hq-a", Window: 64 << 20, MaxBatchBytes: 1 << 20}, nil
			},
		})
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		d, err := amqp.NewDialer(amqp.DialerOptions{Broker: amqp.Broker{URL: br.URL()}, Addresses: addrs, Codec: codec, Timing: benchTiming})
		if err != nil {
			b.Fatal(err)
		}
		snd, err := d.Dial(ctx, "", hello())
		if err != nil {
			b.Fatal(err)
		}
		defer snd.Close(nil)
		rcv, err := ln.Accept(ctx)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(raw))
		b.ResetTimer()
		var wg sync.WaitGroup
		acked := make(chan struct{})
		wg.Go(func() {
			defer close(acked)
			var seqs []uint64
			for i := range b.N {
				f, err := rcv.Recv(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				seqs = append(seqs, f.(*transport.Batch).Seq)
				if len(seqs) == 16 || i == b.N-1 {
					if err := rcv.Send(ctx, &transport.Ack{Seqs: seqs}); err != nil {
						b.Error(err)
						return
					}
					seqs = nil
				}
			}
		})
		wg.Go(func() { // the sender's side of acks, as the engine reads them
			for {
				if _, err := snd.Recv(ctx); err != nil {
					return
				}
			}
		})
		for i := range b.N {
			bt := *batches[i%len(batches)]
			bt.Seq = uint64(i + 1)
			if err := snd.Send(ctx, &bt); err != nil {
				b.Fatal(err)
			}
		}
		<-acked
		b.StopTimer()
		if h := rcv.(*amqp.Conn).Held(); h > 0 {
			b.Errorf("%d batch messages still held after every ack", h)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
		snd.Close(nil)
		wg.Wait()
	}
}

var benchTiming = amqp.Timing{IdleTimeout: time.Minute}
