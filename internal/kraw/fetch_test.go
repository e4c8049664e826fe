package kraw

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
