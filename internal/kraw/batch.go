// Package kraw moves Kafka record batches without decoding their records: a
// fetcher that returns the batches of a fetch response as bytes, and a
// producer that writes such batches inside the transactions of a franz-go
// transactional client.
//
// Mirroring a record batch byte for byte costs a header patch and a CRC,
// where decoding and re-encoding it costs a decompression, a parse and an
// allocation per record, and a compression. franz-go (kgo) does not expose
// either direction at the batch level, so this package issues the Fetch,
// AddPartitionsToTxn and Produce requests itself through kgo's request API,
// which keeps kgo's connections, metadata, authentication and coordinator
// routing. Anything a raw batch cannot carry exactly (old message formats,
// LogAppendTime, offset gaps left by compaction) is left to the record path.
//
// Records are decompressed by a Decompressor, bounded by a limit (a
// receiver's batch limit), never by kgo's default, which allows 2 GiB to a
// batch of a few KiB; Decompressor.Size measures a batch against the limit
// without holding its records.
package kraw

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Offsets of the fields of a v2 record batch header.
const (
	offBaseOffset      = 0
	offLength          = 8
	offLeaderEpoch     = 12
	offMagic           = 16
	offCRC             = 17
	offAttributes      = 21
	offLastOffsetDelta = 23
	offBaseTimestamp   = 27
	offMaxTimestamp    = 35
	offProducerID      = 43
	offProducerEpoch   = 51
	offBaseSequence    = 53
	offRecordCount     = 57
	// HeaderSize is the size of a v2 record batch header.
	HeaderSize = 61
)

// Attribute bits of a v2 record batch.
const (
	AttrCompressionMask = 0x07
	AttrLogAppendTime   = 0x08
	AttrTransactional   = 0x10
	AttrControl         = 0x20
	// AttrDeleteHorizon marks a batch the log cleaner rewrote (KIP-534):
	// its base timestamp is the tombstones' delete horizon, not the first
	// record's timestamp.
	AttrDeleteHorizon = 0x40
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// ErrTruncated reports bytes that end inside a batch header or body.
var ErrTruncated = errors.New("kraw: truncated record batch")

// Header is the parsed header of a record batch.
type Header struct {
	BaseOffset      int64
	Length          int32 // bytes after the length field
	Magic           int8
	Attributes      int16
	LastOffsetDelta int32
	BaseTimestamp   int64
	MaxTimestamp    int64
	ProducerID      int64
	ProducerEpoch   int16
	BaseSequence    int32
	Records         int32
}

// Size is the whole batch's size in bytes.
func (h *Header) Size() int { return 12 + int(h.Length) }

// NextOffset is the offset after the batch's last offset.
func (h *Header) NextOffset() int64 { return h.BaseOffset + int64(h.LastOffsetDelta) + 1 }

// Control reports a transaction marker batch.
func (h *Header) Control() bool { return h.Attributes&AttrControl != 0 }

// Transactional reports a batch written inside a transaction.
func (h *Header) Transactional() bool { return h.Attributes&AttrTransactional != 0 }

// Contiguous reports a batch whose records have offsets base..base+n-1
// with no gaps (compaction leaves gaps).
func (h *Header) Contiguous() bool { return int64(h.LastOffsetDelta)+1 == int64(h.Records) }

// Raw reports whether the batch can be mirrored byte for byte: a data
// batch of message format v2 with create-time timestamps, not rewritten by
// the log cleaner with a delete horizon, and no offset gaps, so that its
// records land on consecutive destination offsets with the same
// timestamps.
func (h *Header) Raw() bool {
	return h.Magic == 2 && !h.Control() && h.Attributes&(AttrLogAppendTime|AttrDeleteHorizon) == 0 && h.Contiguous() && h.Records > 0
}

// ParseHeader parses the header of the batch at the start of b. It needs
// the header only; for magic < 2 only BaseOffset, Length and Magic are
// set.
func ParseHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < offMagic+1 {
		return h, ErrTruncated
	}
	h.BaseOffset = int64(binary.BigEndian.Uint64(b[offBaseOffset:]))
	h.Length = int32(binary.BigEndian.Uint32(b[offLength:]))
	h.Magic = int8(b[offMagic])
	if h.Length < 0 {
		return h, fmt.Errorf("kraw: record batch at offset %d has negative length %d", h.BaseOffset, h.Length)
	}
	if h.Magic != 2 {
		return h, nil
	}
	if len(b) < HeaderSize {
		return h, ErrTruncated
	}
	if int(h.Length) < HeaderSize-12 {
		return h, fmt.Errorf("kraw: record batch at offset %d has length %d, shorter than its header", h.BaseOffset, h.Length)
	}
	h.Attributes = int16(binary.BigEndian.Uint16(b[offAttributes:]))
	h.LastOffsetDelta = int32(binary.BigEndian.Uint32(b[offLastOffsetDelta:]))
	h.BaseTimestamp = int64(binary.BigEndian.Uint64(b[offBaseTimestamp:]))
	h.MaxTimestamp = int64(binary.BigEndian.Uint64(b[offMaxTimestamp:]))
	h.ProducerID = int64(binary.BigEndian.Uint64(b[offProducerID:]))
	h.ProducerEpoch = int16(binary.BigEndian.Uint16(b[offProducerEpoch:]))
	h.BaseSequence = int32(binary.BigEndian.Uint32(b[offBaseSequence:]))
	h.Records = int32(binary.BigEndian.Uint32(b[offRecordCount:]))
	if h.LastOffsetDelta < 0 || h.Records < 0 {
		return h, fmt.Errorf("kraw: record batch at offset %d has last offset delta %d and %d records", h.BaseOffset, h.LastOffsetDelta, h.Records)
	}
	return h, nil
}

