package kraw

import (
	"bytes"
	"errors"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/alloctest"
)

// testDecompressor decodes the batches of the other tests.
var testDecompressor = NewDecompressor(64 << 20)

// zstdStream compresses as Java's streaming zstd does: frames without a
// declared content size, so their size is known only by decoding.
type zstdStream struct{}

func (zstdStream) Compress(dst *bytes.Buffer, src []byte, _ ...kgo.CompressFlag) ([]byte, kgo.CompressionCodecType) {
	w, _ := zstd.NewWriter(dst, zstd.WithEncoderConcurrency(1))
	w.Write(src)
	w.Close()
	return dst.Bytes(), kgo.CodecZstd
}

func mustCompressor(t *testing.T, c kgo.CompressionCodec) kgo.Compressor {
	t.Helper()
	cmp, err := kgo.DefaultCompressor(c)
	if err != nil {
		t.Fatal(err)
	}
	return cmp
}

// TestDecompressorLimits builds, for each codec, a batch whose one record
// decompresses to 32 MiB (a bomb for a 256 KiB limit) and an ordinary one.
// Size and Decode refuse the bomb, allocating at most a small multiple of
// the limit, and measure and decode the ordinary one exactly.
func TestDecompressorLimits(t *testing.T) {
	const limit = 256 << 10
	d := NewDecompressor(limit)
	codecs := []struct {
		name string
		c    kgo.Compressor
	}{
		{"gzip", mustCompressor(t, kgo.GzipCompression())},
		{"snappy", mustCompressor(t, kgo.SnappyCompression())},
		{"lz4", mustCompressor(t, kgo.Lz4Compression())},
		{"zstd", mustCompressor(t, kgo.ZstdCompression())},
		{"zstd stream", zstdStream{}},
	}
	bomb := []kgo.Record{{Key: []byte("k"), Value: make([]byte, 32<<20)}}
	small := []kgo.Record{{Key: []byte("a"), Value: bytes.Repeat([]byte("small value "), 100)}, {Value: []byte("b")}}
	for _, c := range codecs {
		bb, err := BuildBatch(nil, bomb, c.c)
		if err != nil {
			t.Fatal(err)
		}
		h, _ := ParseHeader(bb)
		if h.Attributes&AttrCompressionMask == 0 {
			t.Fatalf("%s: the bomb was not compressed", c.name)
		}
		var n int
		got := alloctest.Bytes(func() { n, err = d.Size(bb) })
		if !errors.Is(err, ErrDecompressLimit) {
			t.Errorf("%s: Size of a %d-byte bomb = %d, %v; want ErrDecompressLimit", c.name, len(bb), n, err)
		}
		// Besides the limit, a stream decoder holds its history or
		// block buffers (two of up to 4 MiB for lz4, a window of up to
		// 8 MiB for zstd), allocated again when the pool dropped it (as
		// it does at random under the race detector).
		const ceiling = 4*limit + 12<<20
		if got > ceiling {
			t.Errorf("%s: Size of the bomb allocated %d bytes", c.name, got)
		}
		got = alloctest.Bytes(func() { _, err = d.Decode("t", 0, bb) })
		if !errors.Is(err, ErrDecompressLimit) && !errors.Is(err, kgo.ErrMaxDecompress) {
			t.Errorf("%s: Decode of the bomb: %v, want ErrDecompressLimit", c.name, err)
		}
		if got > ceiling {
			t.Errorf("%s: Decode of the bomb allocated %d bytes", c.name, got)
		}
		t.Logf("%s: a %d-byte batch declaring 32 MiB: Size and Decode refuse it (%v)", c.name, len(bb), err)

		sb, err := BuildBatch(nil, small, c.c)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := BuildBatch(nil, small, nil)
		if n, err := d.Size(sb); err != nil || n != len(raw)-HeaderSize {
			t.Errorf("%s: Size of an ordinary batch = %d, %v; want %d", c.name, n, err, len(raw)-HeaderSize)
		}
		recs, err := d.Decode("t", 0, sb)
		if err != nil || len(recs) != 2 || !bytes.Equal(recs[0].Value, small[0].Value) || string(recs[1].Value) != "b" {
			t.Errorf("%s: Decode of an ordinary batch: %d records, %v", c.name, len(recs), err)
		}
	}
}
