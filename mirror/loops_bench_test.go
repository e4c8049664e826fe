package mirror

import (
	"context"
	"strconv"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/routing/origin"
	"github.com/meridian-gw/meridian/transport"
)

// BenchmarkProvenance is a sender's per-record provenance work on a record
// with three headers: finding meridian.origin, the rule (origin.Next), and
// the headers copied for the link with the new value, as sendRecords does
// for every record (with no loop writers to ask about).
func BenchmarkProvenance(b *testing.B) {
	for _, bc := range []struct {
		name string
		ov   []byte
	}{
		{"local", nil},
		{"extended", []byte("ship/kafka,hq/kafka")},
		{"loop", []byte("dr/kafka,hq/kafka")},
	} {
		b.Run("baseline-"+bc.name, func(b *testing.B) {
			// What sendRecords did before provenance: the headers copied.
			r := &kgo.Record{Headers: []kgo.RecordHeader{{Key: "trace-id", Value: []byte("0af7651916cd43dd8448eb211c80319c")}, {Key: "seq", Value: []byte(strconv.Itoa(42))}, {Key: "kind", Value: []byte("order")}}}
			if bc.ov != nil {
				r.Headers = append(r.Headers, kgo.RecordHeader{Key: origin.Header, Value: bc.ov})
			}
			var hdrs []transport.Header
			b.ReportAllocs()
			for b.Loop() {
				if len(hdrs) > 4000 {
					hdrs = hdrs[:0]
				}
				if cap(hdrs)-len(hdrs) < len(r.Headers) {
					hdrs = make([]transport.Header, 0, 4096)
				}
				for _, h := range r.Headers {
					hdrs = append(hdrs, transport.Header{Key: h.Key, Value: h.Value})
				}
			}
		})
		b.Run(bc.name, func(b *testing.B) {
			r := &kgo.Record{Headers: []kgo.RecordHeader{{Key: "trace-id", Value: []byte("0af7651916cd43dd8448eb211c80319c")}, {Key: "seq", Value: []byte(strconv.Itoa(42))}, {Key: "kind", Value: []byte("order")}}}
			if bc.ov != nil {
				r.Headers = append(r.Headers, kgo.RecordHeader{Key: origin.Header, Value: bc.ov})
			}
			var rb recordBatcher
			var c loopCount
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if len(rb.hdrs) > 4000 {
					rb.hdrs = rb.hdrs[:0] // as a new fetch does
				}
				if _, _, err := rb.headers(ctx, r, "hq/kafka", "dr/kafka", nil, &c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
