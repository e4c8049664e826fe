package kraw

// Tests of parsing fetched partition data, without a cluster.

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/meridian-gw/meridian/internal/alloctest"
)

// parseCase is one case of TestParsePartition: parsePartition(from, the
// batches then tail, lso, aborted) returns batches with these Skip and
// From values, this next offset and stuck flag, and an error iff wantErr.
type parseCase struct {
	name    string
	from    int64
	lso     int64 // -1: none
	batches [][]byte
	tail    []byte // appended after the batches
	aborted []kmsg.FetchResponseTopicPartitionAbortedTransaction

	skips   []bool  // per returned batch
	froms   []int64 // per returned batch
	next    int64
	stuck   bool
	wantErr bool
}

// Producer IDs of the parse cases' batches.
const parsePIDA, parsePIDB, parsePIDC = 100, 200, 300

// parseData is a data batch of n test records at offset base from
// producer pid (-1: none).
func parseData(base, pid int64, attrs int16, n int) []byte {
	return encodeTestBatch(base, pid, attrs, testRecords(base, n)...)
}

// parseAborted lists aborted transactions as (producer ID, first offset)
// pairs.
func parseAborted(pairs ...int64) []kmsg.FetchResponseTopicPartitionAbortedTransaction {
	var out []kmsg.FetchResponseTopicPartitionAbortedTransaction
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, kmsg.FetchResponseTopicPartitionAbortedTransaction{ProducerID: pairs[i], FirstOffset: pairs[i+1]})
	}
	return out
}

func TestParsePartition(t *testing.T) {
	tests := slices.Concat(parseTransactionCases(), parseOffsetCases(), parseErrorCases())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkParse(t, tt) })
	}
}

// parseTransactionCases: aborted transactions are skipped, committed ones
// and control batches handled as the fetch's aborted list says.
func parseTransactionCases() []parseCase {
	const (
		pidA, pidB, pidC = parsePIDA, parsePIDB, parsePIDC
		txn              = AttrTransactional
	)
	data, aborted := parseData, parseAborted
	return []parseCase{{
		name: "aborted and committed transactions interleaved",
		lso:  -1,
		batches: [][]byte{
			data(0, pidA, txn, 2), // A's first transaction: aborted
			data(2, pidB, txn, 1), // B's transaction: committed
			data(3, pidC, 0, 1),   // idempotent, no transaction
			encodeTestControl(4, pidA, controlAbort),
			data(5, pidB, txn, 1),
			encodeTestControl(6, pidB, controlCommit),
			data(7, pidA, txn, 1), // A's second transaction: committed
			encodeTestControl(8, pidA, controlCommit),
		},
		aborted: aborted(pidA, 0),
		skips:   []bool{true, false, false, true, false, true, false, true},
		froms:   []int64{0, 2, 3, 4, 5, 6, 7, 8},
		next:    9,
	}, {
		name: "one producer aborted twice, list unsorted",
		lso:  -1,
		batches: [][]byte{
			data(0, pidA, txn, 1),
			encodeTestControl(1, pidA, controlAbort),
			data(2, pidA, txn, 1),
			encodeTestControl(3, pidA, controlAbort),
			data(4, pidA, txn, 1),
			encodeTestControl(5, pidA, controlCommit),
		},
		aborted: aborted(pidA, 2, pidA, 0),
		skips:   []bool{true, true, true, true, false, true},
		froms:   []int64{0, 1, 2, 3, 4, 5},
		next:    6,
	}, {
		name: "aborted transaction not reached yet",
		lso:  -1,
		batches: [][]byte{
			data(0, pidB, txn, 1),
			encodeTestControl(1, pidB, controlCommit),
		},
		aborted: aborted(pidB, 5),
		skips:   []bool{false, true},
		froms:   []int64{0, 1},
		next:    2,
	}, {
		name: "non-transactional batch of a producer with an aborted transaction is kept",
		lso:  -1,
		batches: [][]byte{
			data(0, pidA, txn, 1),
			data(1, pidA, 0, 1),
			encodeTestControl(2, pidA, controlAbort),
		},
		aborted: aborted(pidA, 0),
		skips:   []bool{true, false, true},
		froms:   []int64{0, 1, 2},
		next:    3,
	}, {
		name: "a commit marker does not end an aborted transaction",
		lso:  -1,
		batches: [][]byte{
			data(0, pidA, txn, 1),
			encodeTestControl(1, pidA, controlCommit),
			data(2, pidA, txn, 1),
			encodeTestControl(3, pidA, controlAbort),
		},
		aborted: aborted(pidA, 0),
		skips:   []bool{true, true, true, true},
		froms:   []int64{0, 1, 2, 3},
		next:    4,
	}, {
		name: "aborted batch straddling the fetch offset",
		from: 1,
		lso:  -1,
		batches: [][]byte{
			data(0, pidA, txn, 2),
			encodeTestControl(2, pidA, controlAbort),
		},
		aborted: aborted(pidA, 0),
		skips:   []bool{true, true},
		froms:   []int64{1, 2},
		next:    3,
	}}
}

