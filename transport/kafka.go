package transport

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// A Batch frame's codec byte has this bit set when its block is Kafka
// record batches (Batch.Kafka) rather than the record block.
const codecKafka = 0x10

// Fields of a Kafka v2 record batch header that the transport checks.
const (
	kafkaHeaderSize      = 61
	kafkaOffLength       = 8
	kafkaOffMagic        = 16
	kafkaOffCRC          = 17
	kafkaOffAttributes   = 21
	kafkaOffLastDelta    = 23
	kafkaOffRecordCount  = 57
	kafkaAttrCompression = 0x07
	kafkaAttrControl     = 0x20
	kafkaAttrPassOnly    = 0x08 | 0x40 // LogAppendTime, delete horizon: timestamps would change
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Len is the number of records the batch carries.
func (b *Batch) Len() int {
	if b.Kafka == nil {
		return len(b.Records)
	}
	n, _, _ := walkKafka(b.Kafka, false)
	return n
}

// walkKafka checks that blk is a sequence of whole Kafka v2 data record
// batches, each with records at consecutive offsets, and returns how many
// records they hold and whether every one is compressed by Kafka. With
// crc, it also verifies each batch's CRC-32C (what the source producer
// computed), so that a batch is passed on only as its producer wrote it.
func walkKafka(blk []byte, crc bool) (records int, compressed bool, err error) {
	compressed = len(blk) > 0
	for off := 0; off < len(blk); {
		b := blk[off:]
		if len(b) < kafkaHeaderSize {
			return 0, false, fmt.Errorf("kafka batch at byte %d: %d bytes, shorter than a header", off, len(b))
		}
		size := 12 + int64(int32(binary.BigEndian.Uint32(b[kafkaOffLength:])))
		if size < kafkaHeaderSize || size > int64(len(b)) {
			return 0, false, fmt.Errorf("kafka batch at byte %d: length %d does not fit the %d bytes left", off, size, len(b))
		}
		if m := b[kafkaOffMagic]; m != 2 {
			return 0, false, fmt.Errorf("kafka batch at byte %d: message format v%d, want v2", off, m)
		}
		attrs := binary.BigEndian.Uint16(b[kafkaOffAttributes:])
		if attrs&kafkaAttrControl != 0 {
			return 0, false, fmt.Errorf("kafka batch at byte %d: a control batch", off)
		}
		if attrs&kafkaAttrPassOnly != 0 {
			return 0, false, fmt.Errorf("kafka batch at byte %d: attributes %#x (LogAppendTime or delete horizon) would change its timestamps at the destination", off, attrs)
		}
		n := int32(binary.BigEndian.Uint32(b[kafkaOffRecordCount:]))
		last := int32(binary.BigEndian.Uint32(b[kafkaOffLastDelta:]))
		if n <= 0 || int64(last)+1 != int64(n) {
			return 0, false, fmt.Errorf("kafka batch at byte %d: %d records over %d offsets", off, n, int64(last)+1)
		}
		if crc {
			if got, want := crc32.Checksum(b[kafkaOffAttributes:size], castagnoli), binary.BigEndian.Uint32(b[kafkaOffCRC:]); got != want {
				return 0, false, fmt.Errorf("kafka batch at byte %d: CRC %08x, header says %08x", off, got, want)
			}
		}
		if attrs&kafkaAttrCompression == 0 {
			compressed = false
		}
		records += int(n)
		off += int(size)
	}
	return records, compressed, nil
}
