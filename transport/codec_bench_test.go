package transport_test

import (
	"bufio"
	"bytes"
	"fmt"
	"testing"

	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/transporttest"
)

var benchSizes = []struct {
	name  string
	bytes int
}{{"64KiB", 64 << 10}, {"1MiB", 1 << 20}}

// BenchmarkCodec measures encoding and decoding a batch of 1 KiB JSON
// records, per codec and batch size. MB/s is of raw (uncompressed record
// block) bytes; ratio is raw bytes per wire byte.
//
//	go test -run '^$' -bench BenchmarkCodec -benchtime 2s ./transport/
func BenchmarkCodec(b *testing.B) {
	for _, c := range codecs {
		for _, sz := range benchSizes {
			batch := transporttest.JSONBatch(transporttest.NewRand(7), "leg", "events", 0, 1, 0, sz.bytes)
			raw := batch.RawSize()
			b.Run(fmt.Sprintf("codec=%s/size=%s/op=encode", c, sz.name), func(b *testing.B) {
				enc := newEncoder(b, c)
				buf, _ := enc.AppendFrame(nil, batch)
				b.SetBytes(int64(raw))
				b.ReportAllocs()
				for b.Loop() {
					buf, _ = enc.AppendFrame(buf[:0], batch)
				}
				b.ReportMetric(float64(raw)/float64(len(buf)), "ratio")
			})
			b.Run(fmt.Sprintf("codec=%s/size=%s/op=decode", c, sz.name), func(b *testing.B) {
				buf, err := newEncoder(b, c).AppendFrame(nil, batch)
				if err != nil {
					b.Fatal(err)
				}
				dec := transport.NewDecoder(transport.Limits{})
				defer dec.Close()
				rd := bytes.NewReader(buf)
				br := bufio.NewReaderSize(rd, 64<<10)
				b.SetBytes(int64(raw))
				b.ReportAllocs()
				for b.Loop() {
					rd.Reset(buf)
					br.Reset(rd)
					if _, err := dec.ReadFrame(br); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(raw)/float64(len(buf)), "ratio")
			})
		}
	}
}

// BenchmarkZstdLevel compares the zstd levels considered for batches: 64 KiB
// batches of 1 KiB JSON records, encode MB/s and ratio.
//
//	go test -run '^$' -bench BenchmarkZstdLevel -benchtime 2s ./transport/
func BenchmarkZstdLevel(b *testing.B) {
	batch := transporttest.JSONBatch(transporttest.NewRand(8), "leg", "events", 0, 1, 0, 64<<10)
	raw := batch.RawSize()
	for _, lv := range []transport.Level{transport.LevelFastest, transport.LevelDefault, transport.LevelBetter} {
		b.Run("level="+lv.String(), func(b *testing.B) {
			enc, err := transport.NewEncoderOptions(transport.CodecZstd, transport.EncoderOptions{Level: lv})
			if err != nil {
				b.Fatal(err)
			}
			buf, _ := enc.AppendFrame(nil, batch)
			b.SetBytes(int64(raw))
			for b.Loop() {
				buf, _ = enc.AppendFrame(buf[:0], batch)
			}
			b.ReportMetric(float64(raw)/float64(len(buf)), "ratio")
		})
	}
}
