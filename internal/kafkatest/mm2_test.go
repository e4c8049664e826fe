package kafkatest_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/kafkatest"
)

func TestMM2Config(t *testing.T) {
	cfg := kafkatest.MM2Config(kafkatest.MM2Options{Source: []string{"127.0.0.1:1"}, Target: []string{"127.0.0.1:2"},
		Topics: `orders\..*`, Config: map[string]string{"tasks.max": "2"}})
	for k, want := range map[string]string{
		"clusters": "a, b", "a.bootstrap.servers": "127.0.0.1:1", "b.bootstrap.servers": "127.0.0.1:2",
		"a->b.enabled": "true", "b->a.enabled": "false", "a->b.topics": `orders\..*`, "a->b.groups": ".*",
		"sync.group.offsets.enabled": "true", "replication.factor": "1", "tasks.max": "2",
	} {
		if got := cfg[k]; got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}

// TestMM2 runs real MirrorMaker 2 between two real clusters: 1,000 records
// reach a.mm2.t, and a source group's commit is synced to the target.
func TestMM2(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two brokers and MirrorMaker 2 (about 30 s)")
	}
	cs := kafkatest.Start(t, 2, kafkatest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src, dst := cs[0].Client(t), cs[1].Client(t)
	if _, err := kadm.NewClient(src).CreateTopic(ctx, 2, 1, nil, "mm2.t"); err != nil {
		t.Fatal(err)
	}
	var recs []*kgo.Record
	for i := range 1000 {
		recs = append(recs, &kgo.Record{Topic: "mm2.t", Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "v%d", i)})
	}
	if err := src.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// A group that consumed everything at the source.
	sadm := kadm.NewClient(src)
	ends, err := sadm.ListEndOffsets(ctx, "mm2.t")
	if err != nil {
		t.Fatal(err)
	}
	offs := kadm.Offsets{}
	ends.Each(func(o kadm.ListedOffset) { offs.AddOffset(o.Topic, o.Partition, o.Offset, -1) })
	if _, err := sadm.CommitOffsets(ctx, "mm2-g", offs); err != nil {
		t.Fatal(err)
	}

	began := time.Now()
	mm, err := kafkatest.StartMM2(kafkatest.MM2Options{Source: cs[0].Bootstrap(), Target: cs[1].Bootstrap(), Topics: `mm2\..*`,
		Dir: mm2Dir(t), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("mm2.log:\n%s", mm.Tail(40))
		}
		if err := mm.Kill(); err != nil {
			t.Error(err)
		}
	})
	dadm := kadm.NewClient(dst)
	var got, synced int64
	var firstGot, firstSync time.Duration
	for ctx.Err() == nil {
		if got == 1000 && firstGot == 0 {
			firstGot = time.Since(began)
		}
		if synced == 1000 && firstSync == 0 {
			firstSync = time.Since(began)
		}
		if e, err := dadm.ListEndOffsets(ctx, "a.mm2.t"); err == nil {
			got = 0
			e.Each(func(o kadm.ListedOffset) { got += max(0, o.Offset) })
		}
		if o, err := dadm.FetchOffsets(ctx, "mm2-g"); err == nil {
			synced = 0
			o.Each(func(o kadm.OffsetResponse) {
				if o.Topic == "a.mm2.t" {
					synced += max(0, o.At)
				}
			})
		}
		if got == 1000 && synced == 1000 {
			break
		}
		select {
		case <-mm.Exited():
			t.Fatal("MirrorMaker 2 exited")
		case <-time.After(200 * time.Millisecond):
		}
	}
	if got != 1000 || synced != 1000 {
		t.Fatalf("after %v: %d records at the target, group offsets synced to %d; want 1000 and 1000", time.Since(began).Round(time.Second), got, synced)
	}
	t.Logf("MirrorMaker 2 (pid %d), from its start: all 1000 records at the target after %v, the group's offsets synced after %v",
		mm.PID(), firstGot.Round(100*time.Millisecond), time.Since(began).Round(100*time.Millisecond))
	if strings.Contains(mm.Tail(200), " ERROR ") {
		t.Logf("mm2.log has errors:\n%s", mm.Tail(40))
	}
}

func mm2Dir(t *testing.T) string {
	if d := os.Getenv("MM2_TEST_DIR"); d != "" {
		return d
	}
	return t.TempDir()
}
