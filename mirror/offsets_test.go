package mirror_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/kread"
	"github.com/meridian-gw/meridian/internal/verify"
	"github.com/meridian-gw/meridian/mirror"
	"github.com/meridian-gw/meridian/mirror/dr"
	"github.com/meridian-gw/meridian/mirror/progress"
	"github.com/meridian-gw/meridian/routing"
)

// produceWithAborts writes committed and aborted transactions and plain
// records, so the source partitions have offsets that hold no visible record
// (aborted records, transaction markers).
func produceWithAborts(t *testing.T, f *fixture, rounds int) {
	t.Helper()
	txn, err := kgo.NewClient(kgo.SeedBrokers(f.src.ListenAddrs()...), kgo.TransactionalID("source-app"))
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()
	plain, err := kgo.NewClient(kgo.SeedBrokers(f.src.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	ctx := context.Background()
	for r := 0; r < rounds; r++ {
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		var recs []*kgo.Record
		for i := 0; i < 7; i++ {
			recs = append(recs, &kgo.Record{Topic: f.topics[0], Key: []byte(fmt.Sprint(i)), Value: fmt.Appendf(nil, "txn %d rec %d", r, i)})
		}
		if err := txn.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		commit := kgo.TryCommit
		if r%3 == 1 {
			commit = kgo.TryAbort // aborted: hidden from read_committed readers
		}
		if err := txn.EndTransaction(ctx, commit); err != nil {
			t.Fatal(err)
		}
		if err := plain.ProduceSync(ctx, &kgo.Record{Topic: f.topics[0], Key: []byte("p"), Value: fmt.Appendf(nil, "plain %d", r)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

type rec struct {
	off int64
	fp  uint64
}

func readPartitions(t *testing.T, opts []kgo.Opt, topic string) map[int32][]rec {
	t.Helper()
	out := map[int32][]rec{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kread.Each(ctx, opts, []string{topic}, func(r *kgo.Record) {
		out[r.Partition] = append(out[r.Partition], rec{r.Offset, verify.Fingerprint(r)})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkTranslationExact translates every offset of every partition of a
// mirrored topic, up to its end, and checks it against both clusters read
// back: the destination record at the translated offset is the first source
// record at or after it, and exactly the source records before it precede it
// at the destination. It returns how many offsets fell in gaps (no record).
func checkTranslationExact(t *testing.T, f *fixture, topic string) (gaps int) {
	t.Helper()
	src := []kgo.Opt{kgo.SeedBrokers(f.src.ListenAddrs()...)}
	dst := []kgo.Opt{kgo.SeedBrokers(f.dst.ListenAddrs()...)}
	sp := readPartitions(t, src, topic)
	dp := readPartitions(t, dst, topic)
	ctx := context.Background()
	scl, err := kgo.NewClient(src...)
	if err != nil {
		t.Fatal(err)
	}
	defer scl.Close()
	m, err := progress.LoadOffsetMap(ctx, dst, "r:west/kafka")
	if err != nil {
		t.Fatal(err)
	}
	ends, err := kadm.NewClient(scl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	for p, srcRecs := range sp {
		end := ends[topic][p].Offset
		dstAt := map[int64]uint64{}
		for _, r := range dp[p] {
			dstAt[r.off] = r.fp
		}
		for o := int64(0); o <= end; o++ {
			tr := m.Translate(topic, p, o)
			next := -1
			for i, r := range srcRecs {
				if r.off >= o {
					next = i
					break
				}
			}
			if next < 0 {
				if tr.Status != progress.CaughtUp {
					t.Errorf("p%d offset %d (end of source): status %s, want %s", p, o, tr.Status, progress.CaughtUp)
				}
				if last := dp[p][len(dp[p])-1].off; tr.Dest <= last {
					t.Errorf("p%d offset %d: dest %d would re-read dest record %d", p, o, tr.Dest, last)
				}
				continue
			}
			if srcRecs[next].off != o {
				gaps++
			}
			if tr.Status != progress.Exact || dstAt[tr.Dest] != srcRecs[next].fp {
				t.Fatalf("%s p%d offset %d: translated to %d (%s), which is not source record %d", topic, p, o, tr.Dest, tr.Status, srcRecs[next].off)
			}
			before := 0
			for _, r := range dp[p] {
				if r.off < tr.Dest {
					before++
				}
			}
			if before != next {
				t.Fatalf("%s p%d offset %d: %d destination records precede %d, want %d", topic, p, o, before, tr.Dest, next)
			}
		}
	}
	return gaps
}

func TestOffsetTranslationIsExactForEverySourceOffset(t *testing.T) {
	f := newFixture(t, []string{"t.orders"}, 2)
	produceWithAborts(t, f, 12)
	f.gateway(t, "gw", 0)
	f.gateway(t, "ge", 0)
	src := []kgo.Opt{kgo.SeedBrokers(f.src.ListenAddrs()...)}
	dst := []kgo.Opt{kgo.SeedBrokers(f.dst.ListenAddrs()...)}
	sp := readPartitions(t, src, "t.orders")
	var committed int64
	for _, rs := range sp {
		committed += int64(len(rs))
	}
	checkExact(t, f.waitMirrored(t, committed, 30*time.Second), committed)

	if gaps := checkTranslationExact(t, f, "t.orders"); gaps == 0 {
		t.Fatal("no source offset fell in a gap: the test did not exercise aborted transactions")
	}
	ctx := context.Background()
	scl, err := kgo.NewClient(src...)
	if err != nil {
		t.Fatal(err)
	}
	defer scl.Close()
	m, err := progress.LoadOffsetMap(ctx, dst, "r:west/kafka")
	if err != nil {
		t.Fatal(err)
	}
	ends, err := kadm.NewClient(scl).ListEndOffsets(ctx, "t.orders")
	if err != nil {
		t.Fatal(err)
	}
	dp := readPartitions(t, dst, "t.orders")
	ahead := m.Translate("t.orders", 0, ends["t.orders"][0].Offset+5)
	if ahead.Status != progress.Ahead || ahead.Behind != 5 {
		t.Errorf("offset past the mirror: %+v, want status %s behind 5", ahead, progress.Ahead)
	}

	// A consumer group at the source, translated by group name.
	adm := kadm.NewClient(scl)
	os := kadm.Offsets{}
	os.Add(kadm.Offset{Topic: "t.orders", Partition: 0, At: sp[0][3].off})
	os.Add(kadm.Offset{Topic: "t.orders", Partition: 1, At: 0})
	if err := adm.CommitAllOffsets(ctx, "billing", os); err != nil {
		t.Fatal(err)
	}
	table, err := routing.Compile(f.topo, "gw")
	if err != nil {
		t.Fatal(err)
	}
	got, err := dr.TranslateGroup(ctx, table.In[0], src, dst, "billing")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Partition != 0 || got[0].Dest != m.Translate("t.orders", 0, sp[0][3].off).Dest || got[1].Dest != dp[1][0].off {
		t.Errorf("TranslateGroup = %+v", got)
	}
}

// Compaction leaves gaps between and inside source batches; a passthrough
// link decodes the batches with gaps inside and forwards the others.
func TestOffsetTranslationAcrossCompactedSourceGaps(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			f := newFixture(t, nil, 1, m.mods...)
			var c batchCounter
			f.wrapListener = c.wrap
			ctx := context.Background()
			// Manual flushing: each group below is one batch however
			// loaded the machine (with linger 0 a busy client may send
			// the first record alone, and batches then have no gaps inside).
			cl, err := kgo.NewClient(kgo.SeedBrokers(f.src.ListenAddrs()...), kgo.ManualFlushing())
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			compact := "compact"
			if _, err := kadm.NewClient(cl).CreateTopic(ctx, 2, 1, map[string]*string{"cleanup.policy": &compact}, "t.state"); err != nil {
				t.Fatal(err)
			}
			// Keys updated many times, in many batches of one to five
			// records: compaction leaves gaps between and inside them.
			for i := 0; i < 600; {
				var recs []*kgo.Record
				for j := 0; j < 1+i%5 && i < 600; j++ {
					recs = append(recs, &kgo.Record{Topic: "t.state", Partition: int32(i/5) % 2, Key: []byte(fmt.Sprint("device-", i%23)), Value: []byte(fmt.Sprint("state ", i))})
					i++
				}
				var perr error
				var mu sync.Mutex
				for _, r := range recs {
					cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
						mu.Lock()
						perr = errors.Join(perr, err)
						mu.Unlock()
					})
				}
				if err := cl.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				if perr != nil {
					t.Fatal(perr)
				}
			}
			f.src.Compact()
			f.topics = []string{"t.state"}
			visible := int64(0)
			for _, recs := range readPartitions(t, []kgo.Opt{kgo.SeedBrokers(f.src.ListenAddrs()...)}, "t.state") {
				visible += int64(len(recs))
			}
			if visible >= 600 {
				t.Fatalf("compaction removed nothing (%d records visible)", visible)
			}
			f.gateway(t, "gw", 0)
			f.gateway(t, "ge", 0)
			checkExact(t, f.waitMirrored(t, visible, 30*time.Second), visible)
			if gaps := checkTranslationExact(t, f, "t.state"); gaps == 0 {
				t.Fatal("no offset fell in a compaction gap")
			}
			checkForms(t, m.name, &c)
			if m.name == "passthrough" && c.records.Load() == 0 {
				t.Fatal("no batch with gaps inside was decoded")
			}
		})
	}
}

// progressRecords counts the records of the progress topic by kind
// ("progress", "segment", "tombstone", "fence").
func progressRecords(t *testing.T, dst []kgo.Opt) map[string]int {
	t.Helper()
	out := map[string]int{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kread.Each(ctx, dst, []string{mirror.ProgressTopic}, func(r *kgo.Record) {
		if r.Value == nil {
			out["tombstone"]++
			return
		}
		var v struct{ Kind string }
		if err := json.Unmarshal(r.Value, &v); err != nil {
			t.Errorf("progress record at %d/%d: %v", r.Partition, r.Offset, err)
		}
		if v.Kind == "" {
			v.Kind = "progress"
		}
		out[v.Kind]++
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestOffsetMapSurvivesCompactionAndPrunesToRetention mirrors in many small
// transactions, so every partition's offset map seals segments; compacts the
// progress topic (only the latest record per key survives) and checks that
// translation is still exact for every source offset; then deletes the head
// of a destination partition, as retention would, and checks that the
// segments covering it are tombstoned and dropped while every remaining
// destination record still translates exactly.
func ptr[T any](v T) *T { return &v }

func TestOffsetMapSurvivesCompactionAndPrunesToRetention(t *testing.T) {
	f := newFixture(t, nil, 1)
	f.tuning = mirror.Tuning{TailRanges: 4, PruneEvery: 300 * time.Millisecond}
	ctx := context.Background()
	src := []kgo.Opt{kgo.SeedBrokers(f.src.ListenAddrs()...)}
	dst := []kgo.Opt{kgo.SeedBrokers(f.dst.ListenAddrs()...)}
	// The test records carry 2023 timestamps: keep them from time-based
	// retention, which kfake applies when it compacts.
	scl, err := kgo.NewClient(src...)
	if err != nil {
		t.Fatal(err)
	}
	defer scl.Close()
	if _, err := kadm.NewClient(scl).CreateTopic(ctx, 2, 1, map[string]*string{"retention.ms": ptr("-1")}, "t.log"); err != nil {
		t.Fatal(err)
	}
	f.topics = []string{"t.log"}
	f.gateway(t, "gw", 0)
	f.gateway(t, "ge", 0)
	produced := 0
	round := func(n int) {
		for i := 0; i < n; i++ {
			f.produce(t, 6, produced)
			produced += 6
			f.waitMirrored(t, int64(produced), 30*time.Second) // one or more transactions per round
		}
	}
	round(30)
	checkExact(t, f.waitMirrored(t, int64(produced), 30*time.Second), int64(produced))

	checkTranslationExact(t, f, "t.log")
	before := progressRecords(t, dst)
	if before["segment"] < 4 {
		t.Fatalf("progress topic %v: want several sealed segments", before)
	}
	f.dst.Compact()
	after := progressRecords(t, dst)
	t.Logf("progress topic before compaction %v, after %v", before, after)
	if after["progress"] != 2 || after["segment"] != before["segment"] {
		t.Errorf("after compaction %v: want one progress record per partition (2) and every segment (%d)", after, before["segment"])
	}
	checkTranslationExact(t, f, "t.log")

	// Retention deletes the first half of partition 0 at the destination.
	dp := readPartitions(t, dst, "t.log")
	cut := dp[0][len(dp[0])/2].off
	cl, err := kgo.NewClient(dst...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	del := kadm.Offsets{}
	del.Add(kadm.Offset{Topic: "t.log", Partition: 0, At: cut})
	if _, err := kadm.NewClient(cl).DeleteRecords(ctx, del); err != nil {
		t.Fatal(err)
	}
	full, err := progress.LoadOffsetMap(ctx, dst, "r:west/kafka")
	if err != nil {
		t.Fatal(err)
	}
	_, rangesBefore, _ := full.Stats()
	// The sinks prune at their next transactions.
	deadline := time.Now().Add(30 * time.Second)
	for progressRecords(t, dst)["tombstone"] == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no segment was tombstoned after the destination's head was deleted")
		}
		// More transactions, which prune (the destination now misses the
		// deleted records, so a read-back count cannot tell when they land).
		f.produce(t, 6, produced)
		produced += 6
		time.Sleep(350 * time.Millisecond)
	}
	f.dst.Compact()
	pruned, err := progress.LoadOffsetMap(ctx, dst, "r:west/kafka")
	if err != nil {
		t.Fatal(err)
	}
	parts, rangesAfter, bytes := pruned.Stats()
	t.Logf("offset map: %d ranges before pruning, %d after (%d partitions, about %d bytes)", rangesBefore, rangesAfter, parts, bytes)
	if rangesAfter >= rangesBefore {
		t.Errorf("pruning kept %d ranges of %d", rangesAfter, rangesBefore)
	}
	// Every record left at the destination is still the exact translation
	// of its source record.
	sp := readPartitions(t, src, "t.log")
	dp = readPartitions(t, dst, "t.log")
	for p, drecs := range dp {
		bySrc := map[uint64]int64{}
		for _, r := range sp[p] {
			bySrc[r.fp] = r.off
		}
		for _, r := range drecs {
			so, ok := bySrc[r.fp]
			if !ok {
				t.Fatalf("p%d: destination record %d has no source record", p, r.off)
			}
			if tr := pruned.Translate("t.log", p, so); tr.Status != progress.Exact || tr.Dest != r.off {
				t.Fatalf("p%d: source offset %d translates to %d (%s), want %d", p, so, tr.Dest, tr.Status, r.off)
			}
		}
	}
}
