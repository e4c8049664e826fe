package kraw

// Helpers of the fetch tests: a kfake cluster, producers, polling a
// Fetcher and checking what it returned against a kgo consumer.

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

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
