package kraw

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/kafkatest"
)

// TestFindAndCommitOpenTransaction checks the mechanics of FindHanging and
// CommitHanging on kfake and on a real broker: a transaction left open
// (raw records in partition 0, none in partition 1) is found in partition
// 0 only, from its first offset, and CommitHanging's AddPartitionsToTxn and
// EndTxn commit it: read_committed reads its records.
//
// A truly hanging transaction (one its coordinator no longer tracks) cannot
// be made on purpose: both Kafka 4.3 and kfake add a partition a
// transactional batch is written to, and a real broker skips markers only
// for a partition without a leader. The lab's destination-broker SIGKILL
// test meets them for real (see hanging.go).
func TestFindAndCommitOpenTransaction(t *testing.T) {
	t.Run("kfake", func(t *testing.T) {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "hang"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		testFindAndCommit(t, c.ListenAddrs(), false)
	})
	t.Run("kafka", func(t *testing.T) {
		if testing.Short() {
			t.Skip("real Apache Kafka")
		}
		cs := kafkatest.Start(t, 1, kafkatest.Options{})
		testFindAndCommit(t, cs[0].Bootstrap(), true)
	})
}

func testFindAndCommit(t *testing.T, seeds []string, create bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const topic, txnID = "hang", "hanging-test"
	client := func(opts ...kgo.Opt) *kgo.Client {
		cl, err := kgo.NewClient(append(append(ClientOpts(), kgo.SeedBrokers(seeds...)), opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}
	adm := kadm.NewClient(client())
	if create {
		if _, err := adm.CreateTopic(ctx, 2, 1, nil, topic); err != nil {
			t.Fatal(err)
		}
	}
	cl := client(kgo.TransactionalID(txnID))
	id, _, err := cl.ProducerID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h, _, err := FindHanging(ctx, cl, id, []string{topic}); err != nil || len(h) != 0 {
		t.Fatalf("before any transaction: hanging %v, err %v", h, err)
	}

	p := NewTxnProducer(cl, txnID)
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	recs := make([]kgo.Record, 5)
	for i := range recs {
		recs[i] = kgo.Record{Value: fmt.Appendf(nil, "open-%d", i), Timestamp: time.Now()}
	}
	batch, err := BuildBatch(nil, recs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Produce(ctx, []PartitionBatches{{Topic: topic, Partition: 0, Batches: [][]byte{batch}}}); err != nil {
		t.Fatal(err)
	}
	hanging, skipped, err := FindHanging(ctx, cl, id, []string{topic, "no-such-topic"})
	if err != nil {
		t.Fatal(err)
	}
	if len(skipped) > 0 {
		t.Errorf("skipped %v", skipped)
	}
	if len(hanging) != 1 || hanging[0].Topic != topic || hanging[0].Partition != 0 || hanging[0].Start != 0 {
		t.Fatalf("open %v, want %s/0 from offset 0", hanging, topic)
	}
	if other, _, _ := FindHanging(ctx, cl, id+1, []string{topic}); len(other) != 0 {
		t.Errorf("another producer ID's open transactions: %v, want none", other)
	}
	if err := CommitHanging(ctx, cl, txnID, hanging); err != nil {
		t.Fatal(err)
	}

	rd := client(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	var got []string
	for len(got) < 5 && ctx.Err() == nil {
		rd.PollFetches(ctx).EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	if len(got) != 5 {
		t.Fatalf("read_committed read %d records, want 5", len(got))
	}
	for i, v := range got {
		if want := fmt.Sprintf("open-%d", i); v != want {
			t.Fatalf("read_committed record %d = %q, want %q (all: %q)", i, v, want, got)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		h, _, err := FindHanging(ctx, cl, id, []string{topic})
		if err == nil && len(h) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after CommitHanging: open %v, err %v", h, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
