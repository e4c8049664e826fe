package kraw

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

////////////////////
// parsing, alone //
////////////////////

func TestParsePartition(t *testing.T) {
	const (
		pidA, pidB, pidC = 100, 200, 300
		txn              = AttrTransactional
	)
	data := func(base, pid int64, attrs int16, n int) []byte {
		return encodeTestBatch(base, pid, attrs, testRecords(base, n)...)
	}
	aborted := func(pairs ...int64) []kmsg.FetchResponseTopicPartitionAbortedTransaction {
		var out []kmsg.FetchResponseTopicPartitionAbortedTransaction
		for i := 0; i < len(pairs); i += 2 {
			out = append(out, kmsg.FetchResponseTopicPartitionAbortedTransaction{ProducerID: pairs[i], FirstOffset: pairs[i+1]})
		}
		return out
	}
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
	full := data(0, -1, 0, 3)

	tests := []struct {
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
	}{{
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
	}, {
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
	}, {
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
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
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
		})
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
		got := parsePartition(from, in, lso, aborted)
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

func TestClientOpts(t *testing.T) {
	cl, err := kgo.NewClient(ClientOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	vs, ok := cl.OptValue(kgo.MaxVersions).(*kversion.Versions)
	if !ok {
		t.Fatalf("MaxVersions is %T, want *kversion.Versions", cl.OptValue(kgo.MaxVersions))
	}
	for _, tt := range []struct {
		key  kmsg.Key
		want int16
	}{
		{kmsg.Fetch, 12},
		{kmsg.Produce, 11},
		{kmsg.EndTxn, 4},
		{kmsg.AddPartitionsToTxn, 3},
	} {
		if got, ok := vs.LookupMaxKeyVersion(tt.key.Int16()); !ok || got != tt.want {
			t.Errorf("%s: max version %d (present %t), want %d", tt.key.Name(), got, ok, tt.want)
		}
	}
	// Everything else stays as kgo's default has it.
	stable := kversion.Stable()
	if got, _ := vs.LookupMaxKeyVersion(kmsg.Metadata.Int16()); !stable.HasKey(kmsg.Metadata.Int16()) || got < 10 {
		t.Errorf("metadata max version %d, want the stable one", got)
	}
}

//////////////////////////
// fetching from kfake //
//////////////////////////

// logBuffer collects a fetcher's logs for a test to check.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testFetchLogger returns a logger into a buffer that the test log shows
// if the test fails.
func testFetchLogger(t *testing.T) (*slog.Logger, *logBuffer) {
	lb := new(logBuffer)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("fetcher log:\n%s", lb)
		}
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// newFetchTestCluster starts a three-broker cluster with the topics, and
// returns it with a client built with ClientOpts.
func newFetchTestCluster(t *testing.T, partitions int32, topics ...string) (*kfake.Cluster, *kgo.Client) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(partitions, topics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, newFetchTestClient(t, c)
}

func newFetchTestClient(t *testing.T, c *kfake.Cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append(append(ClientOpts(), kgo.SeedBrokers(c.ListenAddrs()...)), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func newTestFetcher(t *testing.T, cl *kgo.Client, o FetchOptions) *Fetcher {
	f := NewFetcher(cl, o)
	t.Cleanup(f.Close)
	return f
}

// testProducer returns a producer of snappy batches with manual
// partitioning.
func testProducer(t *testing.T, c *kfake.Cluster, opts ...kgo.Opt) *kgo.Client {
	return newFetchTestClient(t, c, append([]kgo.Opt{
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchCompression(kgo.SnappyCompression()),
	}, opts...)...)
}

// produceTest produces records synchronously and returns the offset after
// the last one in each partition.
func produceTest(t *testing.T, cl *kgo.Client, recs ...*kgo.Record) map[topicPartition]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ends := make(map[topicPartition]int64)
	for _, r := range cl.ProduceSync(ctx, recs...) {
		if r.Err != nil {
			t.Fatalf("produce: %v", r.Err)
		}
		k := topicPartition{r.Record.Topic, r.Record.Partition}
		ends[k] = max(ends[k], r.Record.Offset+1)
	}
	return ends
}

// testRecordsFor returns n records for a partition with random values
// that snappy compresses some, keys and headers.
func testRecordsFor(rng *rand.Rand, topic string, partition int32, n int) []*kgo.Record {
	recs := make([]*kgo.Record, n)
	for i := range recs {
		word := make([]byte, 10+rng.IntN(30))
		for j := range word {
			word[j] = byte('a' + rng.IntN(26))
		}
		v := bytes.Repeat(word, 2+rng.IntN(10))
		recs[i] = &kgo.Record{
			Topic:     topic,
			Partition: partition,
			Key:       fmt.Appendf(nil, "key-%d-%d", partition, rng.Uint32()),
			Value:     v,
			Headers:   []kgo.RecordHeader{{Key: "n", Value: fmt.Appendf(nil, "%d", i)}, {Key: "empty"}},
			Timestamp: time.UnixMilli(1_700_000_000_000 + rng.Int64N(1_000_000)),
		}
	}
	return recs
}

// fetched is what a test polled from a fetcher, by partition.
type fetched map[topicPartition][]PartitionFetch

func (got fetched) next(k topicPartition) int64 {
	if pfs := got[k]; len(pfs) > 0 {
		return pfs[len(pfs)-1].Next
	}
	return -1
}

// pollUntil polls f into got until every partition in ends has its Next
// at its end, checking each result as it comes.
func pollUntil(t *testing.T, f *Fetcher, got fetched, ends map[topicPartition]int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := func() bool {
		for k, end := range ends {
			if got.next(k) < end {
				return false
			}
		}
		return true
	}
	for !done() {
		pfs, err := f.Poll(ctx)
		if err != nil {
			var at []string
			for k, end := range ends {
				at = append(at, fmt.Sprintf("%s/%d at %d of %d", k.topic, k.partition, got.next(k), end))
			}
			t.Fatalf("Poll: %v (%s)", err, strings.Join(at, ", "))
		}
		seen := make(map[topicPartition]bool)
		for _, pf := range pfs {
			k := topicPartition{pf.Topic, pf.Partition}
			if seen[k] {
				t.Errorf("%s/%d twice in one Poll", k.topic, k.partition)
			}
			seen[k] = true
			checkPartitionFetch(t, pf, got.next(k))
			got[k] = append(got[k], pf)
		}
	}
}

// checkPartitionFetch checks the promises of PartitionFetch; prevNext is
// the partition's previous Next, or -1.
func checkPartitionFetch(t *testing.T, pf PartitionFetch, prevNext int64) {
	t.Helper()
	where := fmt.Sprintf("%s/%d from %d", pf.Topic, pf.Partition, pf.From)
	if prevNext >= 0 && pf.From != prevNext {
		t.Errorf("%s: previous Next was %d", where, prevNext)
	}
	if len(pf.Batches) == 0 {
		t.Fatalf("%s: no batches", where)
	}
	next := pf.From
	for i, b := range pf.Batches {
		h, err := ParseHeader(b.Bytes)
		if err != nil || h != b.Header || h.Size() != len(b.Bytes) {
			t.Errorf("%s: batch %d: header %+v, parsed %+v (%v), %d bytes", where, i, b.Header, h, err, len(b.Bytes))
		}
		if h.Magic == 2 {
			if err := CheckCRC(b.Bytes); err != nil {
				t.Errorf("%s: batch %d: %v", where, i, err)
			}
		}
		if b.From < next || h.NextOffset() <= b.From || (h.Magic == 2 && b.From < h.BaseOffset) {
			t.Errorf("%s: batch %d at %d..%d has From %d after offset %d", where, i, h.BaseOffset, h.NextOffset(), b.From, next)
		}
		if h.BaseOffset >= pf.LastStable {
			t.Errorf("%s: batch %d at %d, last stable offset %d", where, i, h.BaseOffset, pf.LastStable)
		}
		next = h.NextOffset()
	}
	if pf.Next != next {
		t.Errorf("%s: Next %d, last batch ends at %d", where, pf.Next, next)
	}
	if pf.Next > pf.LastStable || pf.LastStable > pf.HighWatermark || pf.LogStart > pf.From {
		t.Errorf("%s: Next %d, log start %d, last stable %d, high watermark %d", where, pf.Next, pf.LogStart, pf.LastStable, pf.HighWatermark)
	}
}

// decodeFetched decodes the batches not skipped, following Batch.From.
func decodeFetched(t *testing.T, k topicPartition, pfs []PartitionFetch) []*kgo.Record {
	t.Helper()
	var recs []*kgo.Record
	for _, pf := range pfs {
		for _, b := range pf.Batches {
			if !b.Skip {
				recs = append(recs, decodeTestBatches(t, k.topic, k.partition, b.From, b.Bytes)...)
			}
		}
	}
	return recs
}

// consumeWithKgo reads partitions with a kgo consumer from the offsets
// given until each reaches its end offset.
func consumeWithKgo(t *testing.T, c *kfake.Cluster, level kgo.IsolationLevel, start, ends map[topicPartition]int64) map[topicPartition][]*kgo.Record {
	t.Helper()
	parts := make(map[string]map[int32]kgo.Offset)
	for k, o := range start {
		if parts[k.topic] == nil {
			parts[k.topic] = make(map[int32]kgo.Offset)
		}
		parts[k.topic][k.partition] = kgo.NewOffset().At(o)
	}
	cl := newFetchTestClient(t, c, kgo.ConsumePartitions(parts), kgo.FetchIsolationLevel(level))
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := make(map[topicPartition][]*kgo.Record)
	done := func() bool {
		for k, end := range ends {
			if rs := got[k]; len(rs) == 0 || rs[len(rs)-1].Offset+1 < end {
				return false
			}
		}
		return true
	}
	for !done() {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("kgo consumer: %v", err)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("kgo consumer: %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			k := topicPartition{r.Topic, r.Partition}
			got[k] = append(got[k], r)
		})
	}
	return got
}

// diffRecords reports the first difference of got from want.
func diffRecords(t *testing.T, k topicPartition, got, want []*kgo.Record) {
	t.Helper()
	for i := range min(len(got), len(want)) {
		g, w := got[i], want[i]
		same := g.Offset == w.Offset && bytes.Equal(g.Key, w.Key) && bytes.Equal(g.Value, w.Value) &&
			g.Timestamp.UnixMilli() == w.Timestamp.UnixMilli() && len(g.Headers) == len(w.Headers)
		for j := 0; same && j < len(g.Headers); j++ {
			same = g.Headers[j].Key == w.Headers[j].Key && bytes.Equal(g.Headers[j].Value, w.Headers[j].Value)
		}
		if !same {
			t.Errorf("%s/%d: record %d: got offset %d key %q, want offset %d key %q (or values, headers, timestamps differ)",
				k.topic, k.partition, i, g.Offset, g.Key, w.Offset, w.Key)
			return
		}
	}
	if len(got) != len(want) {
		t.Errorf("%s/%d: got %d records, want %d", k.topic, k.partition, len(got), len(want))
	}
}

func TestFetchMatchesConsumer(t *testing.T) {
	const topic = "plain"
	c, cl := newFetchTestCluster(t, 3, topic)
	var fetchVersions sync.Map // versions of every fetch the cluster saw
	c.ControlKey(kmsg.Fetch.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		fetchVersions.Store(req.GetVersion(), true)
		return nil, nil, false
	})

	prod := testProducer(t, c)
	rng := rand.New(rand.NewPCG(1, 2))
	ends := make(map[topicPartition]int64)
	for round := range 6 {
		var recs []*kgo.Record
		for p := range int32(3) {
			recs = append(recs, testRecordsFor(rng, topic, p, 1+rng.IntN(25))...)
		}
		if round == 3 {
			recs = append(recs, testRecordsFor(rng, topic, 0, 1)...) // a batch of one
		}
		for k, end := range produceTest(t, prod, recs...) {
			ends[k] = max(ends[k], end)
		}
	}

	log, _ := testFetchLogger(t)
	// Limits below a batch's size: kfake returns the first batch whole
	// anyway (KIP-74), and a fetch holds one batch at a time.
	f := newTestFetcher(t, cl, FetchOptions{MaxBytes: 1024, MaxPartitionBytes: 512, MaxWait: 50 * time.Millisecond, Logger: log})
	start := make(map[topicPartition]int64)
	for p := range int32(3) {
		f.Add(topic, p, AtStart)
		start[topicPartition{topic, p}] = 0
	}
	got := make(fetched)
	pollUntil(t, f, got, ends)

	want := consumeWithKgo(t, c, kgo.ReadUncommitted(), start, ends)
	for k, end := range ends {
		pfs := got[k]
		if pfs[0].From != 0 {
			t.Errorf("%s/%d: first fetch from %d, want 0", k.topic, k.partition, pfs[0].From)
		}
		if last := pfs[len(pfs)-1]; last.Next != end || last.HighWatermark != end {
			t.Errorf("%s/%d: ends with Next %d, high watermark %d; want %d", k.topic, k.partition, last.Next, last.HighWatermark, end)
		}
		var batches, large int
		for _, pf := range pfs {
			for _, b := range pf.Batches {
				batches++
				if len(b.Bytes) > 512 {
					large++
				}
				if !b.Raw() || b.Header.Attributes&AttrCompressionMask != 2 {
					t.Errorf("%s/%d: batch at %d: raw %t, compression %d; want raw snappy",
						k.topic, k.partition, b.Header.BaseOffset, b.Raw(), b.Header.Attributes&AttrCompressionMask)
				}
			}
		}
		if batches < 6 || large == 0 {
			t.Errorf("%s/%d: %d batches, %d above the partition byte limit; want at least one per produce round, some above",
				k.topic, k.partition, batches, large)
		}
		diffRecords(t, k, decodeFetched(t, k, pfs), want[k])
	}
	var versions []int16
	fetchVersions.Range(func(v, _ any) bool {
		versions = append(versions, v.(int16))
		return true
	})
	if !slices.Equal(versions, []int16{12}) {
		t.Errorf("fetch versions %v, want only 12", versions)
	}
}

func TestFetchTransactions(t *testing.T) {
	const topic = "txn"
	c, cl := newFetchTestCluster(t, 2, topic)
	var addPartitions, maxEndTxn, maxTxnProduce sync.Map
	c.ControlKey(kmsg.AddPartitionsToTxn.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		addPartitions.Store(req.GetVersion(), true)
		return nil, nil, false
	})
	c.ControlKey(kmsg.EndTxn.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		maxEndTxn.Store(req.GetVersion(), true)
		return nil, nil, false
	})
	c.ControlKey(kmsg.Produce.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if req.(*kmsg.ProduceRequest).TransactionID != nil {
			maxTxnProduce.Store(req.GetVersion(), true)
		}
		return nil, nil, false
	})

	txn := testProducer(t, c, kgo.TransactionalID("kraw-fetch-test"))
	plain := testProducer(t, c)
	rng := rand.New(rand.NewPCG(3, 4))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var aborts int
	for i := range 9 {
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		produceTest(t, txn, append(testRecordsFor(rng, topic, 0, 1+rng.IntN(5)), testRecordsFor(rng, topic, 1, 1+rng.IntN(5))...)...)
		produceTest(t, plain, append(testRecordsFor(rng, topic, 0, 2), testRecordsFor(rng, topic, 1, 1)...)...)
		produceTest(t, txn, testRecordsFor(rng, topic, int32(i%2), 3)...)
		commit := kgo.TryCommit
		if i%3 == 1 {
			commit = kgo.TryAbort
			aborts++
		}
		if err := txn.EndTransaction(ctx, commit); err != nil {
			t.Fatal(err)
		}
	}
	// A last plain record in each partition: both readers stop there.
	ends := produceTest(t, plain, append(testRecordsFor(rng, topic, 0, 1), testRecordsFor(rng, topic, 1, 1)...)...)

	log, _ := testFetchLogger(t)
	f := newTestFetcher(t, cl, FetchOptions{MaxPartitionBytes: 1024, MaxWait: 50 * time.Millisecond, Logger: log})
	start := make(map[topicPartition]int64)
	for p := range int32(2) {
		f.Add(topic, p, AtStart)
		start[topicPartition{topic, p}] = 0
	}
	got := make(fetched)
	pollUntil(t, f, got, ends)
	want := consumeWithKgo(t, c, kgo.ReadCommitted(), start, ends)

	var abortedBatches, markers int
	for k, end := range ends {
		pfs := got[k]
		if last := pfs[len(pfs)-1]; last.Next != end || last.LastStable != end {
			t.Errorf("%s/%d: ends with Next %d, last stable %d; want %d", k.topic, k.partition, last.Next, last.LastStable, end)
		}
		for _, pf := range pfs {
			for _, b := range pf.Batches {
				switch {
				case b.Header.Control():
					markers++
					if !b.Skip {
						t.Errorf("%s/%d: marker at %d not skipped", k.topic, k.partition, b.Header.BaseOffset)
					}
				case b.Skip:
					abortedBatches++
					if !b.Header.Transactional() {
						t.Errorf("%s/%d: non-transactional batch at %d skipped", k.topic, k.partition, b.Header.BaseOffset)
					}
				}
			}
		}
		diffRecords(t, k, decodeFetched(t, k, pfs), want[k])
	}
	if markers != 2*9 {
		t.Errorf("%d markers, want %d (one per transaction and partition)", markers, 2*9)
	}
	if abortedBatches < 2*aborts {
		t.Errorf("%d aborted batches skipped, want at least %d", abortedBatches, 2*aborts)
	}

	// ClientOpts kept the producer on the pre-KIP-890 protocol.
	versions := func(m *sync.Map) (vs []int16) {
		m.Range(func(v, _ any) bool { vs = append(vs, v.(int16)); return true })
		slices.Sort(vs)
		return vs
	}
	if vs := versions(&addPartitions); len(vs) == 0 || vs[len(vs)-1] > 3 {
		t.Errorf("AddPartitionsToTxn versions %v, want some, none above 3", vs)
	}
	if vs := versions(&maxEndTxn); len(vs) == 0 || vs[len(vs)-1] > 4 {
		t.Errorf("EndTxn versions %v, want some, none above 4", vs)
	}
	if vs := versions(&maxTxnProduce); len(vs) == 0 || vs[len(vs)-1] > 11 {
		t.Errorf("transactional Produce versions %v, want some, none above 11", vs)
	}
}