// parseOffsetCases: where the returned batches start and end relative to
// the fetch offset, the last stable offset and partial data.
func parseOffsetCases() []parseCase {
	data := parseData
	full := data(0, -1, 0, 3)
	return []parseCase{{
		name:    "batch before the fetch offset dropped, next one straddles",
		from:    4,
		lso:     -1,
		batches: [][]byte{data(0, -1, 0, 3), data(3, -1, 0, 3), data(6, -1, 0, 1)},
		skips:   []bool{false, false},
		froms:   []int64{4, 6},
		next:    7,
	}, {
		name:    "compaction gap after the fetch offset",
		from:    2,
		lso:     -1,
		batches: [][]byte{data(5, -1, 0, 2)},
		skips:   []bool{false},
		froms:   []int64{5},
		next:    7,
	}, {
		name:    "batches at or past the last stable offset are left",
		lso:     2,
		batches: [][]byte{data(0, -1, 0, 1), data(1, -1, 0, 1), data(2, -1, 0, 1)},
		skips:   []bool{false, false},
		froms:   []int64{0, 1},
		next:    2,
	}, {
		name:    "partial trailing batch ignored",
		lso:     -1,
		batches: [][]byte{data(0, -1, 0, 2)},
		tail:    data(2, -1, 0, 2)[:40],
		skips:   []bool{false},
		froms:   []int64{0},
		next:    2,
	}, {
		name:  "partial first batch is stuck",
		lso:   -1,
		tail:  full[:len(full)-1],
		next:  0,
		stuck: true,
	}, {
		name:    "only batches below the fetch offset is stuck",
		from:    10,
		lso:     -1,
		batches: [][]byte{data(0, -1, 0, 3)},
		next:    10,
		stuck:   true,
	}, {
		name:    "batch with no records (compacted away) is skipped",
		lso:     -1,
		batches: [][]byte{encodeTestBatch(0, -1, 0), data(1, -1, 0, 1)},
		skips:   []bool{true, false},
		froms:   []int64{0, 1},
		next:    2,
	}, {
		name:    "v1 messages returned with a lower-bound From",
		from:    5,
		lso:     -1,
		batches: [][]byte{encodeTestMessageV1(5, "a", "b"), encodeTestMessageV1(6, "c", "d")},
		skips:   []bool{false, false},
		froms:   []int64{5, 6},
		next:    7,
	}}
}

