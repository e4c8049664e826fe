package quic

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/transporttest"
)

// BenchmarkQUICBatches sends 256 KiB batches of 1 KiB JSON records over a
// loopback session (4 lanes, 2 sending goroutines, one receiver) and reports
// MB/s of raw (uncompressed record block) bytes delivered to Recv, and the
// compression ratio on the wire.
//
//	go test -run '^$' -bench BenchmarkQUICBatches -benchtime 3s ./transport/quic/
func BenchmarkQUICBatches(b *testing.B) {
	for _, codec := range []transport.Codec{transport.CodecNone, transport.CodecZstd, transport.CodecS2} {
		b.Run("codec="+codec.String(), func(b *testing.B) {
			s := newSession(b, nil, func(o *DialerOptions) { o.Codec = codec })
			const senders = 2
			batches := make([][]*transport.Batch, senders)
			raw := 0
			for g := range senders {
				rng := transporttest.NewRand(uint64(g))
				for p := range 8 {
					bt := transporttest.JSONBatch(rng, "bench", "events", int32(g*8+p), 0, 0, 256<<10)
					batches[g] = append(batches[g], bt)
					raw = bt.RawSize()
				}
			}
			b.SetBytes(int64(raw))
			b.ResetTimer()

			var wg sync.WaitGroup
			errs := make(chan error, senders+1)
			n := b.N
			for g := range senders {
				wg.Go(func() {
					mine := batches[g]
					for i := g; i < n; i += senders {
						bt := mine[i%len(mine)]
						bt.Seq = uint64(i)
						if err := s.client.Send(context.Background(), bt); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			for range n {
				if _, err := s.server.Recv(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			wg.Wait()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			st := s.client.Stats()
			b.ReportMetric(float64(st.RawBytes)/float64(st.WireBytes), "ratio")
		})
	}
}

// BenchmarkQUICLanes compares lane counts for zstd batches.
//
//	go test -run '^$' -bench BenchmarkQUICLanes -benchtime 3s ./transport/quic/
func BenchmarkQUICLanes(b *testing.B) {
	for _, lanes := range []int{1, 2, 4, 8} {
		b.Run(fmt.Sprintf("lanes=%d", lanes), func(b *testing.B) {
			s := newSession(b, nil, func(o *DialerOptions) { o.Codec = transport.CodecZstd; o.Lanes = lanes })
			rng := transporttest.NewRand(1)
			var batches []*transport.Batch
			for p := range 16 {
				batches = append(batches, transporttest.JSONBatch(rng, "bench", "events", int32(p), 0, 0, 256<<10))
			}
			b.SetBytes(int64(batches[0].RawSize()))
			b.ResetTimer()
			var wg sync.WaitGroup
			n := b.N
			for g := range 2 {
				wg.Go(func() {
					for i := g; i < n; i += 2 {
						bt := batches[(i/2*2+g)%len(batches)]
						if err := s.client.Send(context.Background(), bt); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			for range n {
				if _, err := s.server.Recv(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			wg.Wait()
		})
	}
}
