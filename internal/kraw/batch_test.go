package kraw

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// encodeTestBatch encodes a v2 record batch at base holding recs (their
// offset deltas and lengths are set here), with a valid length and CRC.
func encodeTestBatch(base, producerID int64, attrs int16, recs ...kmsg.Record) []byte {
	var body []byte
	for i := range recs {
		r := recs[i]
		r.OffsetDelta = int32(i)
		r.Length = 0
		r.Length = int32(len(r.AppendTo(nil)) - 1) // a zero length is one varint byte
		body = r.AppendTo(body)
	}
	rb := kmsg.RecordBatch{
		FirstOffset:          base,
		PartitionLeaderEpoch: -1,
		Magic:                2,
		Attributes:           attrs,
		LastOffsetDelta:      int32(len(recs) - 1),
		FirstTimestamp:       1_700_000_000_000,
		MaxTimestamp:         1_700_000_000_000,
		ProducerID:           producerID,
		ProducerEpoch:        0,
		FirstSequence:        0,
		NumRecords:           int32(len(recs)),
		Records:              body,
	}
	if len(recs) == 0 {
		rb.LastOffsetDelta = 0
	}
	b := rb.AppendTo(nil)
	binary.BigEndian.PutUint32(b[offLength:], uint32(len(b)-12))
	binary.BigEndian.PutUint32(b[offCRC:], crc32.Checksum(b[offAttributes:], crc32c))
	return b
}

// testRecords returns n records whose values name the offset they land on
// in a batch at base.
func testRecords(base int64, n int) []kmsg.Record {
	recs := make([]kmsg.Record, n)
	for i := range recs {
		recs[i].Key = fmt.Appendf(nil, "k%d", base+int64(i))
		recs[i].Value = fmt.Appendf(nil, "v%d", base+int64(i))
	}
	return recs
}

// encodeTestControl encodes a transaction marker of the given type
// (controlAbort or controlCommit).
func encodeTestControl(base, producerID int64, typ int16) []byte {
	key := (&kmsg.ControlRecordKey{Version: 0, Type: kmsg.ControlRecordKeyType(typ)}).AppendTo(nil)
	value := []byte{0, 0, 0, 0, 0, 0} // version 0, coordinator epoch 0
	return encodeTestBatch(base, producerID, AttrControl|AttrTransactional, kmsg.Record{Key: key, Value: value})
}

// encodeTestMessageV1 encodes an uncompressed message of format v1.
func encodeTestMessageV1(offset int64, key, value string) []byte {
	m := kmsg.MessageV1{Offset: offset, Magic: 1, Timestamp: 1_700_000_000_000, Key: []byte(key), Value: []byte(value)}
	b := m.AppendTo(nil)
	binary.BigEndian.PutUint32(b[8:], uint32(len(b)-12))
	binary.BigEndian.PutUint32(b[12:], crc32.ChecksumIEEE(b[16:]))
	return b
}

// kfakeRawBatches produces rounds batches of perRound snappy-compressed
// records to a one-broker kfake cluster and returns the record bytes of a
// fetch from offset 0, with the records as kgo produced them.
func kfakeRawBatches(t *testing.T, rounds, perRound int) ([]byte, []*kgo.Record) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "raw"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(append(ClientOpts(),
		kgo.SeedBrokers(c.ListenAddrs()...),
		kgo.DefaultProduceTopic("raw"),
		kgo.ProducerBatchCompression(kgo.SnappyCompression()),
	)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	var want []*kgo.Record
	for r := range rounds {
		var recs []*kgo.Record
		for i := range perRound {
			recs = append(recs, &kgo.Record{
				Key:       fmt.Appendf(nil, "key-%d-%d", r, i),
				Value:     bytes.Repeat(fmt.Appendf(nil, "value %d %d ", r, i), 20),
				Headers:   []kgo.RecordHeader{{Key: "h", Value: fmt.Appendf(nil, "%d", i)}},
				Timestamp: time.UnixMilli(1_700_000_000_000 + int64(r*perRound+i)),
			})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		want = append(want, recs...)
	}

	req := kmsg.NewPtrFetchRequest()
	req.MaxWaitMillis = 100
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = "raw"
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.PartitionMaxBytes = 1 << 20
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl.Broker(int(c.LeaderFor("raw", 0))))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		t.Fatalf("fetch response has %d topics, want 1 with 1 partition", len(resp.Topics))
	}
	got := resp.Topics[0].Partitions[0]
	if err := kerr.ErrorForCode(got.ErrorCode); err != nil {
		t.Fatal(err)
	}
	return got.RecordBatches, want
}

