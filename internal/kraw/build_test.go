package kraw

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/alloctest"
)

// sameRecord describes how got differs from want in key, value, headers
// and timestamp (nil and empty told apart), or returns "".
func sameRecord(got, want *kgo.Record) string {
	sameBytes := func(a, b []byte) bool { return (a == nil) == (b == nil) && bytes.Equal(a, b) }
	switch {
	case !sameBytes(got.Key, want.Key):
		return fmt.Sprintf("key %q (nil %t), want %q (nil %t)", got.Key, got.Key == nil, want.Key, want.Key == nil)
	case !sameBytes(got.Value, want.Value):
		return fmt.Sprintf("value %q (nil %t), want %q (nil %t)", got.Value, got.Value == nil, want.Value, want.Value == nil)
	case got.Timestamp.UnixMilli() != want.Timestamp.UnixMilli():
		return fmt.Sprintf("timestamp %d, want %d", got.Timestamp.UnixMilli(), want.Timestamp.UnixMilli())
	case len(got.Headers) != len(want.Headers):
		return fmt.Sprintf("%d headers, want %d", len(got.Headers), len(want.Headers))
	}
	for i := range got.Headers {
		g, w := got.Headers[i], want.Headers[i]
		if g.Key != w.Key || !sameBytes(g.Value, w.Value) {
			return fmt.Sprintf("header %d: %q=%q (nil %t), want %q=%q (nil %t)", i, g.Key, g.Value, g.Value == nil, w.Key, w.Value, w.Value == nil)
		}
	}
	return ""
}

// oddRecords returns records with every combination the encoding must keep:
// nil and empty keys and values, headers with nil and empty values, equal,
// rising and falling timestamps, and values long enough to compress.
func oddRecords(seed string) []kgo.Record {
	t0 := time.UnixMilli(1_700_000_000_123)
	long := bytes.Repeat([]byte(seed+" compressible "), 40)
	return []kgo.Record{
		{Key: nil, Value: nil, Timestamp: t0},
		{Key: []byte{}, Value: []byte{}, Timestamp: t0},
		{Key: []byte("k-" + seed), Value: long, Timestamp: t0.Add(5 * time.Millisecond)},
		{Key: nil, Value: []byte("v"), Timestamp: t0.Add(-3 * time.Millisecond), Headers: []kgo.RecordHeader{
			{Key: "a", Value: []byte("1")},
			{Key: "nil", Value: nil},
			{Key: "empty", Value: []byte{}},
			{Key: "", Value: []byte("no key")},
		}},
		{Key: []byte("k2-" + seed), Value: long, Timestamp: t0.Add(time.Hour)},
	}
}

func snappyCompressor(t testing.TB) kgo.Compressor {
	t.Helper()
	c, err := kgo.DefaultCompressor(kgo.SnappyCompression())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestBuildDecodeRoundTrip(t *testing.T) {
	tests := []struct {
		name      string
		c         kgo.Compressor
		wantCodec kgo.CompressionCodecType
	}{
		{"uncompressed", nil, kgo.CodecNone},
		{"snappy", snappyCompressor(t), kgo.CodecSnappy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := oddRecords(tt.name)
			prefix := []byte("prefix")
			out, err := BuildBatch(prefix, want, tt.c)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out[:len(prefix)], prefix) {
				t.Fatalf("prefix overwritten: %q", out[:len(prefix)])
			}
			batch := out[len(prefix):]
			h, err := ParseHeader(batch)
			if err != nil {
				t.Fatal(err)
			}
			if err := CheckCRC(batch); err != nil {
				t.Fatal(err)
			}
			if got := kgo.CompressionCodecType(h.Attributes & AttrCompressionMask); got != tt.wantCodec {
				t.Errorf("codec %d, want %d", got, tt.wantCodec)
			}
			if h.Size() != len(batch) || !h.Raw() || h.BaseOffset != 0 || h.Records != int32(len(want)) ||
				h.ProducerID != -1 || h.ProducerEpoch != -1 || h.BaseSequence != -1 || h.Transactional() {
				t.Fatalf("header %+v for %d bytes", h, len(batch))
			}
			if wantMax := want[len(want)-1].Timestamp.UnixMilli(); h.BaseTimestamp != want[0].Timestamp.UnixMilli() || h.MaxTimestamp != wantMax {
				t.Errorf("timestamps base %d max %d, want %d %d", h.BaseTimestamp, h.MaxTimestamp, want[0].Timestamp.UnixMilli(), wantMax)
			}

			// Two batches, the second at offset 100 as a fetch would
			// hold it, decode to both sets with their offsets.
			second, err := BuildBatch(nil, want[:2], tt.c)
			if err != nil {
				t.Fatal(err)
			}
			binary.BigEndian.PutUint64(second, 100)
			got, err := testDecompressor.Decode("t", 7, append(bytes.Clone(batch), second...))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want)+2 {
				t.Fatalf("got %d records, want %d", len(got), len(want)+2)
			}
			for i, r := range got {
				j, wantOff := i, int64(i)
				if i >= len(want) {
					j, wantOff = i-len(want), int64(100+i-len(want))
				}
				w := &want[j]
				if d := sameRecord(r, w); d != "" {
					t.Errorf("record %d: %s", i, d)
				}
				if r.Offset != wantOff || r.Topic != "t" || r.Partition != 7 {
					t.Errorf("record %d: at %s[%d]@%d, want t[7]@%d", i, r.Topic, r.Partition, r.Offset, wantOff)
				}
			}
		})
	}
}

