package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// zstdLevel is the level batches are compressed with. Measured on this
// project's 2-core machine with 64 KiB batches of 1 KiB JSON records
// (BenchmarkZstdLevel, codec_bench_test.go; median of 3): SpeedFastest
// encodes about 450 MB/s at ratio 4.29, SpeedDefault about 360 MB/s at 4.34,
// SpeedBetterCompression about 265 MB/s at 4.50. Default buys 1% of size
// for 25% more CPU, so Fastest it is: the gateway's CPU also runs the Kafka
// clients, and on thin links the ratio barely moves. EncoderOptions.Level
// picks another level per Encoder.
const zstdLevel = zstd.SpeedFastest

// Encoder turns frames into their wire form. It holds the compressor and
// scratch buffers, which are expensive to create: keep one per writer and
// reuse it. An Encoder is not safe for concurrent use.
type Encoder struct {
	codec Codec
	level zstd.EncoderLevel
	zenc  *zstd.Encoder // nil unless codec is CodecZstd
	dicts *Dicts        // nil: no dictionaries
	zdict map[uint32]*zstd.Encoder
	blk   []byte // scratch: uncompressed record block
	cmp   []byte // scratch: compressed record block
}

// EncoderOptions tune an Encoder. The zero value is NewEncoder's choice.
type EncoderOptions struct {
	// Level is the zstd level (ignored by other codecs). Zero: LevelFastest.
	Level Level
	// Dicts, if not nil, holds the session's sending dictionaries: a zstd
	// batch of at most 256 KiB whose (leg, topic) has an acknowledged
	// dictionary is compressed with it. The Encoder only reads it.
	Dicts *Dicts
}

// NewEncoder returns an Encoder that compresses batches with c.
func NewEncoder(c Codec) (*Encoder, error) {
	return newEncoderLevel(c, zstdLevel)
}

// NewEncoderOptions returns an Encoder that compresses batches with c as o
// says.
func NewEncoderOptions(c Codec, o EncoderOptions) (*Encoder, error) {
	lv, err := o.Level.zstd()
	if err != nil {
		return nil, fmt.Errorf("new encoder: %w", err)
	}
	e, err := newEncoderLevel(c, lv)
	if err != nil {
		return nil, err
	}
	if c == CodecZstd {
		e.dicts = o.Dicts
	}
	return e, nil
}

func newEncoderLevel(c Codec, level zstd.EncoderLevel) (*Encoder, error) {
	e := &Encoder{codec: c, level: level}
	switch c {
	case CodecNone, CodecS2:
	case CodecZstd:
		// EncodeAll with concurrency 1 starts no goroutines; nothing to close.
		z, err := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(level),
			zstd.WithEncoderConcurrency(1),
		)
		if err != nil {
			return nil, fmt.Errorf("new zstd encoder: %w", err)
		}
		e.zenc = z
	default:
		return nil, fmt.Errorf("new encoder: unknown codec %s", c)
	}
	return e, nil
}

// dictEncoder returns the zstd encoder for batches of b's (leg, topic), or
// nil if it has no acknowledged dictionary or b is too large to gain.
func (e *Encoder) dictEncoder(b *Batch, raw int) *zstd.Encoder {
	if e.dicts == nil || raw > dictMaxBatch {
		return nil
	}
	d := e.dicts.forBatch(b.Leg, b.Topic)
	if d == nil {
		return nil
	}
	if z := e.zdict[d.id]; z != nil {
		return z
	}
	z, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(e.level),
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderDict(d.data),
	)
	if err != nil {
		return nil // checked when trained; cannot happen
	}
	if e.zdict == nil {
		e.zdict = make(map[uint32]*zstd.Encoder)
	}
	e.zdict[d.id] = z // at most MaxDicts
	return z
}

// Codec is the codec this Encoder compresses batches with.
func (e *Encoder) Codec() Codec { return e.codec }

// AppendFrame appends the wire form of f to dst: one type byte, the body
// length as a uvarint, the body. It does not retain f or dst.
func (e *Encoder) AppendFrame(dst []byte, f Frame) ([]byte, error) {
	if b, ok := f.(*Batch); ok {
		out, _, err := e.AppendBatch(dst, b)
		return out, err
	}
	return appendControl(dst, f)
}