func TestFetchStartInsideBatch(t *testing.T) {
	const topic = "inside"
	tests := []struct {
		start     int64
		straddles bool
	}{
		{5, true},
		{10, false},
		{19, true},
	}
	c, cl := newFetchTestCluster(t, 1, topic)
	prod := testProducer(t, c)
	rng := rand.New(rand.NewPCG(5, 6))
	produceTest(t, prod, testRecordsFor(rng, topic, 0, 10)...)
	ends := produceTest(t, prod, testRecordsFor(rng, topic, 0, 10)...)
	k := topicPartition{topic, 0}
	if ends[k] != 20 {
		t.Fatalf("produced up to %d, want 20", ends[k])
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.start), func(t *testing.T) {
			log, _ := testFetchLogger(t)
			f := newTestFetcher(t, cl, FetchOptions{MaxWait: 50 * time.Millisecond, Logger: log})
			f.Add(topic, 0, tt.start)
			got := make(fetched)
			pollUntil(t, f, got, ends)
			first := got[k][0]
			b := first.Batches[0]
			if first.From != tt.start || b.From != tt.start {
				t.Errorf("From %d, first batch From %d; want %d", first.From, b.From, tt.start)
			}
			if straddles := b.Header.BaseOffset < tt.start; straddles != tt.straddles || b.Raw() == tt.straddles {
				t.Errorf("first batch at %d: straddles %t, raw %t; want straddling %t", b.Header.BaseOffset, straddles, b.Raw(), tt.straddles)
			}
			recs := decodeFetched(t, k, got[k])
			if len(recs) == 0 || recs[0].Offset != tt.start {
				t.Fatalf("decoded %d records, want the first at %d", len(recs), tt.start)
			}
			want := consumeWithKgo(t, c, kgo.ReadCommitted(), map[topicPartition]int64{k: tt.start}, ends)
			diffRecords(t, k, recs, want[k])
		})
	}
}