// decodeTestBatches decodes batches with kgo, keeping records at from or
// above.
func decodeTestBatches(t *testing.T, topic string, partition int32, from int64, batches []byte) []*kgo.Record {
	t.Helper()
	fp, _ := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{Topic: topic, Partition: partition, Offset: from},
		&kmsg.FetchResponseTopicPartition{Partition: partition, RecordBatches: batches}, kgo.DefaultDecompressor(), nil)
	if fp.Err != nil {
		t.Fatalf("decode %s/%d: %v", topic, partition, fp.Err)
	}
	return fp.Records
}

func TestParseHeaderFetchedBatches(t *testing.T) {
	raw, want := kfakeRawBatches(t, 3, 10)
	var hs []Header
	rest, err := Split(raw, func(h Header, b []byte) error {
		if err := CheckCRC(b); err != nil {
			t.Errorf("batch at %d: %v", h.BaseOffset, err)
		}
		hs = append(hs, h)
		return nil
	})
	if err != nil || len(rest) != 0 {
		t.Fatalf("Split: rest %d bytes, err %v; want 0, nil", len(rest), err)
	}
	if len(hs) != 3 {
		t.Fatalf("got %d batches, want 3", len(hs))
	}
	for i, h := range hs {
		if got, want := h.BaseOffset, int64(i*10); got != want {
			t.Errorf("batch %d: base offset %d, want %d", i, got, want)
		}
		if h.Magic != 2 || h.Records != 10 || h.LastOffsetDelta != 9 || h.NextOffset() != int64(i*10+10) {
			t.Errorf("batch %d: magic %d, %d records, last offset delta %d, next %d; want 2, 10, 9, %d",
				i, h.Magic, h.Records, h.LastOffsetDelta, h.NextOffset(), i*10+10)
		}
		if got := h.Attributes & AttrCompressionMask; got != 2 {
			t.Errorf("batch %d: compression %d, want 2 (snappy)", i, got)
		}
		if !h.Raw() || !h.Contiguous() || h.Control() || h.Transactional() {
			t.Errorf("batch %d: raw %t contiguous %t control %t transactional %t; want true true false false",
				i, h.Raw(), h.Contiguous(), h.Control(), h.Transactional())
		}
		if h.ProducerID < 0 || h.BaseSequence != int32(i*10) {
			t.Errorf("batch %d: producer ID %d, base sequence %d; want an idempotent producer at sequence %d", i, h.ProducerID, h.BaseSequence, i*10)
		}
		if got, want := h.BaseTimestamp, want[i*10].Timestamp.UnixMilli(); got != want {
			t.Errorf("batch %d: base timestamp %d, want %d", i, got, want)
		}
		if got, want := h.MaxTimestamp, want[i*10+9].Timestamp.UnixMilli(); got != want {
			t.Errorf("batch %d: max timestamp %d, want %d", i, got, want)
		}
	}
}