// parseErrorCases: corrupt or unsupported batches stop the parse before
// them, with an error.
func parseErrorCases() []parseCase {
	const (
		pidA = parsePIDA
		txn  = AttrTransactional
	)
	data, aborted := parseData, parseAborted
	badCRC := func(b []byte) []byte {
		b = bytes.Clone(b)
		b[len(b)-1] ^= 1
		return b
	}
	compressedControl := func() []byte {
		b := encodeTestControl(1, pidA, controlAbort)
		b[offAttributes+1] |= 1 // gzip
		binary.BigEndian.PutUint32(b[offCRC:], crc32.Checksum(b[offAttributes:], crc32c))
		return b
	}
	return []parseCase{{
		name:    "bad CRC stops before the batch",
		lso:     -1,
		batches: [][]byte{data(0, -1, 0, 1), badCRC(data(1, -1, 0, 1))},
		skips:   []bool{false},
		froms:   []int64{0},
		next:    1,
		wantErr: true,
	}, {
		name:    "bad CRC first",
		lso:     -1,
		batches: [][]byte{badCRC(data(0, -1, 0, 1))},
		next:    0,
		wantErr: true,
	}, {
		name:    "compressed control batch",
		lso:     -1,
		batches: [][]byte{data(0, pidA, txn, 1), compressedControl()},
		aborted: aborted(pidA, 0),
		skips:   []bool{true},
		froms:   []int64{0},
		next:    1,
		wantErr: true,
	}, {
		name: "unknown magic",
		lso:  -1,
		batches: [][]byte{func() []byte {
			b := data(0, -1, 0, 1)
			b[offMagic] = 3
			return b
		}()},
		next:    0,
		wantErr: true,
	}}
}

// checkParse runs one parse case.
func checkParse(t *testing.T, tt parseCase) {
	t.Helper()
	in := append(bytes.Join(tt.batches, nil), tt.tail...)
	got := parsePartition(tt.from, in, tt.lso, tt.aborted)
	if (got.err != nil) != tt.wantErr {
		t.Errorf("err %v, want error %t", got.err, tt.wantErr)
	}
	if got.next != tt.next || got.stuck != tt.stuck {
		t.Errorf("next %d stuck %t, want %d %t", got.next, got.stuck, tt.next, tt.stuck)
	}
	var skips []bool
	var froms []int64
	for _, b := range got.batches {
		skips = append(skips, b.Skip)
		froms = append(froms, b.From)
		if h, err := ParseHeader(b.Bytes); err != nil || h != b.Header || len(b.Bytes) != h.Size() {
			t.Errorf("batch at %d: header %+v, parsed again %+v (%v), %d bytes", b.Header.BaseOffset, b.Header, h, err, len(b.Bytes))
		}
		if !slices.ContainsFunc(tt.batches, func(w []byte) bool { return bytes.Equal(w, b.Bytes) }) {
			t.Errorf("batch at %d: bytes are not one of the input batches", b.Header.BaseOffset)
		}
	}
	if !slices.Equal(skips, tt.skips) || !slices.Equal(froms, tt.froms) {
		t.Errorf("skips %v froms %v, want %v %v", skips, froms, tt.skips, tt.froms)
	}
}

func TestBatchRaw(t *testing.T) {
	h, err := ParseHeader(encodeTestBatch(10, 1, 0, testRecords(10, 3)...))
	if err != nil {
		t.Fatal(err)
	}
	ctl, _ := ParseHeader(encodeTestControl(13, 1, controlCommit))
	v1, _ := ParseHeader(encodeTestMessageV1(14, "k", "v"))
	tests := []struct {
		name string
		b    Batch
		want bool
	}{
		{"whole data batch", Batch{Header: h, From: 10}, true},
		{"straddling", Batch{Header: h, From: 11}, false},
		{"skipped", Batch{Header: h, From: 10, Skip: true}, false},
		{"control", Batch{Header: ctl, From: 13, Skip: true}, false},
		{"v1 message", Batch{Header: v1, From: 14}, false},
	}
	for _, tt := range tests {
		if got := tt.b.Raw(); got != tt.want {
			t.Errorf("%s: Raw() = %t, want %t", tt.name, got, tt.want)
		}
	}
}