func TestBuildBatchIncompressible(t *testing.T) {
	// Random-looking bytes do not shrink under snappy: stored uncompressed.
	v := make([]byte, 256)
	for i := range v {
		v[i] = byte(i*151 + i*i*7)
	}
	b, err := BuildBatch(nil, []kgo.Record{{Value: v, Timestamp: time.UnixMilli(1)}}, snappyCompressor(t))
	if err != nil {
		t.Fatal(err)
	}
	h, err := ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	if c := h.Attributes & AttrCompressionMask; c != 0 {
		t.Errorf("codec %d, want uncompressed", c)
	}
	if _, err := BuildBatch(nil, nil, nil); err == nil {
		t.Error("BuildBatch of no records: no error")
	}
}

func TestBuildBatchZeroTimestamp(t *testing.T) {
	before := time.Now().UnixMilli()
	b, err := BuildBatch(nil, []kgo.Record{{Value: []byte("v")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := testDecompressor.Decode("t", 0, b)
	if err != nil {
		t.Fatal(err)
	}
	if ts := got[0].Timestamp.UnixMilli(); ts < before || ts > time.Now().UnixMilli() {
		t.Errorf("timestamp %d, want now (%d..)", ts, before)
	}
}

func TestDecodeErrors(t *testing.T) {
	good, err := BuildBatch(nil, oddRecords("e"), snappyCompressor(t))
	if err != nil {
		t.Fatal(err)
	}
	badCRC := bytes.Clone(good)
	badCRC[len(badCRC)-1] ^= 0xff
	badCount := bytes.Clone(good)
	binary.BigEndian.PutUint32(badCount[offRecordCount:], 7)             // holds 5
	if err := PatchForProduce(badCount, -1, -1, -1, false); err != nil { // fresh CRC
		t.Fatal(err)
	}
	badCodec := bytes.Clone(good)
	badCodec[offAttributes+1] |= 0x07
	if err := PatchForProduce(badCodec, -1, -1, -1, false); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		in   []byte
	}{
		{"truncated", good[:len(good)-1]},
		{"trailing bytes", append(bytes.Clone(good), 0, 0, 0)},
		{"bad crc", badCRC},
		{"record count", badCount},
		{"unknown codec", badCodec},
		{"magic 7", append(make([]byte, 16), 7, 0, 0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "magic 7" {
				binary.BigEndian.PutUint32(tt.in[8:], uint32(len(tt.in)-12))
			}
			recs, err := testDecompressor.Decode("t", 0, tt.in)
			if err == nil {
				t.Fatalf("no error, %d records", len(recs))
			}
			if recs != nil {
				t.Errorf("records with the error: %d", len(recs))
			}
		})
	}
	if recs, err := testDecompressor.Decode("t", 0, nil); err != nil || len(recs) != 0 {
		t.Errorf("Decode(nil) = %d records, %v", len(recs), err)
	}
	if _, err := testDecompressor.Decode("t", 0, good[:30]); !errors.Is(err, ErrTruncated) {
		t.Errorf("Decode of a partial header: %v, want ErrTruncated", err)
	}
}

var fuzzDecompressor = NewDecompressor(1 << 20)

func FuzzDecode(f *testing.F) {
	plain, err := BuildBatch(nil, oddRecords("f"), nil)
	if err != nil {
		f.Fatal(err)
	}
	compressed, err := BuildBatch(nil, oddRecords("f"), snappyCompressor(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(plain)
	f.Add(compressed)
	f.Add(append(bytes.Clone(plain), compressed...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		// As nats-server's parser fuzzers do, also try each half, as a
		// fetch may cut a batch anywhere; and a copy with valid CRCs,
		// so that mutations reach the records and the decompressor.
		// Decoding is bounded by the decompressor's limit (1 MiB here)
		// and the records the bytes hold.
		for _, b := range [][]byte{in, in[:len(in)/2], in[len(in)/2:], withCRCs(in)} {
			var recs []*kgo.Record
			var err error
			alloctest.Check(t, "Decode", uint64(8<<20+256*len(b)), func() { recs, err = fuzzDecompressor.Decode("t", 0, b) })
			if err != nil && recs != nil {
				t.Fatalf("records and error: %d, %v", len(recs), err)
			}
		}
	})
}

// withCRCs returns a copy of in with the CRC of each whole v2 batch set.
func withCRCs(in []byte) []byte {
	out := bytes.Clone(in)
	_, _ = Split(out, func(h Header, batch []byte) error {
		if h.Magic == 2 {
			binary.BigEndian.PutUint32(batch[offCRC:], crc32.Checksum(batch[offAttributes:], crc32c))
		}
		return nil
	})
	return out
}