// Split calls fn for each complete batch in b, in order, and returns the
// bytes after the last complete batch (a fetch response may end in a
// partial batch). It stops at the first error of fn or of parsing.
func Split(b []byte, fn func(h Header, batch []byte) error) (rest []byte, err error) {
	for len(b) > 0 {
		h, err := ParseHeader(b)
		if errors.Is(err, ErrTruncated) {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		n := h.Size()
		if n > len(b) {
			return b, nil
		}
		if err := fn(h, b[:n:n]); err != nil {
			return b, err
		}
		b = b[n:]
	}
	return nil, nil
}

// Count returns how many complete batches b holds.
func Count(b []byte) int {
	n := 0
	Split(b, func(Header, []byte) error { n++; return nil })
	return n
}

// CheckCRC verifies the CRC-32C of a v2 batch.
func CheckCRC(batch []byte) error {
	if len(batch) < HeaderSize {
		return ErrTruncated
	}
	want := binary.BigEndian.Uint32(batch[offCRC:])
	if got := crc32.Checksum(batch[offAttributes:], crc32c); got != want {
		return fmt.Errorf("kraw: record batch at offset %d: CRC %08x, header says %08x", int64(binary.BigEndian.Uint64(batch)), got, want)
	}
	return nil
}

// PatchForProduce rewrites a v2 batch in place for a produce request of
// the given producer: base offset 0, unknown leader epoch, the producer's
// ID, epoch and base sequence, the transactional bit as asked, and a
// fresh CRC. Records, compression and timestamps are untouched.
func PatchForProduce(batch []byte, producerID int64, epoch int16, baseSeq int32, transactional bool) error {
	h, err := ParseHeader(batch)
	if err != nil {
		return err
	}
	if h.Magic != 2 {
		return fmt.Errorf("kraw: cannot produce a batch of message format v%d", h.Magic)
	}
	if h.Size() != len(batch) {
		return fmt.Errorf("kraw: batch of %d bytes says it has %d", len(batch), h.Size())
	}
	attrs := h.Attributes &^ (AttrTransactional | AttrControl)
	if transactional {
		attrs |= AttrTransactional
	}
	binary.BigEndian.PutUint64(batch[offBaseOffset:], 0)
	binary.BigEndian.PutUint32(batch[offLeaderEpoch:], 0xffffffff)
	binary.BigEndian.PutUint16(batch[offAttributes:], uint16(attrs))
	binary.BigEndian.PutUint64(batch[offProducerID:], uint64(producerID))
	binary.BigEndian.PutUint16(batch[offProducerEpoch:], uint16(epoch))
	binary.BigEndian.PutUint32(batch[offBaseSequence:], uint32(baseSeq))
	binary.BigEndian.PutUint32(batch[offCRC:], crc32.Checksum(batch[offAttributes:], crc32c))
	return nil
}