// AppendFrame appends the wire form of a frame that is not a Batch; batches
// need an Encoder.
func AppendFrame(dst []byte, f Frame) ([]byte, error) {
	if _, ok := f.(*Batch); ok {
		return dst, errors.New("encode batch: needs an Encoder")
	}
	return appendControl(dst, f)
}

// appendControl encodes a non-batch frame. Control frames are small, so the
// body is built in place after a one-byte length placeholder, which is widened
// (by moving the body) in the rare case that the body is 128 bytes or more.
func appendControl(dst []byte, f Frame) ([]byte, error) {
	if f == nil {
		return dst, errors.New("encode: nil frame")
	}
	start := len(dst)
	dst = append(dst, byte(f.frameType()), 0)
	bodyAt := len(dst)
	var err error
	dst, err = appendBody(dst, f)
	if err != nil {
		return dst[:start], err
	}
	n := len(dst) - bodyAt
	if n > MaxFrameBytes {
		return dst[:start], fmt.Errorf("encode %s: body of %d bytes exceeds the protocol limit of %d", f.frameType(), n, MaxFrameBytes)
	}
	w := uvarintLen(uint64(n))
	if w > 1 {
		dst = slices.Grow(dst, w-1)[:len(dst)+w-1]
		copy(dst[bodyAt+w-1:], dst[bodyAt:bodyAt+n])
	}
	binary.PutUvarint(dst[bodyAt-1:], uint64(n))
	return dst, nil
}

