package kraw

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// txnEnv is a three-broker kfake cluster with topics "src" (source data
// produced normally), "dst" (raw batches written in transactions) and
// "progress" (the transactions' own records).
type txnEnv struct {
	t   *testing.T
	c   *kfake.Cluster
	ctx context.Context
}

func newTxnEnv(t *testing.T) *txnEnv {
	t.Helper()
	t.Parallel()
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(3, "src", "dst"), kfake.SeedTopics(1, "progress"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return &txnEnv{t: t, c: c, ctx: ctx}
}

func (e *txnEnv) client(opts ...kgo.Opt) *kgo.Client {
	e.t.Helper()
	opts = append(append(ClientOpts(), kgo.SeedBrokers(e.c.ListenAddrs()...)), opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(cl.Close)
	return cl
}

// txnClient returns a transactional client and its raw producer.
func (e *txnEnv) txnClient(txnID string) (*kgo.Client, *TxnProducer) {
	cl := e.client(kgo.TransactionalID(txnID), kgo.DefaultProduceTopic("progress"))
	return cl, NewTxnProducer(cl, txnID)
}

// wantBatch is a batch to write and the records it holds.
type wantBatch struct {
	bytes []byte
	recs  []*kgo.Record
}

// built returns a batch BuildBatch made of n records named after tag.
func (e *txnEnv) built(tag string, n int, c kgo.Compressor) wantBatch {
	e.t.Helper()
	recs := make([]kgo.Record, n)
	t0 := time.UnixMilli(1_700_000_000_000)
	for i := range recs {
		recs[i] = kgo.Record{
			Key:       fmt.Appendf(nil, "%s-%d", tag, i),
			Value:     bytes.Repeat(fmt.Appendf(nil, "%s value %d ", tag, i), 10),
			Headers:   []kgo.RecordHeader{{Key: "tag", Value: []byte(tag)}, {Key: "nil", Value: nil}},
			Timestamp: t0.Add(time.Duration(i) * time.Second),
		}
	}
	// Some nil and empty keys and values.
	recs[0].Key = nil
	if n > 1 {
		recs[1].Key, recs[1].Value = []byte{}, []byte{}
	}
	b, err := BuildBatch(nil, recs, c)
	if err != nil {
		e.t.Fatal(err)
	}
	w := wantBatch{bytes: b}
	for i := range recs {
		w.recs = append(w.recs, &recs[i])
	}
	return w
}

// fetched produces records to src partition p with an ordinary snappy
// producer and returns them as the raw batches a fetch from the leader
// returns, from offset from.
func (e *txnEnv) fetched(tag string, p int32, from int64) []wantBatch {
	e.t.Helper()
	cl := e.client(kgo.ProducerBatchCompression(kgo.SnappyCompression()), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for round := range 3 {
		var recs []*kgo.Record
		for i := range 4 {
			recs = append(recs, &kgo.Record{
				Topic:     "src",
				Partition: p,
				Key:       fmt.Appendf(nil, "%s-%d-%d", tag, round, i),
				Value:     bytes.Repeat(fmt.Appendf(nil, "%s fetched %d %d ", tag, round, i), 10),
				Headers:   []kgo.RecordHeader{{Key: "src", Value: []byte(tag)}},
			})
		}
		if err := cl.ProduceSync(e.ctx, recs...).FirstErr(); err != nil {
			e.t.Fatal(err)
		}
	}

	req := kmsg.NewPtrFetchRequest()
	req.MaxWaitMillis = 100
	req.MaxBytes = 10 << 20
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = "src"
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition = p
	rp.FetchOffset = from
	rp.PartitionMaxBytes = 1 << 20
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(e.ctx, cl.Broker(int(e.c.LeaderFor("src", p))))
	if err != nil {
		e.t.Fatal(err)
	}
	got := resp.Topics[0].Partitions[0]
	if err := kerr.ErrorForCode(got.ErrorCode); err != nil {
		e.t.Fatal(err)
	}
	var out []wantBatch
	snappied := false
	rest, err := Split(got.RecordBatches, func(h Header, b []byte) error {
		if h.BaseOffset < from {
			return nil
		}
		snappied = snappied || h.Attributes&AttrCompressionMask == int16(kgo.CodecSnappy)
		recs, err := testDecompressor.Decode("src", p, b)
		if err != nil {
			return err
		}
		out = append(out, wantBatch{bytes: bytes.Clone(b), recs: recs})
		return nil
	})
	if err != nil || len(rest) > 0 || len(out) == 0 {
		e.t.Fatalf("split fetch: %v, %d bytes left, %d batches", err, len(rest), len(out))
	}
	if !snappied {
		e.t.Fatal("no fetched batch is snappy-compressed")
	}
	return out
}

// txn is one transaction's raw writes: batches per dst partition.
type txn map[int32][]wantBatch

// parts returns the Produce input of tx.
func (tx txn) parts() []PartitionBatches {
	var parts []PartitionBatches
	for p := range int32(3) {
		if bs := tx[p]; len(bs) > 0 {
			pb := PartitionBatches{Topic: "dst", Partition: p}
			for _, b := range bs {
				pb.Batches = append(pb.Batches, b.bytes)
			}
			parts = append(parts, pb)
		}
	}
	return parts
}

// run writes tx and a progress record in one transaction of cl, ending it
// with end, and returns the records it wrote per dst partition with their
// destination offsets.
func (e *txnEnv) run(cl *kgo.Client, p *TxnProducer, tx txn, progress string, end kgo.TransactionEndTry) map[int32][]*kgo.Record {
	e.t.Helper()
	if err := cl.BeginTransaction(); err != nil {
		e.t.Fatal(err)
	}
	parts := tx.parts()
	if err := p.Produce(e.ctx, parts); err != nil {
		e.t.Fatalf("produce: %v", err)
	}
	if err := cl.ProduceSync(e.ctx, kgo.StringRecord(progress)).FirstErr(); err != nil {
		e.t.Fatal(err)
	}
	if err := cl.Flush(e.ctx); err != nil {
		e.t.Fatal(err)
	}
	if err := p.EndTransaction(e.ctx, end); err != nil {
		e.t.Fatal(err)
	}
	return placed(e.t, tx, parts)
}

// placed checks the Base that Produce returned and returns each record of
// tx with the offset it must have at the destination.
func placed(t *testing.T, tx txn, parts []PartitionBatches) map[int32][]*kgo.Record {
	t.Helper()
	out := make(map[int32][]*kgo.Record)
	for _, pb := range parts {
		if len(pb.Base) != len(pb.Batches) {
			t.Fatalf("dst[%d]: %d bases for %d batches", pb.Partition, len(pb.Base), len(pb.Batches))
		}
		for i, b := range tx[pb.Partition] {
			if i > 0 && pb.Base[i] < pb.Base[i-1]+int64(len(tx[pb.Partition][i-1].recs)) {
				t.Errorf("dst[%d]: batch %d at %d overlaps batch %d at %d", pb.Partition, i, pb.Base[i], i-1, pb.Base[i-1])
			}
			for j, r := range b.recs {
				c := *r
				c.Offset = pb.Base[i] + int64(j)
				out[pb.Partition] = append(out[pb.Partition], &c)
			}
		}
	}
	return out
}

// readCommitted reads topic with read_committed until each partition p has
// want[p] records, then checks there are exactly those.
func (e *txnEnv) readCommitted(topic string, want map[int32][]*kgo.Record) {
	e.t.Helper()
	cl := e.client(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(100*time.Millisecond))
	got := make(map[int32][]*kgo.Record)
	done := func() bool {
		for p, w := range want {
			if len(got[p]) < len(w) {
				return false
			}
		}
		return true
	}
	for !done() {
		fs := cl.PollFetches(e.ctx)
		if err := e.ctx.Err(); err != nil {
			e.t.Fatalf("read %s: %v; got %d records of partition 0, want %d", topic, err, len(got[0]), len(want[0]))
		}
		fs.EachError(func(t string, p int32, err error) { e.t.Fatalf("fetch %s[%d]: %v", t, p, err) })
		fs.EachRecord(func(r *kgo.Record) { got[r.Partition] = append(got[r.Partition], r) })
	}
	// Anything else committed would have come before the last wanted
	// record of its partition, or with it; a short extra poll catches
	// records after it.
	ctx, cancel := context.WithTimeout(e.ctx, 300*time.Millisecond)
	defer cancel()
	cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { got[r.Partition] = append(got[r.Partition], r) })

	for p := range int32(3) {
		g, w := got[p], want[p]
		if len(g) != len(w) {
			e.t.Errorf("%s[%d]: read %d records, want %d", topic, p, len(g), len(w))
		}
		for i := range min(len(g), len(w)) {
			if d := sameRecord(g[i], w[i]); d != "" {
				e.t.Errorf("%s[%d] record %d: %s", topic, p, i, d)
			}
			if g[i].Offset != w[i].Offset {
				e.t.Errorf("%s[%d] record %d: offset %d, want %d", topic, p, i, g[i].Offset, w[i].Offset)
			}
		}
	}
}

func merge(dst, src map[int32][]*kgo.Record) {
	for p, rs := range src {
		dst[p] = append(dst[p], rs...)
	}
}

// progressRecords is what readCommitted wants of topic "progress".
func progressRecords(values ...string) map[int32][]*kgo.Record {
	var rs []*kgo.Record
	for _, v := range values {
		rs = append(rs, &kgo.Record{Value: []byte(v)})
	}
	return map[int32][]*kgo.Record{0: rs}
}

// readProgress checks the progress topic holds exactly values, in order.
func (e *txnEnv) readProgress(values ...string) {
	e.t.Helper()
	cl := e.client(kgo.ConsumeTopics("progress"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(100*time.Millisecond))
	var got []string
	for len(got) < len(values) {
		fs := cl.PollFetches(e.ctx)
		if err := e.ctx.Err(); err != nil {
			e.t.Fatalf("read progress: %v; got %q, want %q", err, got, values)
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	ctx, cancel := context.WithTimeout(e.ctx, 300*time.Millisecond)
	defer cancel()
	cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	if fmt.Sprint(got) != fmt.Sprint(values) {
		e.t.Errorf("progress %q, want %q", got, values)
	}
}

// TestTxnProducerCommit writes three committed transactions of raw batches
// (built uncompressed and snappy, and fetched from a normal producer's
// snappy batches) to three partitions, each with a kgo progress record, and
// reads every record back exactly once with its offset equal to Base+index.
func TestTxnProducerCommit(t *testing.T) {
	e := newTxnEnv(t)
	sn := snappyCompressor(t)
	cl, p := e.txnClient("commit")
	want := make(map[int32][]*kgo.Record)
	from := map[int32]int64{}
	for i := range 3 {
		tag := fmt.Sprintf("t%d", i)
		src := e.fetched(tag, int32(i), from[int32(i)])
		from[int32(i)] += 12
		tx := txn{
			0: {e.built(tag+"a", 3, nil), e.built(tag+"b", 5, sn)},
			1: src,
			2: append([]wantBatch{e.built(tag+"c", 1, sn)}, e.fetched(tag+"d", 2, from[2])...),
		}
		from[2] += 12
		merge(want, e.run(cl, p, tx, "progress "+tag, kgo.TryCommit))
	}
	e.readCommitted("dst", want)
	e.readProgress("progress t0", "progress t1", "progress t2")
}

// TestTxnProducerAbort aborts a transaction after raw produces: none of it
// is visible to read_committed, and the next transaction, with sequences
// continuing after the aborted batches, commits.
func TestTxnProducerAbort(t *testing.T) {
	e := newTxnEnv(t)
	cl, p := e.txnClient("abort")
	want := make(map[int32][]*kgo.Record)
	merge(want, e.run(cl, p, txn{0: {e.built("a", 2, nil)}, 1: {e.built("b", 3, nil)}}, "one", kgo.TryCommit))
	e.run(cl, p, txn{0: {e.built("x", 4, nil), e.built("y", 1, nil)}, 1: {e.built("z", 2, nil)}}, "aborted", kgo.TryAbort)
	seqBefore := p.seqs[partKey{"dst", 0}]
	if seqBefore != 2+4+1 {
		t.Errorf("dst[0] next sequence %d after 7 records, want 7", seqBefore)
	}
	tx := txn{0: {e.built("c", 2, nil)}, 1: {e.built("d", 1, nil)}, 2: {e.built("e", 1, nil)}}
	merge(want, e.run(cl, p, tx, "three", kgo.TryCommit))
	if h, _ := ParseHeader(tx[0][0].bytes); h.BaseSequence != seqBefore {
		t.Errorf("dst[0] batch after the abort has sequence %d, want %d", h.BaseSequence, seqBefore)
	}
	e.readCommitted("dst", want)
	e.readProgress("one", "three")
}

// TestTxnProducerFenced starts a second client with the same transactional
// ID: the first producer's next Produce fails with a fencing error and every
// later one fails too; the second starts at sequence 0 and commits.
func TestTxnProducerFenced(t *testing.T) {
	e := newTxnEnv(t)
	old, oldP := e.txnClient("fenced")
	want := make(map[int32][]*kgo.Record)
	merge(want, e.run(old, oldP, txn{0: {e.built("a", 3, nil)}}, "old", kgo.TryCommit))
	oldID, oldEpoch, _ := old.ProducerID(e.ctx)

	cl, p := e.txnClient("fenced")
	id, epoch, err := cl.ProducerID(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if id == oldID && epoch <= oldEpoch {
		t.Fatalf("new client has producer %d epoch %d, old had epoch %d", id, epoch, oldEpoch)
	}

	if err := old.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	err = oldP.Produce(e.ctx, txn{0: {e.built("fenced", 2, nil)}}.parts())
	if !errors.Is(err, kerr.ProducerFenced) && !errors.Is(err, kerr.InvalidProducerEpoch) {
		t.Fatalf("fenced produce: %v, want PRODUCER_FENCED or INVALID_PRODUCER_EPOCH", err)
	}
	t.Logf("fenced produce: %v", err)
	if err2 := oldP.Produce(e.ctx, txn{1: {e.built("again", 1, nil)}}.parts()); !errors.Is(err2, kerr.ProducerFenced) && !errors.Is(err2, kerr.InvalidProducerEpoch) {
		t.Errorf("produce after the failure: %v, want the first error again", err2)
	}
	_ = oldP.EndTransaction(e.ctx, kgo.TryAbort) // fails: fenced

	tx := txn{0: {e.built("b", 2, nil), e.built("c", 2, nil)}, 1: {e.built("d", 1, nil)}}
	merge(want, e.run(cl, p, tx, "new", kgo.TryCommit))
	for i, wantSeq := range []int32{0, 2} {
		if h, _ := ParseHeader(tx[0][i].bytes); h.ProducerID != id || h.ProducerEpoch != epoch || h.BaseSequence != wantSeq {
			t.Errorf("new producer's dst[0] batch %d: producer %d epoch %d sequence %d, want %d %d %d",
				i, h.ProducerID, h.ProducerEpoch, h.BaseSequence, id, epoch, wantSeq)
		}
	}
	e.readCommitted("dst", want)
	e.readProgress("old", "new")
}

// TestTxnProducerTooLarge writes a batch larger than the topic's
// max.message.bytes: Produce fails with a *ProduceError naming the
// partition and batch, wrapping MESSAGE_TOO_LARGE; a new client writes the
// rest without it.
func TestTxnProducerTooLarge(t *testing.T) {
	e := newTxnEnv(t)
	if err := e.c.CreateTopic("small", 2, map[string]string{"max.message.bytes": "2000"}); err != nil {
		t.Fatal(err)
	}
	small0, big, small1 := e.built("s0", 2, nil), e.built("big", 30, nil), e.built("s1", 2, nil)
	if len(big.bytes) <= 2000 {
		t.Fatalf("big batch has only %d bytes", len(big.bytes))
	}
	cl, p := e.txnClient("large")
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	parts := []PartitionBatches{
		{Topic: "small", Partition: 0, Batches: [][]byte{small0.bytes, big.bytes}},
		{Topic: "small", Partition: 1, Batches: [][]byte{small1.bytes}},
	}
	err := p.Produce(e.ctx, parts)
	var pe *ProduceError
	if !errors.As(err, &pe) {
		t.Fatalf("produce: %v, want a *ProduceError", err)
	}
	if pe.Topic != "small" || pe.Partition != 0 || pe.Batch != 1 || !errors.Is(err, kerr.MessageTooLarge) {
		t.Fatalf("produce: %#v (%v), want small[0] batch 1 MESSAGE_TOO_LARGE", pe, err)
	}
	if err := p.Produce(e.ctx, parts[1:]); !errors.Is(err, kerr.MessageTooLarge) {
		t.Errorf("produce after the failure: %v, want the first error again", err)
	}
	if err := p.EndTransaction(e.ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
	cl.Close()

	// The caller dead-letters the big batch and retries with a new
	// client: the aborted small batches are not visible, the new ones are.
	cl, p = e.txnClient("large")
	tx := map[int32][]wantBatch{0: {e.built("s0", 2, nil)}, 1: {e.built("s1", 2, nil)}}
	parts = []PartitionBatches{
		{Topic: "small", Partition: 0, Batches: [][]byte{tx[0][0].bytes}},
		{Topic: "small", Partition: 1, Batches: [][]byte{tx[1][0].bytes}},
	}
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := p.Produce(e.ctx, parts); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(e.ctx, kgo.StringRecord("retry")).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := p.EndTransaction(e.ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	e.readCommitted("small", placed(t, tx, parts))
}

// TestTxnProducerRetries makes the brokers answer REQUEST_TIMED_OUT after
// writing a batch (the resend is deduplicated), NOT_LEADER_FOR_PARTITION
// before writing, and moves a leader the client's metadata still points
// at: every record lands once at the offsets Produce returns.
func TestTxnProducerRetries(t *testing.T) {
	e := newTxnEnv(t)
	cl, p := e.txnClient("retries")
	want := make(map[int32][]*kgo.Record)
	merge(want, e.run(cl, p, txn{0: {e.built("a", 1, nil)}, 1: {e.built("b", 1, nil)}, 2: {e.built("c", 1, nil)}}, "one", kgo.TryCommit))

	produce := []kmsg.Key{kmsg.Produce}
	timedOut := e.c.Fault(kfake.Fault{Keys: produce, Topic: "dst", Partitions: []int32{0}, Err: kerr.RequestTimedOut, Count: 2})
	notLeader := e.c.Fault(kfake.Fault{Keys: produce, Topic: "dst", Partitions: []int32{1}, Err: kerr.NotLeaderForPartition, Count: 2})
	leader := e.c.LeaderFor("dst", 2)
	if err := e.c.MoveTopicPartition("dst", 2, (leader+1)%3); err != nil {
		t.Fatal(err)
	}
	tx := txn{
		0: {e.built("d", 2, nil), e.built("e", 3, nil)},
		1: {e.built("f", 2, nil), e.built("g", 1, nil)},
		2: {e.built("h", 4, nil), e.built("i", 1, nil)},
	}
	merge(want, e.run(cl, p, tx, "two", kgo.TryCommit))
	if n := timedOut.Hits(); n != 2 {
		t.Errorf("REQUEST_TIMED_OUT fault hit %d times, want 2", n)
	}
	if n := notLeader.Hits(); n != 2 {
		t.Errorf("NOT_LEADER_FOR_PARTITION fault hit %d times, want 2", n)
	}
	e.readCommitted("dst", want)
	e.readProgress("one", "two")
}

// TestTxnProducerInvalidBatch passes batches Produce cannot write raw:
// it fails with a *ProduceError before sending anything and stays usable.
func TestTxnProducerInvalidBatch(t *testing.T) {
	e := newTxnEnv(t)
	cl, p := e.txnClient("invalid")
	good := e.built("good", 2, nil)
	control := e.built("control", 1, nil)
	control.bytes[offAttributes+1] |= AttrControl
	tests := []struct {
		name  string
		parts []PartitionBatches
		batch int
	}{
		{"truncated", []PartitionBatches{{Topic: "dst", Partition: 0, Batches: [][]byte{good.bytes, good.bytes[:40]}}}, 1},
		{"trailing bytes", []PartitionBatches{{Topic: "dst", Partition: 0, Batches: [][]byte{append(bytes.Clone(good.bytes), 0)}}}, 0},
		{"control", []PartitionBatches{{Topic: "dst", Partition: 1, Batches: [][]byte{control.bytes}}}, 0},
		{"partition twice", []PartitionBatches{{Topic: "dst", Partition: 2}, {Topic: "dst", Partition: 2}}, 0},
	}
	for _, tt := range tests {
		var pe *ProduceError
		if err := p.Produce(e.ctx, tt.parts); !errors.As(err, &pe) || pe.Batch != tt.batch || pe.Topic != "dst" {
			t.Errorf("%s: %v, want a *ProduceError for batch %d", tt.name, err, tt.batch)
		}
	}
	want := e.run(cl, p, txn{0: {good}}, "ok", kgo.TryCommit)
	e.readCommitted("dst", want)
}

func TestProduceAddSeq(t *testing.T) {
	tests := []struct{ seq, n, want int32 }{
		{0, 1, 1},
		{5, 10, 15},
		{math.MaxInt32 - 1, 1, math.MaxInt32},
		{math.MaxInt32, 1, 0},
		{math.MaxInt32 - 2, 5, 2},
	}
	for _, tt := range tests {
		if got := addSeq(tt.seq, tt.n); got != tt.want {
			t.Errorf("addSeq(%d, %d) = %d, want %d", tt.seq, tt.n, got, tt.want)
		}
	}
}
