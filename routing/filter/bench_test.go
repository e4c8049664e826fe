package filter

import (
	"fmt"
	"testing"
	"time"
)

// benchRecords are n records of the langbench workload: all match the
// issue's filter, or none does (half miss on the header, half on rpm).
func benchRecords(n int, match bool) []Record {
	out := make([]Record, n)
	for i := range out {
		sev, rpm := "alarm", 3500+i%100
		if i%2 == 1 {
			sev = "critical"
		}
		if !match {
			if i%2 == 0 {
				sev = "info"
			} else {
				rpm = 1200
			}
		}
		out[i] = Record{
			Key:       fmt.Appendf(nil, "vessel-7/engine-%d", i%4),
			Headers:   []Header{{"severity", []byte(sev)}, {"source", []byte("plc-3")}, {"trace", []byte("00f067aa0ba902b7")}},
			Timestamp: time.UnixMilli(1_780_000_000_000 + int64(i)),
			Topic:     "telemetry.engine",
			Partition: int32(i % 12),
			Value: fmt.Appendf(nil, `{"vessel":"v7","engine":{"id":%d,"rpm":%d,"temp_c":81.5,"oil_bar":4.2},"ts":"2026-12-04T10:00:00Z","tags":["a","b"]}`,
				i%4, rpm),
		}
	}
	return out
}

// BenchmarkMatch measures Match, JSON decoding included, in records/s on
// one core (run with -cpu 1):
//
//	go test -run '^$' -bench Match -benchmem -cpu 1 ./routing/filter/
func BenchmarkMatch(b *testing.B) {
	for _, c := range []struct {
		name, src string
		match     bool
	}{
		{"full/match", issueFilter, true},
		{"full/nomatch", issueFilter, false},
		{"header/match", `headers["severity"] in ["alarm", "critical"]`, true},
		{"header/nomatch", `headers["severity"] in ["debug", "trace"]`, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			f, err := Compile(c.src)
			if err != nil {
				b.Fatal(err)
			}
			recs := benchRecords(1024, c.match)
			for i := range recs {
				if got, err := f.Match(&recs[i]); got != c.match || err != nil {
					b.Fatalf("record %d: %v, %v; want %v", i, got, err, c.match)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				f.Match(&recs[i%len(recs)])
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