func appendBody(dst []byte, f Frame) ([]byte, error) {
	switch f := f.(type) {
	case *Hello:
		dst = binary.AppendUvarint(dst, uint64(f.VersionMin))
		dst = binary.AppendUvarint(dst, uint64(f.VersionMax))
		dst = appendString(dst, f.Gateway)
		dst = appendString(dst, f.Region)
		dst = binary.AppendUvarint(dst, uint64(len(f.Legs)))
		for _, l := range f.Legs {
			dst = appendString(dst, l)
		}
		dst = binary.AppendUvarint(dst, uint64(len(f.Codecs)))
		for _, c := range f.Codecs {
			dst = append(dst, byte(c))
		}
		v5 := f.VersionMax >= VersionRelay && (f.Origin != "" || len(f.Shared) > 0)
		if f.VersionMax >= VersionDuplex && (len(f.Receive) > 0 || f.RecvWindow != 0 || f.RecvMaxBatchBytes != 0 || v5) {
			// Version 4: appended, so older listeners ignore it.
			dst = binary.AppendUvarint(dst, uint64(len(f.Receive)))
			for _, l := range f.Receive {
				dst = appendString(dst, l)
			}
			dst = binary.AppendVarint(dst, f.RecvWindow)
			dst = binary.AppendVarint(dst, f.RecvMaxBatchBytes)
		}
		if v5 {
			// Version 5, after the version 4 fields, so older listeners
			// ignore it: the origin a relay feeds for, the shared legs.
			dst = appendString(dst, f.Origin)
			dst = binary.AppendUvarint(dst, uint64(len(f.Shared)))
			for _, l := range f.Shared {
				dst = appendString(dst, l)
			}
		}
	case *Welcome:
		dst = binary.AppendUvarint(dst, uint64(f.Version))
		dst = appendString(dst, f.Gateway)
		dst = appendString(dst, f.Region)
		dst = binary.AppendVarint(dst, f.Window)
		dst = binary.AppendVarint(dst, f.MaxBatchBytes)
		if f.Version >= VersionDuplex {
			// Only a dialer that offered version 4 reads it: older
			// dialers refuse a Welcome with bytes left over.
			dst = binary.AppendUvarint(dst, uint64(len(f.Send)))
			for _, l := range f.Send {
				dst = appendString(dst, l)
			}
		}
	case *Claim:
		dst = appendString(dst, f.Leg)
		dst = binary.AppendVarint(dst, int64(f.Generation))
		dst = appendString(dst, f.Member)
		dst = binary.AppendUvarint(dst, uint64(len(f.Topics)))
		for _, t := range f.Topics {
			dst = appendString(dst, t.Topic)
			dst = binary.AppendUvarint(dst, uint64(len(t.Partitions)))
			for _, p := range t.Partitions {
				dst = binary.AppendVarint(dst, int64(p))
			}
		}
	case *Fenced:
		dst = appendString(dst, f.Leg)
		dst = binary.AppendUvarint(dst, f.Epoch)
		dst = appendString(dst, f.Reason)
	case *Groups:
		dst = appendString(dst, f.Leg)
		dst = binary.AppendUvarint(dst, uint64(len(f.Offsets)))
		for _, o := range f.Offsets {
			dst = appendString(dst, o.Group)
			dst = appendString(dst, o.Topic)
			dst = binary.AppendVarint(dst, int64(o.Partition))
			dst = binary.AppendVarint(dst, o.Offset)
		}
	case *Resume:
		dst = appendString(dst, f.Leg)
		dst = binary.AppendUvarint(dst, f.Gen)
		dst = binary.AppendUvarint(dst, uint64(len(f.Positions)))
		for _, p := range f.Positions {
			dst = appendString(dst, p.Topic)
			dst = binary.AppendVarint(dst, int64(p.Partition))
			dst = binary.AppendVarint(dst, p.NextOffset)
		}
	case *Ack:
		// Sequence numbers are mostly consecutive: the first is a uvarint,
		// each next one a varint delta from its predecessor.
		dst = binary.AppendUvarint(dst, uint64(len(f.Seqs)))
		var prev uint64
		for i, s := range f.Seqs {
			if i == 0 {
				dst = binary.AppendUvarint(dst, s)
			} else {
				dst = binary.AppendVarint(dst, int64(s-prev))
			}
			prev = s
		}
	case *Credit:
		dst = binary.AppendVarint(dst, f.Window)
	case *Topic:
		dst = appendString(dst, f.Leg)
		dst = appendString(dst, f.Name)
		dst = binary.AppendVarint(dst, int64(f.Partitions))
		dst = binary.AppendUvarint(dst, uint64(len(f.Configs)))
		// Sorted keys: the encoding of a frame is deterministic.
		keys := make([]string, 0, len(f.Configs))
		for k := range f.Configs {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			dst = appendString(dst, k)
			dst = appendString(dst, f.Configs[k])
		}
	case *TopicReady:
		dst = appendString(dst, f.Leg)
		dst = appendString(dst, f.Name)
		dst = appendString(dst, f.Err)
	case *Ping:
		dst = binary.AppendUvarint(dst, f.Nonce)
		dst = binary.AppendVarint(dst, f.SentAt)
	case *Pong:
		dst = binary.AppendUvarint(dst, f.Nonce)
		dst = binary.AppendVarint(dst, f.SentAt)
	case *Error:
		dst = binary.AppendUvarint(dst, uint64(f.Code))
		dst = appendString(dst, f.Message)
	case *Goaway:
		dst = appendString(dst, f.Reason)
	case *Dict:
		dst = binary.AppendUvarint(dst, uint64(f.ID))
		dst = appendString(dst, f.Leg)
		dst = appendString(dst, f.Topic)
		dst = binary.AppendUvarint(dst, uint64(len(f.Data)))
		dst = append(dst, f.Data...)
	case *DictAck:
		dst = binary.AppendUvarint(dst, uint64(f.ID))
	default:
		return dst, fmt.Errorf("encode: unsupported frame %T", f)
	}
	return dst, nil
}

// RawSize is the size in bytes of the batch's uncompressed record block: the
// unit of the credit window (Welcome.Window, Credit) and of
// Welcome.MaxBatchBytes. It costs a pass over the records, no allocation.
func (b *Batch) RawSize() int {
	if b.Kafka != nil {
		return len(b.Kafka) // the block is the Kafka batches themselves
	}
	n := uvarintLen(uint64(len(b.Records)))
	var baseOff, baseTS int64
	if len(b.Records) > 0 {
		baseOff, baseTS = b.Records[0].Offset, b.Records[0].Timestamp
	}
	n += varintLen(baseOff) + varintLen(baseTS)
	for i := range b.Records {
		r := &b.Records[i]
		n += varintLen(r.Offset-baseOff) + varintLen(r.Timestamp-baseTS)
		n += nullableLen(r.Key) + nullableLen(r.Value)
		n += uvarintLen(uint64(len(r.Headers)))
		for _, h := range r.Headers {
			n += stringLen(h.Key) + nullableLen(h.Value)
		}
	}
	return n
}