func TestFetchOutOfRange(t *testing.T) {
	const topic = "range"
	c, cl := newFetchTestCluster(t, 1, topic)
	prod := testProducer(t, c)
	rng := rand.New(rand.NewPCG(7, 8))
	produceTest(t, prod, testRecordsFor(rng, topic, 0, 5)...)
	produceTest(t, prod, testRecordsFor(rng, topic, 0, 5)...)
	k := topicPartition{topic, 0}

	// Delete the first batch: the log starts at 5.
	del := kmsg.NewPtrDeleteRecordsRequest()
	del.TimeoutMillis = 5000
	dt := kmsg.NewDeleteRecordsRequestTopic()
	dt.Topic = topic
	dp := kmsg.NewDeleteRecordsRequestTopicPartition()
	dp.Offset = 5
	dt.Partitions = append(dt.Partitions, dp)
	del.Topics = append(del.Topics, dt)
	resp, err := del.RequestWith(context.Background(), cl)
	if err != nil {
		t.Fatal(err)
	}
	if p := resp.Topics[0].Partitions[0]; p.ErrorCode != 0 || p.LowWatermark != 5 {
		t.Fatalf("delete records: %v, low watermark %d; want 5", kerr.ErrorForCode(p.ErrorCode), p.LowWatermark)
	}

	const atLogEnd = -1 // where the log ends when the case starts
	logEnd := int64(10)
	tests := []struct {
		name       string
		add        int64
		resetToEnd bool
		from       int64 // where fetching starts
		warn       bool  // out of range logged
	}{
		{"past the end to start", 1_000_000, false, 5, true},
		{"before the start to start", 2, false, 5, true},
		{"past the end to end", 1_000_000, true, atLogEnd, true},
		{"at start", AtStart, false, 5, false},
		{"at end", AtEnd, false, atLogEnd, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, lb := testFetchLogger(t)
			f := newTestFetcher(t, cl, FetchOptions{MaxWait: 50 * time.Millisecond, ResetToEnd: tt.resetToEnd, Logger: log})
			f.Add(topic, 0, tt.add)
			ends := map[topicPartition]int64{k: logEnd}
			from := tt.from
			if from == atLogEnd {
				from = logEnd
				// Nothing to fetch until more is produced.
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				pfs, err := f.Poll(ctx)
				cancel()
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Poll at the end: %d results, %v; want a timeout", len(pfs), err)
				}
				ends = produceTest(t, prod, testRecordsFor(rng, topic, 0, 3)...)
				logEnd = ends[k]
			}
			got := make(fetched)
			pollUntil(t, f, got, ends)
			first := got[k][0]
			if first.From != from || first.Batches[0].Header.BaseOffset != from {
				t.Errorf("first fetch from %d, first batch at %d; want both %d", first.From, first.Batches[0].Header.BaseOffset, from)
			}
			if first.LogStart != 5 {
				t.Errorf("log start %d, want 5", first.LogStart)
			}
			warned := slices.ContainsFunc(strings.Split(lb.String(), "\n"), func(line string) bool {
				return strings.Contains(line, "level=WARN") && strings.Contains(line, "out of range") &&
					strings.Contains(line, fmt.Sprintf("offset=%d ", tt.add)) && strings.Contains(line, "topic=range partition=0")
			})
			if warned != tt.warn {
				t.Errorf("out of range warning naming offset %d logged: %t, want %t", tt.add, warned, tt.warn)
			}
		})
	}
}