func TestParseHeaderErrors(t *testing.T) {
	good := encodeTestBatch(7, 1, 0, testRecords(7, 2)...)
	v1 := encodeTestMessageV1(3, "k", "v")
	with := func(b []byte, at int, v []byte) []byte {
		b = bytes.Clone(b)
		copy(b[at:], v)
		return b
	}
	be32 := func(v int32) []byte { return binary.BigEndian.AppendUint32(nil, uint32(v)) }
	tests := []struct {
		name      string
		in        []byte
		truncated bool // want ErrTruncated
		wantErr   bool // want another error
	}{
		{name: "empty", in: nil, truncated: true},
		{name: "before magic", in: good[:offMagic], truncated: true},
		{name: "v2 header cut", in: good[:HeaderSize-1], truncated: true},
		{name: "v2 header only", in: good[:HeaderSize]},
		{name: "negative length", in: with(good, offLength, be32(-1)), wantErr: true},
		{name: "length shorter than header", in: with(good, offLength, be32(HeaderSize-13)), wantErr: true},
		{name: "negative records", in: with(good, offRecordCount, be32(-1)), wantErr: true},
		{name: "negative last offset delta", in: with(good, offLastOffsetDelta, be32(-1)), wantErr: true},
		{name: "v1 message", in: v1},
		{name: "v1 message header only", in: v1[:offMagic+1]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseHeader(tt.in)
			switch {
			case tt.truncated && !errors.Is(err, ErrTruncated):
				t.Errorf("got %v, want ErrTruncated", err)
			case tt.wantErr && (err == nil || errors.Is(err, ErrTruncated)):
				t.Errorf("got %v, want a non-truncation error", err)
			case !tt.truncated && !tt.wantErr && err != nil:
				t.Errorf("got %v, want no error", err)
			}
		})
	}

	h, err := ParseHeader(good)
	if err != nil {
		t.Fatal(err)
	}
	want := Header{BaseOffset: 7, Length: int32(len(good) - 12), Magic: 2, LastOffsetDelta: 1,
		BaseTimestamp: 1_700_000_000_000, MaxTimestamp: 1_700_000_000_000, ProducerID: 1, Records: 2}
	if h != want {
		t.Errorf("got %+v, want %+v", h, want)
	}
	h, err = ParseHeader(v1)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Header{BaseOffset: 3, Length: int32(len(v1) - 12), Magic: 1}); h != want {
		t.Errorf("v1: got %+v, want %+v", h, want)
	}
}

func TestSplit(t *testing.T) {
	b0 := encodeTestBatch(0, -1, 0, testRecords(0, 3)...)
	b1 := encodeTestMessageV1(3, "k", "v")
	b2 := encodeTestBatch(4, -1, 0, testRecords(4, 1)...)
	all := bytes.Join([][]byte{b0, b1, b2}, nil)

	collect := func(in []byte) (offsets []int64, sizes []int, rest []byte, err error) {
		rest, err = Split(in, func(h Header, b []byte) error {
			offsets = append(offsets, h.BaseOffset)
			sizes = append(sizes, len(b))
			if cap(b) != len(b) {
				t.Errorf("batch at %d: cap %d > len %d lets appends overwrite the next batch", h.BaseOffset, cap(b), len(b))
			}
			return nil
		})
		return offsets, sizes, rest, err
	}
	tests := []struct {
		name     string
		in       []byte
		offsets  []int64
		restSize int
	}{
		{"all", all, []int64{0, 3, 4}, 0},
		{"partial last", all[:len(all)-1], []int64{0, 3}, len(b2) - 1},
		{"partial header", all[:len(b0)+len(b1)+10], []int64{0, 3}, 10},
		{"empty", nil, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			offsets, sizes, rest, err := collect(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(offsets) != fmt.Sprint(tt.offsets) {
				t.Errorf("got batches at %v, want %v", offsets, tt.offsets)
			}
			if len(rest) != tt.restSize {
				t.Errorf("got %d bytes of rest, want %d", len(rest), tt.restSize)
			}
			total := len(rest)
			for _, n := range sizes {
				total += n
			}
			if total != len(tt.in) {
				t.Errorf("batches and rest cover %d bytes, want %d", total, len(tt.in))
			}
		})
	}

	t.Run("fn error stops", func(t *testing.T) {
		stop := errors.New("stop")
		var n int
		rest, err := Split(all, func(h Header, _ []byte) error {
			n++
			if h.BaseOffset == 3 {
				return stop
			}
			return nil
		})
		if !errors.Is(err, stop) || n != 2 || !bytes.Equal(rest, all[len(b0):]) {
			t.Errorf("got err %v after %d calls, rest %d bytes; want stop after 2, %d bytes", err, n, len(rest), len(all)-len(b0))
		}
	})
	t.Run("bad header stops", func(t *testing.T) {
		bad := bytes.Clone(all)
		binary.BigEndian.PutUint32(bad[len(b0)+offLength:], 0x80000000)
		offsets, _, rest, err := collect(bad)
		if err == nil || errors.Is(err, ErrTruncated) || len(offsets) != 1 || len(rest) != len(all)-len(b0) {
			t.Errorf("got err %v, batches %v, rest %d; want an error after the first batch", err, offsets, len(rest))
		}
	})
}

