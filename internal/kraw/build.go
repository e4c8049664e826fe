package kraw

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// BuildBatch appends to dst one v2 record batch holding recs, in order, and
// returns the extended slice. It is for records the mirror has decoded (or
// made) and now wants to write through [TxnProducer].
//
// The batch has base offset 0 and offset deltas 0..n-1, create-time
// timestamps taken from each record's Timestamp (a zero Timestamp means
// now, as in [kgo.Client.Produce]), and each record's key, value and
// headers exactly: a nil key, value or header value is encoded as null and
// an empty one as empty. Only Key, Value, Headers and Timestamp of each
// record are used.
//
// The records section is compressed with c (for example
// kgo.DefaultCompressor(kgo.SnappyCompression())); a nil c, or a
// compression that does not make it smaller, leaves it uncompressed. The
// producer ID, epoch and base sequence are -1 and the CRC is set;
// [PatchForProduce] fills in the producer's values.
//
// BuildBatch fails on an empty recs; dst is returned unchanged on error.
func BuildBatch(dst []byte, recs []kgo.Record, c kgo.Compressor) ([]byte, error) {
	if len(recs) == 0 {
		return dst, errors.New("kraw: build batch: no records")
	}
	now := time.Now()
	ts := func(r *kgo.Record) int64 {
		if r.Timestamp.IsZero() {
			return now.UnixMilli()
		}
		return r.Timestamp.UnixMilli()
	}
	base := ts(&recs[0])
	maxTS := base

	var raw, scratch []byte
	for i := range recs {
		r := &recs[i]
		t := ts(r)
		maxTS = max(maxTS, t)
		kr := kmsg.Record{
			TimestampDelta64: t - base,
			OffsetDelta:      int32(i),
			Key:              r.Key,
			Value:            r.Value,
		}
		if len(r.Headers) > 0 {
			kr.Headers = make([]kmsg.Header, len(r.Headers))
			for j, h := range r.Headers {
				kr.Headers[j] = kmsg.Header{Key: h.Key, Value: h.Value}
			}
		}
		// kmsg.Record.AppendTo writes Length first; a zero Length is
		// one byte, after which comes the body whose size Length is.
		scratch = kr.AppendTo(scratch[:0])
		body := scratch[1:]
		raw = binary.AppendVarint(raw, int64(len(body)))
		raw = append(raw, body...)
	}

	records, codec := raw, kgo.CodecNone
	if c != nil {
		var buf bytes.Buffer
		if out, cc := c.Compress(&buf, raw); cc != kgo.CodecNone && len(out) < len(raw) {
			records, codec = out, cc
		}
	}

	b := kmsg.RecordBatch{
		FirstOffset:          0,
		PartitionLeaderEpoch: -1,
		Magic:                2,
		Attributes:           int16(codec) & AttrCompressionMask,
		LastOffsetDelta:      int32(len(recs) - 1),
		FirstTimestamp:       base,
		MaxTimestamp:         maxTS,
		ProducerID:           -1,
		ProducerEpoch:        -1,
		FirstSequence:        -1,
		NumRecords:           int32(len(recs)),
		Records:              records,
	}
	start := len(dst)
	out := b.AppendTo(dst)
	batch := out[start:]
	binary.BigEndian.PutUint32(batch[offLength:], uint32(len(batch)-12))
	binary.BigEndian.PutUint32(batch[offCRC:], crc32.Checksum(batch[offAttributes:], crc32c))
	return out, nil
}

// Decode returns the records of the whole batches in batches (v2 record
// batches or older message sets, as a fetch response holds them), with
// their original offsets, timestamps, keys, values and headers, Topic and
// Partition set to topic and partition. Control records (transaction
// markers) are left out. Decode does not know about aborted transactions:
// the caller drops the batches of aborted transactions first.
//
// Decode returns an error, and no records, for bytes that end inside a
// batch, a bad CRC, an unknown compression or a batch whose records do not
// decode to the count in its header. A batch whose records decompress to
// more than d's limit is an error wrapping ErrDecompressLimit.
func (d *Decompressor) Decode(topic string, partition int32, batches []byte) ([]*kgo.Record, error) {
	var (
		recs []*kgo.Record
		opts = kgo.ProcessFetchPartitionOpts{
			Topic:     topic,
			Partition: partition,
			Offset:    -1 << 63, // keep every record, whatever its offset
		}
	)
	rest, err := Split(batches, func(h Header, batch []byte) error {
		// One batch at a time: kgo.ProcessFetchPartition treats an
		// error after the first batch as the truncated tail of a fetch
		// and drops it silently.
		fp, _ := kgo.ProcessFetchPartition(opts, &kmsg.FetchResponseTopicPartition{
			Partition:        partition,
			HighWatermark:    1<<63 - 1,
			LastStableOffset: 1<<63 - 1,
			RecordBatches:    batch,
		}, d, nil)
		if fp.Err != nil {
			return fmt.Errorf("kraw: decode %s[%d] batch at offset %d: %w", topic, partition, h.BaseOffset, fp.Err)
		}
		if h.Magic == 2 {
			want := int(h.Records)
			if h.Control() {
				want = 0
			}
			if len(fp.Records) != want {
				return fmt.Errorf("kraw: decode %s[%d] batch at offset %d: %d of %d records decoded", topic, partition, h.BaseOffset, len(fp.Records), want)
			}
		} else if len(fp.Records) == 0 {
			// Every v0/v1 message holds a record; kgo skips
			// messages too short to parse without an error.
			return fmt.Errorf("kraw: decode %s[%d] message at offset %d: no records decoded", topic, partition, h.BaseOffset)
		}
		recs = append(recs, fp.Records...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(rest) > 0 {
		return nil, fmt.Errorf("kraw: decode %s[%d]: %d bytes after the last whole batch: %w", topic, partition, len(rest), ErrTruncated)
	}
	return recs, nil
}