func TestFetchLeaderMoves(t *testing.T) {
	const topic = "moving"
	c, cl := newFetchTestCluster(t, 2, topic)
	prod := testProducer(t, c)
	rng := rand.New(rand.NewPCG(9, 10))
	log, lb := testFetchLogger(t)
	f := newTestFetcher(t, cl, FetchOptions{MaxWait: 50 * time.Millisecond, Logger: log})
	start := make(map[topicPartition]int64)
	for p := range int32(2) {
		f.Add(topic, p, 0)
		start[topicPartition{topic, p}] = 0
	}
	got := make(fetched)
	var ends map[topicPartition]int64
	for round := range 4 {
		ends = produceTest(t, prod, append(testRecordsFor(rng, topic, 0, 5), testRecordsFor(rng, topic, 1, 5)...)...)
		pollUntil(t, f, got, ends)
		for p := range int32(2) {
			to := (c.LeaderFor(topic, p) + 1 + int32(round)%2) % 3
			if err := c.MoveTopicPartition(topic, p, to); err != nil {
				t.Fatal(err)
			}
		}
	}
	ends = produceTest(t, prod, append(testRecordsFor(rng, topic, 0, 5), testRecordsFor(rng, topic, 1, 5)...)...)
	pollUntil(t, f, got, ends)
	want := consumeWithKgo(t, c, kgo.ReadCommitted(), start, ends)
	for k := range ends {
		diffRecords(t, k, decodeFetched(t, k, got[k]), want[k])
	}
	if !strings.Contains(lb.String(), kerr.NotLeaderForPartition.Message) {
		t.Errorf("no %s logged: the leader moves were not noticed by a fetch", kerr.NotLeaderForPartition.Message)
	}
}