func TestCheckCRC(t *testing.T) {
	raw, _ := kfakeRawBatches(t, 1, 5)
	if err := CheckCRC(raw); err != nil {
		t.Fatalf("fetched batch: %v", err)
	}
	for _, at := range []int{offAttributes, offProducerID, HeaderSize, len(raw) - 1} {
		bad := bytes.Clone(raw)
		bad[at] ^= 1
		if err := CheckCRC(bad); err == nil {
			t.Errorf("byte %d flipped: no error", at)
		}
	}
	// Fields before the attributes are outside the CRC.
	outside := bytes.Clone(raw)
	outside[offBaseOffset+7] ^= 1
	outside[offLeaderEpoch] ^= 1
	if err := CheckCRC(outside); err != nil {
		t.Errorf("base offset and leader epoch changed: %v, want no error", err)
	}
	if err := CheckCRC(raw[:HeaderSize-1]); !errors.Is(err, ErrTruncated) {
		t.Errorf("short batch: got %v, want ErrTruncated", err)
	}
}

func TestPatchForProduce(t *testing.T) {
	raw, want := kfakeRawBatches(t, 1, 8)
	orig, err := ParseHeader(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, transactional := range []bool{false, true} {
		t.Run(fmt.Sprintf("transactional=%t", transactional), func(t *testing.T) {
			b := bytes.Clone(raw)
			binary.BigEndian.PutUint64(b, 1234) // a source offset, to be reset
			if err := PatchForProduce(b, 77, 3, 41, transactional); err != nil {
				t.Fatal(err)
			}
			if err := CheckCRC(b); err != nil {
				t.Fatal(err)
			}
			h, err := ParseHeader(b)
			if err != nil {
				t.Fatal(err)
			}
			if h.BaseOffset != 0 || h.ProducerID != 77 || h.ProducerEpoch != 3 || h.BaseSequence != 41 || h.Transactional() != transactional {
				t.Errorf("got base %d, producer %d/%d, sequence %d, transactional %t; want 0, 77/3, 41, %t",
					h.BaseOffset, h.ProducerID, h.ProducerEpoch, h.BaseSequence, h.Transactional(), transactional)
			}
			if got := int32(binary.BigEndian.Uint32(b[offLeaderEpoch:])); got != -1 {
				t.Errorf("leader epoch %d, want -1", got)
			}
			if h.Attributes&AttrCompressionMask != orig.Attributes&AttrCompressionMask || h.BaseTimestamp != orig.BaseTimestamp ||
				h.MaxTimestamp != orig.MaxTimestamp || h.Records != orig.Records || h.LastOffsetDelta != orig.LastOffsetDelta {
				t.Errorf("got %+v, want compression, timestamps and counts of %+v", h, orig)
			}
			if !bytes.Equal(b[HeaderSize:], raw[HeaderSize:]) {
				t.Error("records changed")
			}
			got := decodeTestBatches(t, "raw", 0, 0, b)
			if len(got) != len(want) {
				t.Fatalf("decoded %d records, want %d", len(got), len(want))
			}
			for i, r := range got {
				if r.Offset != int64(i) || !bytes.Equal(r.Key, want[i].Key) || !bytes.Equal(r.Value, want[i].Value) ||
					!r.Timestamp.Equal(want[i].Timestamp) || len(r.Headers) != 1 || !bytes.Equal(r.Headers[0].Value, want[i].Headers[0].Value) {
					t.Errorf("record %d: got offset %d key %q, want offset %d key %q", i, r.Offset, r.Key, i, want[i].Key)
				}
			}
		})
	}

	t.Run("control bit cleared", func(t *testing.T) {
		b := encodeTestControl(5, 9, controlCommit)
		if err := PatchForProduce(b, 1, 0, 0, false); err != nil {
			t.Fatal(err)
		}
		if h, _ := ParseHeader(b); h.Control() || h.Transactional() {
			t.Errorf("control %t transactional %t, want false false", h.Control(), h.Transactional())
		}
	})
	t.Run("errors", func(t *testing.T) {
		if err := PatchForProduce(encodeTestMessageV1(0, "k", "v"), 1, 0, 0, false); err == nil {
			t.Error("v1 message: no error")
		}
		if err := PatchForProduce(bytes.Clone(raw[:len(raw)-1]), 1, 0, 0, false); err == nil {
			t.Error("short batch: no error")
		}
		if err := PatchForProduce(append(bytes.Clone(raw), 0), 1, 0, 0, false); err == nil {
			t.Error("long batch: no error")
		}
		if err := PatchForProduce(raw[:10], 1, 0, 0, false); !errors.Is(err, ErrTruncated) {
			t.Errorf("truncated header: got %v, want ErrTruncated", err)
		}
	})
}

// fuzzBatchSeeds are valid inputs for the batch fuzzers: batches of each
// kind and a concatenation of them.
func fuzzBatchSeeds() [][]byte {
	seeds := [][]byte{
		encodeTestBatch(0, -1, 0, testRecords(0, 3)...),
		encodeTestBatch(10, 4, AttrTransactional, testRecords(10, 1)...),
		encodeTestControl(11, 4, controlAbort),
		encodeTestMessageV1(12, "k", "v"),
		encodeTestBatch(13, -1, 0),
	}
	seeds = append(seeds, bytes.Join(seeds, nil))
	return seeds
}

func FuzzParseHeader(f *testing.F) {
	for _, s := range fuzzBatchSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			return
		}
		if h.Length < 0 {
			t.Fatalf("length %d accepted", h.Length)
		}
		if h.Magic == 2 && (h.Size() < HeaderSize || h.Records < 0 || h.LastOffsetDelta < 0) {
			t.Fatalf("v2 header %+v accepted", h)
		}
	})
}