func TestControlType(t *testing.T) {
	abort := encodeTestControl(0, 1, controlAbort)
	commit := encodeTestControl(0, 1, controlCommit)
	tests := []struct {
		name    string
		in      []byte
		want    int16
		wantErr bool
	}{
		{"abort", abort, controlAbort, false},
		{"commit", commit, controlCommit, false},
		{"header only", abort[:HeaderSize], -1, true},
		{"short", abort[:HeaderSize-1], -1, true},
		{"key cut", abort[:len(abort)-8], -1, true},
		{"short key", encodeTestBatch(0, 1, AttrControl, kmsg.Record{Key: []byte{0, 0, 0}}), -1, true},
	}
	for _, tt := range tests {
		got, err := controlType(tt.in)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("%s: got %d, %v; want %d, error %t", tt.name, got, err, tt.want, tt.wantErr)
		}
	}
}

// fixCRCs recomputes the CRC of every complete v2 batch in b, so that
// fuzzed inputs get past CheckCRC into the rest of parsePartition.
func fixCRCs(b []byte) {
	for len(b) >= HeaderSize {
		h, err := ParseHeader(b)
		if err != nil || h.Size() > len(b) {
			return
		}
		if h.Magic == 2 {
			binary.BigEndian.PutUint32(b[offCRC:], crc32.Checksum(b[offAttributes:h.Size()], crc32c))
		}
		b = b[h.Size():]
	}
}

func FuzzParsePartition(f *testing.F) {
	txnData := encodeTestBatch(0, 100, AttrTransactional, testRecords(0, 2)...)
	seed := bytes.Join([][]byte{
		txnData,
		encodeTestBatch(2, -1, 0, testRecords(2, 1)...),
		encodeTestControl(3, 100, controlAbort),
		encodeTestMessageV1(4, "k", "v"),
		encodeTestBatch(5, -1, 0),
	}, nil)
	f.Add(seed, int64(0), int64(-1), int64(100), int64(0))
	f.Add(seed, int64(1), int64(4), int64(100), int64(0))
	f.Add(seed[:len(seed)/2], int64(0), int64(-1), int64(7), int64(3))
	f.Add(txnData[:len(txnData)-1], int64(0), int64(-1), int64(-1), int64(0))
	f.Fuzz(func(t *testing.T, in []byte, from, lso, abortPID, abortFirst int64) {
		in = bytes.Clone(in)
		fixCRCs(in)
		aborted := []kmsg.FetchResponseTopicPartitionAbortedTransaction{{ProducerID: abortPID, FirstOffset: abortFirst}}
		var got parsedPartition
		alloctest.Check(t, "parsePartition", uint64(64<<10+64*len(in)), func() { got = parsePartition(from, in, lso, aborted) })
		if got.stuck && (len(got.batches) > 0 || got.err != nil) {
			t.Fatalf("stuck with %d batches, err %v", len(got.batches), got.err)
		}
		next := from
		for i, b := range got.batches {
			if b.From < next || b.Header.NextOffset() <= b.From {
				t.Fatalf("batch %d: from %d, next offset %d, after %d", i, b.From, b.Header.NextOffset(), next)
			}
			if lso >= 0 && b.Header.BaseOffset >= lso {
				t.Fatalf("batch %d at %d returned with last stable offset %d", i, b.Header.BaseOffset, lso)
			}
			if len(b.Bytes) != b.Header.Size() {
				t.Fatalf("batch %d: %d bytes, header says %d", i, len(b.Bytes), b.Header.Size())
			}
			next = b.Header.NextOffset()
		}
		if got.next != next {
			t.Fatalf("next %d, want %d", got.next, next)
		}
	})
}

func FuzzControlType(f *testing.F) {
	f.Add(encodeTestControl(0, 1, controlAbort))
	f.Add(encodeTestControl(0, 1, controlCommit))
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, err := controlType(b)
		if err != nil && typ != -1 {
			t.Fatalf("type %d with error %v", typ, err)
		}
	})
}
