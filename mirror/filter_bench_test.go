package mirror_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/config"
)

// BenchmarkFilteredLeg mirrors 150,000 records of about 300 bytes (90% of
// them pass the filters) through one leg, with no filter, a header filter
// and a header-and-JSON-field filter, and reports records/s from the
// gateways' start to the source's end committed at the destination (one
// iteration is one mirror):
//
//	go test -run '^$' -bench FilteredLeg -benchtime 1x -count 3 ./mirror/
func BenchmarkFilteredLeg(b *testing.B) {
	const n = 150_000
	for _, c := range []struct{ name, filter string }{
		{"none", ""},
		{"header", `headers["kind"] != "debug"`},
		{"header+json", `headers["kind"] != "debug" && value.rpm >= 0`},
	} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				f := newFixture(b, []string{"t.a"}, 4, func(cf *config.File) { cf.Routes[0].Filter = c.filter })
				produceBench(b, f, n)
				start := time.Now()
				f.gateway(b, "gw", 0)
				f.gateway(b, "ge", 0)
				src := []kgo.Opt{kgo.SeedBrokers(f.src.ListenAddrs()...)}
				dst := []kgo.Opt{kgo.SeedBrokers(f.dst.ListenAddrs()...)}
				waitProgress(b, f, src, dst, 120*time.Second)
				b.ReportMetric(n/time.Since(start).Seconds(), "records/s")
			}
		})
	}
}

func produceBench(b *testing.B, f *fixture, n int) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.src.ListenAddrs()...), kgo.ProducerBatchMaxBytes(48<<10))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	var wg sync.WaitGroup
	for i := range n {
		kind := "info"
		if i%10 == 0 {
			kind = "debug"
		}
		r := &kgo.Record{Topic: "t.a", Key: []byte("k" + strconv.Itoa(i%97)),
			Value:   fmt.Appendf(nil, `{"seq":%d,"rpm":%d,"pad":"%0220d"}`, i, i%5000, i),
			Headers: []kgo.RecordHeader{{Key: "kind", Value: []byte(kind)}}}
		wg.Add(1)
		cl.Produce(context.Background(), r, func(_ *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
}
