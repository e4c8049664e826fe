package mirror_test

import (
	"context"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/config"
)

// BenchmarkBacklogHeap: the source cluster is the buffer, not the gateway's
// heap. Two gateways mirror a backlog over a link capped at 4 Mbit/s; the
// peak heap in use while they run, above what the process held before they
// started (the in-process clusters with the backlog), is reported for a
// backlog of 32 MiB and of 128 MiB, and their ratio. A gateway that buffered
// its backlog would show a ratio near 4; a bounded one, near 1.
//
//	go test -run '^$' -bench BacklogHeap -benchtime 1x ./mirror/
func BenchmarkBacklogHeap(b *testing.B) {
	for b.Loop() {
		small := backlogHeap(b, 32<<20)
		large := backlogHeap(b, 128<<20)
		b.ReportMetric(small/(1<<20), "MiB-peak-32MiB-backlog")
		b.ReportMetric(large/(1<<20), "MiB-peak-128MiB-backlog")
		b.ReportMetric(large/small, "ratio")
	}
}

func backlogHeap(b *testing.B, backlog int) float64 {
	f := newFixture(b, []string{"t.a", "t.b"}, 4, func(c *config.File) { c.Links[0].RateLimit = 4_000_000 })
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.src.ListenAddrs()...), kgo.ProducerLinger(5*time.Millisecond),
		kgo.MaxBufferedRecords(20_000))
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, uint64(backlog)))
	var wg sync.WaitGroup
	ctx := context.Background()
	const size = 1000
	for i := range backlog / size {
		v := make([]byte, size)
		for j := range v {
			v[j] = byte(rng.Uint32())
		}
		wg.Add(1)
		cl.Produce(ctx, &kgo.Record{Topic: f.topics[i%len(f.topics)], Value: v}, func(_ *kgo.Record, err error) {
			if err != nil {
				b.Error(err)
			}
			wg.Done()
		})
	}
	wg.Wait()
	cl.Close()
	time.Sleep(time.Second) // the producer's buffers go
	heapInUse()
	base := heapInUse()
	stopW := f.gateway(b, "gw", 0)
	stopE := f.gateway(b, "ge", 0)
	peak := uint64(0)
	for end := time.Now().Add(8 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		peak = max(peak, heapInUse())
	}
	stopE()
	stopW()
	return float64(peak) - float64(base)
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