func FuzzSplit(f *testing.F) {
	for _, s := range fuzzBatchSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var sizes []int
		rest, err := Split(b, func(h Header, batch []byte) error {
			if len(batch) != h.Size() {
				t.Fatalf("batch of %d bytes, header says %d", len(batch), h.Size())
			}
			CheckCRC(batch) // must not panic
			sizes = append(sizes, len(batch))
			return nil
		})
		total := len(rest)
		for _, n := range sizes {
			total += n
		}
		if total != len(b) {
			t.Fatalf("batches and rest cover %d bytes of %d (err %v)", total, len(b), err)
		}
		// As on a connection that delivers the bytes in two reads, the
		// first half splits into a prefix of the same batches.
		var half []int
		Split(b[:len(b)/2], func(_ Header, batch []byte) error {
			half = append(half, len(batch))
			return nil
		})
		if len(half) > len(sizes) {
			t.Fatalf("first half has %d batches, the whole %d", len(half), len(sizes))
		}
		for i := range half {
			if half[i] != sizes[i] {
				t.Fatalf("batch %d: %d bytes in the first half, %d in the whole", i, half[i], sizes[i])
			}
		}
	})
}

// Raw accepts only data batches whose records keep their offsets and
// timestamps when produced again.
func TestHeaderRaw(t *testing.T) {
	ok := Header{Magic: 2, LastOffsetDelta: 4, Records: 5}
	cases := map[string]struct {
		mod  func(h *Header)
		want bool
	}{
		"plain":          {func(*Header) {}, true},
		"compressed":     {func(h *Header) { h.Attributes = 4 }, true},
		"transactional":  {func(h *Header) { h.Attributes = AttrTransactional }, true},
		"v1":             {func(h *Header) { h.Magic = 1 }, false},
		"control":        {func(h *Header) { h.Attributes = AttrControl }, false},
		"log append":     {func(h *Header) { h.Attributes = AttrLogAppendTime }, false},
		"delete horizon": {func(h *Header) { h.Attributes = AttrDeleteHorizon }, false},
		"gap":            {func(h *Header) { h.LastOffsetDelta = 9 }, false},
		"empty":          {func(h *Header) { h.Records, h.LastOffsetDelta = 0, -1 }, false},
	}
	for name, tc := range cases {
		h := ok
		tc.mod(&h)
		if got := h.Raw(); got != tc.want {
			t.Errorf("%s: Raw() = %v, want %v", name, got, tc.want)
		}
	}
}
