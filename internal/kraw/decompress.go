package kraw

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ErrDecompressLimit is wrapped by the errors of a Decompressor for data
// that decompresses (or declares that it does) to more than its limit.
var ErrDecompressLimit = errors.New("kraw: batch decompresses beyond the limit")

// Decompressor decompresses the records of Kafka batches, refusing any
// that grows past Limit bytes, without allocating more than that: kgo's
// DefaultDecompressor allows 2 GiB, which a batch of a few KiB (a
// decompression bomb) can claim. It implements kgo.Decompressor and is
// safe for concurrent use; keep one per session or sink, since its zstd
// decoder is expensive to create.
type Decompressor struct {
	limit int
	once  sync.Once
	zdec  *zstd.Decoder
	zerr  error
	// zstreams pools zstd stream decoders for Size. A pooled decoder
	// with concurrency 1 starts no goroutines, so dropping one leaks
	// nothing.
	zstreams sync.Pool
	gzips    sync.Pool // *gzip.Reader
	lz4s     sync.Pool // *lz4.Reader
}

var _ kgo.Decompressor = (*Decompressor)(nil)

// NewDecompressor returns a Decompressor that refuses what decompresses to
// more than limit bytes (limit <= 0: 1 MiB).
func NewDecompressor(limit int) *Decompressor {
	if limit <= 0 {
		limit = 1 << 20
	}
	return &Decompressor{limit: limit}
}

// Limit is the most a batch's records may decompress to.
func (d *Decompressor) Limit() int { return d.limit }

func (d *Decompressor) zstd() (*zstd.Decoder, error) {
	d.once.Do(func() {
		d.zdec, d.zerr = zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxMemory(uint64(d.limit)),
			zstd.WithDecoderMaxWindow(d.window()))
	})
	return d.zdec, d.zerr
}

// maxZstdWindow is the largest zstd window accepted whatever the limit:
// the window of zstd's level 19 (and of Java's zstd-jni at high levels),
// so that producers' batches are never refused for their window alone.
const maxZstdWindow = 8 << 20

// window is the largest zstd window a decoder accepts: the memory a
// stream decoder may hold as history.
func (d *Decompressor) window() uint64 { return uint64(max(d.limit, maxZstdWindow)) }

func (d *Decompressor) tooLarge(c kgo.CompressionCodecType, n int) error {
	return fmt.Errorf("%w: %s data of %d bytes or more, limit %d", ErrDecompressLimit, codecName(c), n, d.limit)
}

func codecName(c kgo.CompressionCodecType) string {
	switch c {
	case kgo.CodecNone:
		return "uncompressed"
	case kgo.CodecGzip:
		return "gzip"
	case kgo.CodecSnappy:
		return "snappy"
	case kgo.CodecLz4:
		return "lz4"
	case kgo.CodecZstd:
		return "zstd"
	}
	return fmt.Sprintf("codec %d", c)
}

// xerialMagic starts Java's framed snappy (xerial), followed by two
// 4-byte version fields and chunks of a 4-byte length and a snappy block.
var xerialMagic = []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

const xerialHeader = 16

// xerialChunks calls f with each snappy block of framed snappy src.
func xerialChunks(src []byte, f func([]byte) error) error {
	for b := src[xerialHeader:]; len(b) > 0; {
		if len(b) < 4 {
			return errors.New("kraw: xerial snappy: truncated chunk length")
		}
		n := binary.BigEndian.Uint32(b)
		if uint64(n) > uint64(len(b)-4) {
			return fmt.Errorf("kraw: xerial snappy: chunk of %d bytes, %d left", n, len(b)-4)
		}
		if err := f(b[4 : 4+n]); err != nil {
			return err
		}
		b = b[4+n:]
	}
	return nil
}

func isXerial(src []byte) bool { return len(src) > xerialHeader && bytes.HasPrefix(src, xerialMagic) }

// Decompress returns src decompressed with codec c, or an error wrapping
// ErrDecompressLimit if that is more than the limit; nothing it allocates
// is larger than the limit (and what it returns).
func (d *Decompressor) Decompress(src []byte, c kgo.CompressionCodecType) ([]byte, error) {
	switch c {
	case kgo.CodecNone:
		return src, nil
	case kgo.CodecSnappy:
		n, err := d.snappySize(src)
		if err != nil {
			return nil, err
		}
		out := make([]byte, 0, n)
		if !isXerial(src) {
			return s2.Decode(out[:n], src)
		}
		err = xerialChunks(src, func(blk []byte) error {
			got, err := s2.Decode(out[len(out):cap(out)], blk)
			out = out[:len(out)+len(got)]
			return err
		})
		return out, err
	case kgo.CodecZstd:
		z, err := d.zstd()
		if err != nil {
			return nil, err
		}
		out, err := z.DecodeAll(src, nil)
		if err != nil {
			if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) {
				return nil, fmt.Errorf("%w: zstd: %v", ErrDecompressLimit, err)
			}
			return nil, err
		}
		if len(out) > d.limit {
			return nil, d.tooLarge(c, len(out))
		}
		return out, nil
	case kgo.CodecGzip, kgo.CodecLz4:
		r, done, err := d.stream(src, c)
		if err != nil {
			return nil, err
		}
		defer done()
		var buf bytes.Buffer
		n, err := buf.ReadFrom(io.LimitReader(r, int64(d.limit)+1))
		if err != nil {
			return nil, fmt.Errorf("kraw: %s: %w", codecName(c), err)
		}
		if n > int64(d.limit) {
			return nil, d.tooLarge(c, int(n))
		}
		return buf.Bytes(), nil
	}
	return nil, fmt.Errorf("kraw: unknown compression codec %d", c)
}

