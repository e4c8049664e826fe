package verify

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestCompareFilteredExpectsOnlyWhatTheFilterKeeps mirrors by hand the
// even records of topic src into dst (one partition each) and compares
// with a filter that keeps the even ones.
func TestCompareFilteredExpectsOnlyWhatTheFilterKeeps(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "src", "dst"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	opts := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ts := time.UnixMilli(1_000_000)
	for i := range 10 {
		even := []byte{byte('0' + i%2)}
		r := &kgo.Record{Topic: "src", Key: []byte{byte(i)}, Value: even, Timestamp: ts}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 && i != 8 { // record 8 is lost
			m := &kgo.Record{Topic: "dst", Key: r.Key, Value: r.Value, Timestamp: ts}
			if err := cl.ProduceSync(ctx, m).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	keep := func(r *kgo.Record) bool { return r.Value[0] == '0' }
	rep, err := CompareFiltered(ctx, opts, opts, []string{"src"}, func(string) string { return "dst" }, keep)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Produced != 10 || rep.Filtered != 5 || rep.Mirrored != 4 || rep.Lost != 1 || rep.Unexpected != 0 || rep.Duplicated != 0 {
		t.Errorf("got %s, want produced=10 filtered=5 mirrored=4 lost=1", rep)
	}
}