func TestFetchGrowsPartitionBytes(t *testing.T) {
	// A broker without KIP-74 cuts a batch at the partition's byte limit;
	// the fetcher must raise the limit until a whole batch comes back.
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "big"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl := newFetchTestClient(t, c)
	prod := testProducer(t, c)
	rng := rand.New(rand.NewPCG(13, 14))
	ends := produceTest(t, prod, testRecordsFor(rng, "big", 0, 40)...)

	// The one batch, as kfake serves it.
	req := kmsg.NewPtrFetchRequest()
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = "big"
	rt.Partitions = []kmsg.FetchRequestTopicPartition{kmsg.NewFetchRequestTopicPartition()}
	rt.Partitions[0].PartitionMaxBytes = 1 << 20
	req.Topics = []kmsg.FetchRequestTopic{rt}
	resp, err := req.RequestWith(context.Background(), cl.Broker(int(c.LeaderFor("big", 0))))
	if err != nil {
		t.Fatal(err)
	}
	batch := resp.Topics[0].Partitions[0].RecordBatches
	if h, err := ParseHeader(batch); err != nil || h.Size() != len(batch) || len(batch) <= 2048 {
		t.Fatalf("produced one batch of %d bytes (%v), want one above 2048", len(batch), err)
	}

	var mu sync.Mutex
	var limits []int32 // the partition byte limit of each fetch from 0
	c.ControlKey(kmsg.Fetch.Int16(), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kreq.(*kmsg.FetchRequest)
		limit := req.Topics[0].Partitions[0].PartitionMaxBytes
		if req.Topics[0].Partitions[0].FetchOffset != 0 {
			return nil, nil, false
		}
		mu.Lock()
		limits = append(limits, limit)
		mu.Unlock()
		if int(limit) >= len(batch) {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.FetchResponse)
		rt := kmsg.NewFetchResponseTopic()
		rt.Topic = "big"
		rp := kmsg.NewFetchResponseTopicPartition()
		rp.HighWatermark, rp.LastStableOffset, rp.LogStartOffset = 40, 40, 0
		rp.RecordBatches = batch[:limit]
		rt.Partitions = append(rt.Partitions, rp)
		resp.Topics = append(resp.Topics, rt)
		return resp, nil, true
	})

	log, _ := testFetchLogger(t)
	f := newTestFetcher(t, cl, FetchOptions{MaxPartitionBytes: 512, MaxWait: 50 * time.Millisecond, Logger: log})
	f.Add("big", 0, AtStart)
	got := make(fetched)
	pollUntil(t, f, got, ends)
	k := topicPartition{"big", 0}
	if pfs := got[k]; len(pfs) != 1 || len(pfs[0].Batches) != 1 || !bytes.Equal(pfs[0].Batches[0].Bytes, batch) {
		t.Errorf("got %d results, want the batch in one", len(pfs))
	}
	mu.Lock()
	defer mu.Unlock()
	var want []int32
	for l := int32(512); ; l *= 2 {
		want = append(want, l)
		if int(l) >= len(batch) {
			break
		}
	}
	if !slices.Equal(limits, want) {
		t.Errorf("partition byte limits %v, want %v", limits, want)
	}
	// Back at the configured limit once a whole batch came back.
	if _, err := f.Poll(ctxTimeout(t, 200*time.Millisecond)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Poll at the end: %v, want a timeout", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if got := f.parts[k].maxBytes; got != 512 {
		t.Errorf("partition byte limit %d after a whole batch came back, want 512", got)
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// fetcherGoroutines counts goroutines running code of the Fetcher.
func fetcherGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var count int
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "kraw.(*Fetcher)") && !strings.Contains(g, "kraw.fetcherGoroutines") {
			count++
		}
	}
	return count
}