// stream returns a gzip or lz4 reader of src from the pools, and the
// function that puts it back. An lz4 reader holds a buffer of the frame's
// block size (up to 4 MiB) and a gzip reader its window: pooling them
// keeps that from being allocated per batch.
func (d *Decompressor) stream(src []byte, c kgo.CompressionCodecType) (io.Reader, func(), error) {
	if c == kgo.CodecGzip {
		zr, _ := d.gzips.Get().(*gzip.Reader)
		var err error
		if zr == nil {
			zr, err = gzip.NewReader(bytes.NewReader(src))
		} else {
			err = zr.Reset(bytes.NewReader(src))
		}
		if err != nil {
			return nil, nil, fmt.Errorf("kraw: gzip: %w", err)
		}
		return zr, func() { d.gzips.Put(zr) }, nil
	}
	lr, _ := d.lz4s.Get().(*lz4.Reader)
	if lr == nil {
		lr = lz4.NewReader(nil)
	}
	lr.Reset(bytes.NewReader(src))
	return lr, func() { d.lz4s.Put(lr) }, nil
}

// snappySize is the size snappy (plain or xerial framed) src declares,
// which a snappy decoder must produce exactly.
func (d *Decompressor) snappySize(src []byte) (int, error) {
	if !isXerial(src) {
		n, err := s2.DecodedLen(src)
		if err != nil {
			return 0, fmt.Errorf("kraw: snappy: %w", err)
		}
		if n > d.limit {
			return 0, d.tooLarge(kgo.CodecSnappy, n)
		}
		return n, nil
	}
	total := 0
	err := xerialChunks(src, func(blk []byte) error {
		n, err := s2.DecodedLen(blk)
		if err != nil {
			return fmt.Errorf("kraw: xerial snappy: %w", err)
		}
		if total += n; total > d.limit {
			return d.tooLarge(kgo.CodecSnappy, total)
		}
		return nil
	})
	return total, err
}

// Size returns the size the records of the v2 record batch at the start
// of batch decompress to, or an error wrapping ErrDecompressLimit if that
// is more than the limit. Snappy, and zstd frames that declare their
// content size, are measured by what they declare, which their decoders
// are held to; gzip, lz4 and other zstd data are decompressed into a small
// buffer and counted, so memory stays bounded whatever they hold.
func (d *Decompressor) Size(batch []byte) (int, error) {
	h, err := ParseHeader(batch)
	if err != nil {
		return 0, err
	}
	if h.Magic != 2 {
		return 0, fmt.Errorf("kraw: decompressed size: message format v%d, want v2", h.Magic)
	}
	if h.Size() > len(batch) {
		return 0, ErrTruncated
	}
	src := batch[HeaderSize:h.Size()]
	c := kgo.CompressionCodecType(h.Attributes & AttrCompressionMask)
	switch c {
	case kgo.CodecNone:
		if len(src) > d.limit {
			return 0, d.tooLarge(c, len(src))
		}
		return len(src), nil
	case kgo.CodecSnappy:
		return d.snappySize(src)
	case kgo.CodecZstd:
		var zh zstd.Header
		if err := zh.Decode(src); err == nil && zh.HasFCS && zh.FrameContentSize > uint64(d.limit) {
			return 0, d.tooLarge(c, int(min(zh.FrameContentSize, 1<<62)))
		}
		return d.count(c, func() (io.Reader, func(), error) {
			// Stream decoders, pooled: the shared decoder decodes whole
			// buffers (DecodeAll), which would allocate the output.
			zr, _ := d.zstreams.Get().(*zstd.Decoder)
			if zr == nil {
				var err error
				zr, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
					zstd.WithDecoderMaxWindow(d.window()))
				if err != nil {
					return nil, nil, err
				}
			}
			if err := zr.Reset(bytes.NewReader(src)); err != nil {
				zr.Close()
				return nil, nil, err
			}
			return zr, func() { d.zstreams.Put(zr) }, nil
		})
	case kgo.CodecGzip, kgo.CodecLz4:
		return d.count(c, func() (io.Reader, func(), error) { return d.stream(src, c) })
	}
	return 0, fmt.Errorf("kraw: unknown compression codec %d", c)
}

// count reads what open returns, discarding it, up to one byte over the
// limit.
func (d *Decompressor) count(c kgo.CompressionCodecType, open func() (io.Reader, func(), error)) (int, error) {
	r, done, err := open()
	if err != nil {
		return 0, fmt.Errorf("kraw: %s: %w", codecName(c), err)
	}
	defer done()
	n, err := io.Copy(io.Discard, io.LimitReader(r, int64(d.limit)+1))
	if err != nil {
		if errors.Is(err, zstd.ErrWindowSizeExceeded) {
			return 0, fmt.Errorf("%w: zstd: %v", ErrDecompressLimit, err)
		}
		return 0, fmt.Errorf("kraw: %s: %w", codecName(c), err)
	}
	if n > int64(d.limit) {
		return 0, d.tooLarge(c, int(n))
	}
	return int(n), nil
}