// appendRecordBlock appends the uncompressed record block: record count, base
// offset and timestamp (those of the first record, zero if none), then per
// record the offset and timestamp deltas from the base, key, value and headers.
func appendRecordBlock(dst []byte, recs []Record) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(recs)))
	var baseOff, baseTS int64
	if len(recs) > 0 {
		baseOff, baseTS = recs[0].Offset, recs[0].Timestamp
	}
	dst = binary.AppendVarint(dst, baseOff)
	dst = binary.AppendVarint(dst, baseTS)
	for i := range recs {
		r := &recs[i]
		dst = binary.AppendVarint(dst, r.Offset-baseOff)
		dst = binary.AppendVarint(dst, r.Timestamp-baseTS)
		dst = appendNullable(dst, r.Key)
		dst = appendNullable(dst, r.Value)
		dst = binary.AppendUvarint(dst, uint64(len(r.Headers)))
		for _, h := range r.Headers {
			dst = appendString(dst, h.Key)
			dst = appendNullable(dst, h.Value)
		}
	}
	return dst
}

// AppendBatch appends the wire form of b to dst and also returns the size of
// its uncompressed record block (b.RawSize()). When compression does not
// shrink the block, it is sent uncompressed (codec none on the wire).
func (e *Encoder) AppendBatch(dst []byte, b *Batch) (out []byte, raw int, err error) {
	blk, codec, format := e.blk, e.codec, byte(0)
	if b.Kafka != nil {
		// Kafka batches go as they are; compressing batches Kafka has
		// compressed already costs CPU and gains nothing.
		_, compressed, err := walkKafka(b.Kafka, false)
		if err != nil {
			return dst, 0, fmt.Errorf("encode batch %s/%d: %w", b.Topic, b.Partition, err)
		}
		blk, format = b.Kafka, codecKafka
		if compressed {
			codec = CodecNone
		}
	} else {
		e.blk = appendRecordBlock(e.blk[:0], b.Records)
		blk = e.blk
	}
	raw = len(blk)

	payload := blk
	switch codec {
	case CodecZstd:
		var z *zstd.Encoder
		if format == 0 {
			z = e.dictEncoder(b, raw)
		}
		if z == nil {
			z = e.zenc
		}
		e.cmp = z.EncodeAll(blk, e.cmp[:0])
		payload = e.cmp
	case CodecS2:
		e.cmp = s2.Encode(e.cmp[:cap(e.cmp)], blk)
		payload = e.cmp
	}
	if len(payload) >= raw {
		codec, payload = CodecNone, blk
	}

	hdr := stringLen(b.Leg) + uvarintLen(b.Gen) + uvarintLen(b.Seq) + stringLen(b.Topic) +
		varintLen(int64(b.Partition)) + varintLen(b.NextOffset) + varintLen(b.HighWatermark) +
		1 + uvarintLen(uint64(raw))
	body := hdr + len(payload)
	if body > MaxFrameBytes {
		return dst, raw, fmt.Errorf("encode batch %s/%d: body of %d bytes exceeds the protocol limit of %d", b.Topic, b.Partition, body, MaxFrameBytes)
	}
	dst = slices.Grow(dst, 1+uvarintLen(uint64(body))+body)
	dst = append(dst, byte(FrameBatch))
	dst = binary.AppendUvarint(dst, uint64(body))
	dst = appendString(dst, b.Leg)
	dst = binary.AppendUvarint(dst, b.Gen)
	dst = binary.AppendUvarint(dst, b.Seq)
	dst = appendString(dst, b.Topic)
	dst = binary.AppendVarint(dst, int64(b.Partition))
	dst = binary.AppendVarint(dst, b.NextOffset)
	dst = binary.AppendVarint(dst, b.HighWatermark)
	dst = append(dst, byte(codec)|format)
	dst = binary.AppendUvarint(dst, uint64(raw))
	dst = append(dst, payload...)

	// Do not pin a huge scratch buffer after an unusually large batch.
	const keep = 8 << 20
	if cap(e.blk) > keep {
		e.blk = nil
	}
	if cap(e.cmp) > keep {
		e.cmp = nil
	}
	return dst, raw, nil
}