func TestFetchAddWhilePollingAndClose(t *testing.T) {
	before := runtime.NumGoroutine()
	const topic = "adds"
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(3, topic))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(append(ClientOpts(), kgo.SeedBrokers(c.ListenAddrs()...))...)
	if err != nil {
		t.Fatal(err)
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(11, 12))
	var recs []*kgo.Record
	for p := range int32(3) {
		recs = append(recs, testRecordsFor(rng, topic, p, 3)...)
	}
	ends := produceTest(t, prod, recs...)

	log, _ := testFetchLogger(t)
	f := NewFetcher(cl, FetchOptions{MaxWait: 50 * time.Millisecond, Logger: log})
	type polled struct {
		pfs []PartitionFetch
		err error
	}
	poll := func(ctx context.Context) chan polled {
		ch := make(chan polled, 1)
		started := make(chan struct{})
		go func() {
			close(started)
			pfs, err := f.Poll(ctx)
			ch <- polled{pfs, err}
		}()
		<-started
		return ch
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Partitions added one at a time, each while a Poll waits.
	got := make(fetched)
	for p := range int32(3) {
		ch := poll(ctx)
		f.Add(topic, p, AtStart)
		r := <-ch
		if r.err != nil {
			t.Fatalf("Poll: %v", r.err)
		}
		for _, pf := range r.pfs {
			k := topicPartition{pf.Topic, pf.Partition}
			if k.partition > p {
				t.Errorf("partition %d fetched before it was added", k.partition)
			}
			checkPartitionFetch(t, pf, got.next(k))
			got[k] = append(got[k], pf)
		}
	}
	pollUntil(t, f, got, ends)
	f.Add(topic, 0, 1) // added twice: ignored

	// Close while a Poll waits for more.
	ch := poll(ctx)
	f.Close()
	select {
	case r := <-ch:
		if !errors.Is(r.err, ErrClosed) {
			t.Errorf("Poll during Close: %d results, %v; want ErrClosed", len(r.pfs), r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Poll still blocked after Close")
	}
	f.Close()
	f.Add(topic, 1, 0) // after Close: ignored
	if _, err := f.Poll(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Poll after Close: %v, want ErrClosed", err)
	}
	if n := fetcherGoroutines(); n != 0 {
		t.Errorf("%d fetcher goroutines left after Close", n)
	}

	// Nothing at all is left once the clients and the cluster close.
	prod.Close()
	cl.Close()
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines, %d before the test:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}
