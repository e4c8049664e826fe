package kread_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/kread"
)

// TestSettleWaitsForOpenTransactions: a transaction open on a partition
// holds Settle until it commits; one that stays open is reported as
// holding the partition back once within runs out; and Each then reads
// what that transaction committed.
func TestSettleWaitsForOpenTransactions(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "p"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
	cl, err := kgo.NewClient(append(opts, kgo.TransactionalID("settle"), kgo.DefaultProduceTopic("p"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	if held, err := kread.Settle(ctx, opts, []string{"p"}, time.Second); err != nil || len(held) != 0 {
		t.Fatalf("nothing open: held %v, err %v", held, err)
	}
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Partition: 1, Value: []byte{byte(i)}}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	held, err := kread.Settle(ctx, opts, []string{"p"}, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(held) != 1 || !strings.HasPrefix(held[0], "p/1: stable 0 < end 3") {
		t.Fatalf("open transaction: held %q, want p/1 stable 0 < end 3", held)
	}

	committed := make(chan time.Time, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		err := cl.EndTransaction(ctx, kgo.TryCommit)
		committed <- time.Now()
		if err != nil {
			t.Error(err)
		}
	}()
	held, err = kread.Settle(ctx, opts, []string{"p"}, 10*time.Second)
	settled := time.Now()
	if err != nil || len(held) != 0 {
		t.Fatalf("after the commit: held %v, err %v", held, err)
	}
	if at := <-committed; settled.Before(at.Add(-50 * time.Millisecond)) {
		t.Fatalf("Settle returned %v before the commit", at.Sub(settled))
	}
	var n int
	if err := kread.Each(ctx, opts, []string{"p"}, func(*kgo.Record) { n++ }); err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("read %d committed records, want 3", n)
	}
}
