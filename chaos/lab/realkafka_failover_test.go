package lab_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/chaos/lab"
	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/internal/kafkatest"
	"github.com/meridian-gw/meridian/internal/kread"
	"github.com/meridian-gw/meridian/mirror/dr"
	"github.com/meridian-gw/meridian/routing"
)

// The failover scenario against real brokers, in two shapes: a planned
// failover in record mode and an unplanned one (the link cut, records the
// mirror never got) in passthrough mode, each followed by a failback.
//
// The source holds a plain topic with aborted transactions between its
// committed ones (gaps in the offsets), and a compacted topic the broker's
// log cleaner has compacted before the mirror starts (more gaps). Consumer
// groups sit at lags 0, 1,000 and 100,000; one more sits on an offset the
// cleaner removed. After the failover a consumer at the new primary reads
// from each group's offsets there: it must read nothing the group had read
// (re-read) and miss nothing it had not (skipped). The report's RPO must
// equal what a read-back finds missing, and the old primary, back on the
// link and still written to, must write nothing to the new primary.
const (
	foTopic      = "fo.t"
	foCompacted  = "fo.c"
	foParts      = 4
	foPerPart    = 26_000 // 104,000 records: a group can lag 100,000
	foCompParts  = 2
	foCompRounds = 8
	foCompKeys   = 20
)

var foLags = []int64{0, 1_000, 100_000}

func TestRealKafkaFailover(t *testing.T) {
	for _, c := range []struct {
		name        string
		passthrough bool
		unplanned   bool
	}{{"planned/records", false, false}, {"unplanned/passthrough", true, true}} {
		t.Run(c.name, func(t *testing.T) { testRealFailover(t, c.passthrough, c.unplanned) })
	}
}

func testRealFailover(t *testing.T, passthrough, unplanned bool) {
	if testing.Short() {
		t.Skip("real Apache Kafka")
	}
	began := time.Now()
	// The source compacts quickly; the destination does not compact at all,
	// so that what a consumer misses there is the mirror's doing.
	src := kafkatest.Start(t, 1, kafkatest.Options{Config: map[string]string{
		"log.cleaner.backoff.ms": "200"}})[0]
	dst := kafkatest.Start(t, 1, kafkatest.Options{Config: map[string]string{"log.cleaner.enable": "false"}})[0]
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	srcOpts, dstOpts := []kgo.Opt{kgo.SeedBrokers(src.Addr())}, []kgo.Opt{kgo.SeedBrokers(dst.Addr())}

	fillFailoverSource(ctx, t, src.Addr())
	l := newLab(t, lab.Options{Topics: []string{}, Profile: "lan", Passthrough: passthrough,
		EdgeBootstrap: src.Bootstrap(), HQBootstrap: dst.Bootstrap(),
		Routes: []config.Route{{Name: "fo", From: "edge/kafka", To: []string{"hq/kafka"}, StartAt: "earliest", Discover: time.Second,
			Topics: config.TopicFilter{Include: []string{`^fo\.`}}, Groups: &config.GroupFilter{Include: []string{`^g-`}}}}})
	startGateways(t, l)
	topics := []string{foTopic, foCompacted}
	srcRecs := readIDs(ctx, t, srcOpts, topics)
	total := int64(0)
	for _, rs := range srcRecs {
		total += int64(len(rs))
	}
	waitExactTopics(ctx, t, l, topics, total, 3*time.Minute)
	t.Logf("mirrored %d records in %v", total, time.Since(began).Round(100*time.Millisecond))

	// The groups consume at the source: each has read all but lag records
	// of the plain topic, and half the compacted topic up to a record the
	// cleaner removed (it commits the offset after the last record it read).
	committed := commitFailoverGroups(ctx, t, srcOpts, srcRecs)
	time.Sleep(2 * time.Second) // the gateway syncs them too, before the failover

	var lost int64
	if unplanned {
		// The link is cut; the primary keeps taking records the mirror never gets.
		l.Proxy.SetBlackout(true)
		lost = 2_000
		produceIDs(ctx, t, srcOpts, foTopic, "cut", int(lost))
	}
	o := failoverOptions(t, l, srcOpts, dstOpts)
	if unplanned {
		o.Drain, o.Stall = 5*time.Second, time.Second
	}
	rep, err := dr.Failover(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("failover in %.2f s: %q", rep.Seconds, rep.Steps)
	if !rep.Fenced || !rep.RPOExact || rep.Drained == unplanned {
		t.Fatalf("failover report %+v: want fenced, exact RPO, drained=%v", rep, !unplanned)
	}
	// RPO: what the report says is at risk is what a read-back finds missing.
	missing := missingAtDest(ctx, t, srcOpts, dstOpts, topics)
	if rep.RPORecords != missing || missing != lost {
		t.Fatalf("RPO %d records; the read-back finds %d missing; %d were produced behind the cut", rep.RPORecords, missing, lost)
	}
	if len(rep.Groups) != len(committed) {
		t.Fatalf("failover moved %d groups, want %d: %+v", len(rep.Groups), len(committed), rep.Groups)
	}
	for _, g := range slices.Sorted(maps.Keys(committed)) {
		reread, skipped, none := consumeFromGroup(ctx, t, dstOpts, g, topics, srcRecs, committed[g])
		t.Logf("group %s at the new primary: %d re-read, %d skipped, %d partitions without an offset", g, reread, skipped, none)
		if reread != 0 || skipped != 0 || none != 0 {
			t.Errorf("group %s: %d re-read, %d skipped, %d partitions without an offset at the new primary; want 0, 0, 0", g, reread, skipped, none)
		}
	}

	// The old primary comes back (the link returns) and is still written
	// to: the fenced leg writes nothing more to the new primary.
	atDest := countRecords(ctx, t, dstOpts, topics)
	if unplanned {
		l.Proxy.SetBlackout(false)
	}
	produceIDs(ctx, t, srcOpts, foTopic, "stale", 1_000)
	time.Sleep(3 * time.Second)
	if n := countRecords(ctx, t, dstOpts, topics); n != atDest {
		t.Fatalf("the fenced old primary wrote to the new one: %d records there, %d at the failover", n, atDest)
	}

	testRealFailback(ctx, t, l, o, srcOpts, dstOpts, lost+1_000)
	t.Logf("%s: %v in all", t.Name(), time.Since(began).Round(100*time.Millisecond))
}

// testRealFailback: the new primary takes writes and a group reads some of
// them; the failback copies them to the old primary, moves the group back
// to the copy of its next record, keeps the old primary's stragglers, and
// mirroring resumes with only what is produced after it.
func testRealFailback(ctx context.Context, t *testing.T, l *lab.Lab, o dr.FailoverOptions, srcOpts, dstOpts []kgo.Opt, stragglers int64) {
	const native = 500
	produceIDs(ctx, t, dstOpts, foTopic, "dr", native)
	atDest := readIDs(ctx, t, dstOpts, []string{foTopic})
	// g-back has read, at DR, everything but the last 10 records DR wrote
	// on each partition.
	back := kadm.Offsets{}
	want := map[int32]string{} // partition → the ID the group reads next
	for k, rs := range atDest {
		drOnly := slices.DeleteFunc(slices.Clone(rs), func(r idRec) bool { return !strings.HasPrefix(r.id, "dr/") })
		if len(drOnly) < 11 {
			t.Fatalf("partition %d got %d of DR's records; want more than 10", k.part, len(drOnly))
		}
		next := drOnly[len(drOnly)-10]
		back.Add(kadm.Offset{Topic: foTopic, Partition: k.part, At: next.off, LeaderEpoch: -1})
		want[k.part] = next.id
	}
	dcl, err := kgo.NewClient(dstOpts...)
	if err != nil {
		t.Fatal(err)
	}
	defer dcl.Close()
	if err := kadm.NewClient(dcl).CommitAllOffsets(ctx, "g-back", back); err != nil {
		t.Fatal(err)
	}

	rep, err := dr.Failback(ctx, dr.FailbackOptions{Leg: o.Leg, Src: srcOpts, Dst: dstOpts})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("failback in %.2f s: %q", rep.Seconds, rep.Steps)
	if int64(len(rep.Stragglers)) != stragglers {
		t.Errorf("failback lists %d stragglers, want the %d the new primary never got", len(rep.Stragglers), stragglers)
	}
	var resynced int64
	for _, n := range rep.Resynced {
		resynced += n
	}
	if resynced != native {
		t.Errorf("failback copied %d records back, want %d", resynced, native)
	}
	// The copies at the old primary, in DR's order per partition, and the
	// group resumes at the copy of the record it reads next.
	atSrc := readIDs(ctx, t, srcOpts, []string{foTopic})
	scl, err := kgo.NewClient(srcOpts...)
	if err != nil {
		t.Fatal(err)
	}
	defer scl.Close()
	offs, err := kadm.NewClient(scl).FetchOffsets(ctx, "g-back")
	if err != nil {
		t.Fatal(err)
	}
	for k, rs := range atDest {
		var drAtDest, drAtSrc []string
		for _, r := range rs {
			if strings.HasPrefix(r.id, "dr/") {
				drAtDest = append(drAtDest, r.id)
			}
		}
		at := map[int64]string{}
		for _, r := range atSrc[k] {
			at[r.off] = r.id
			if strings.HasPrefix(r.id, "dr/") {
				drAtSrc = append(drAtSrc, r.id)
			}
		}
		if !slices.Equal(drAtSrc, drAtDest) {
			t.Errorf("partition %d: the old primary holds %d of DR's records, want the %d DR holds, in its order", k.part, len(drAtSrc), len(drAtDest))
		}
		x, ok := offs.Lookup(foTopic, k.part)
		if !ok || at[x.At] != want[k.part] {
			t.Errorf("g-back p%d at the old primary = %v (record %q), want the copy of %q", k.part, x.At, at[x.At], want[k.part])
		}
	}

	// Mirroring resumes: only the records produced from now on reach DR,
	// once each; neither the stragglers nor the copies are sent again.
	before := countRecords(ctx, t, dstOpts, []string{foTopic})
	const after = 300
	produceIDs(ctx, t, srcOpts, foTopic, "after", after)
	deadline := time.Now().Add(time.Minute)
	for {
		n := countRecords(ctx, t, dstOpts, []string{foTopic})
		if n >= before+after || time.Now().After(deadline) {
			time.Sleep(2 * time.Second) // anything more would show now
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	seen := map[string]int{}
	var other int
	for _, rs := range readIDs(ctx, t, dstOpts, []string{foTopic}) {
		for _, r := range rs {
			switch {
			case strings.HasPrefix(r.id, "after/"):
				seen[r.id]++
			case strings.HasPrefix(r.id, "stale/"), strings.HasPrefix(r.id, "cut/"):
				other++
			}
		}
	}
	dups := 0
	for _, n := range seen {
		dups += n - 1
	}
	if len(seen) != after || dups != 0 || other != 0 {
		t.Fatalf("after the failback DR got %d of the %d new records (%d duplicates) and %d stragglers; want %d, 0, 0", len(seen), after, dups, other, after)
	}
	if n := countRecords(ctx, t, dstOpts, []string{foTopic}); n != before+after {
		t.Fatalf("DR holds %d records of %s, want %d", n, foTopic, before+after)
	}
}

// fillFailoverSource creates the topics and writes them: the plain topic in
// transactions of 1,000 records per partition, every fifth followed by an
// aborted one of 50; the compacted topic in rounds 300 ms apart (each
// rolls a segment, which the cleaner compacts), until the cleaner has
// removed records.
func fillFailoverSource(ctx context.Context, t *testing.T, addr string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, foParts, 1, nil, foTopic); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CreateTopic(ctx, foCompParts, 1, map[string]*string{"cleanup.policy": ptr("compact"),
		"segment.ms": ptr("100"), "min.cleanable.dirty.ratio": ptr("0.01"), "min.compaction.lag.ms": ptr("0"),
		"delete.retention.ms": ptr("100")}, foCompacted); err != nil {
		t.Fatal(err)
	}
	opts := []kgo.Opt{kgo.SeedBrokers(addr), kgo.TransactionalID("fo-filler"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5 * time.Millisecond)}
	tx, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	val := strings.Repeat("v", 80)
	txn := func(commit bool, recs []*kgo.Record) {
		if err := tx.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := tx.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := tx.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	for chunk := range foPerPart / 1000 {
		var recs []*kgo.Record
		for p := range int32(foParts) {
			for i := range 1000 {
				seq := chunk*1000 + i
				recs = append(recs, &kgo.Record{Topic: foTopic, Partition: p, Key: fmt.Appendf(nil, "k%d", seq%100),
					Value: []byte(fmt.Sprintf("src/%d/%d/%s", p, seq, val))})
			}
		}
		txn(true, recs)
		if chunk%5 == 4 {
			var aborted []*kgo.Record
			for p := range int32(foParts) {
				for i := range 50 {
					aborted = append(aborted, &kgo.Record{Topic: foTopic, Partition: p, Value: []byte(fmt.Sprintf("aborted/%d/%d/%d", p, chunk, i))})
				}
			}
			txn(false, aborted)
		}
	}
	// The compacted topic, written without transactions.
	pcl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer pcl.Close()
	produced := 0
	for round := range foCompRounds {
		var recs []*kgo.Record
		for p := range int32(foCompParts) {
			for i := range 100 {
				seq := round*100 + i
				recs = append(recs, &kgo.Record{Topic: foCompacted, Partition: p, Key: fmt.Appendf(nil, "c%d", seq%foCompKeys),
					Value: []byte(fmt.Sprintf("csrc/%d/%d/c", p, seq))})
			}
		}
		if err := pcl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		produced += len(recs)
		time.Sleep(300 * time.Millisecond)
	}
	// Until the cleaner has run and stays put for a second; a last record
	// rolls the segment the rounds ended in.
	if err := pcl.ProduceSync(ctx, &kgo.Record{Topic: foCompacted, Partition: 0, Key: []byte("c-last"), Value: []byte("csrc/0/roll/c")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	produced++
	srcOpts := []kgo.Opt{kgo.SeedBrokers(addr)}
	deadline := time.Now().Add(30 * time.Second)
	last, stable := -1, time.Now()
	for {
		n := int(countRecords(ctx, t, srcOpts, []string{foCompacted}))
		if n != last {
			last, stable = n, time.Now()
		}
		if n < produced && time.Since(stable) > time.Second {
			t.Logf("the cleaner left %d of %d records of %s", n, produced, foCompacted)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log cleaner left %d of %d records of %s after 30 s", n, produced, foCompacted)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// idRec is a record by its ID (the value up to its last '/': "src/p/seq"
// for the filler's records) and its offset.
type idRec struct {
	id  string
	off int64
}

type topicPart struct {
	topic string
	part  int32
}

func recID(v []byte) string {
	s := string(v)
	if i := strings.LastIndexByte(s, '/'); i > 0 {
		return s[:i]
	}
	return s
}

// readIDs reads topics (read_committed) and returns their records' IDs and
// offsets per partition, in offset order.
func readIDs(ctx context.Context, t *testing.T, opts []kgo.Opt, topics []string) map[topicPart][]idRec {
	t.Helper()
	out, err := tryReadIDs(ctx, opts, topics)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func tryReadIDs(ctx context.Context, opts []kgo.Opt, topics []string) (map[topicPart][]idRec, error) {
	out := map[topicPart][]idRec{}
	err := kread.Each(ctx, opts, topics, func(r *kgo.Record) {
		k := topicPart{r.Topic, r.Partition}
		out[k] = append(out[k], idRec{recID(r.Value), r.Offset})
	})
	return out, err
}

func countRecords(ctx context.Context, t *testing.T, opts []kgo.Opt, topics []string) int64 {
	t.Helper()
	var n int64
	for _, rs := range readIDs(ctx, t, opts, topics) {
		n += int64(len(rs))
	}
	return n
}

// produceIDs writes n records to topic (round robin over its partitions)
// with IDs "<prefix>/<partition>/<i>".
func produceIDs(ctx context.Context, t *testing.T, opts []kgo.Opt, topic, prefix string, n int) {
	t.Helper()
	cl, err := kgo.NewClient(append(slices.Clone(opts), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for i := range n {
		p := int32(i % foParts)
		recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Key: fmt.Appendf(nil, "k%d", i%100), Value: []byte(fmt.Sprintf("%s/%d/%d/x", prefix, p, i))})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce %d records to %s: %v", n, topic, err)
	}
}

// waitExactTopics waits until the destination holds want records of topics,
// then requires them to be exactly the source's, partition by partition.
func waitExactTopics(ctx context.Context, t *testing.T, l *lab.Lab, topics []string, want int64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var n int64
		recs, err := tryReadIDs(ctx, l.HQOpts(), topics) // an error until the topics exist
		for _, rs := range recs {
			n += int64(len(rs))
		}
		if err == nil && n >= want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("destination holds %d of %d records after %v (%v)", n, want, within, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	srcRecs, dstRecs := readIDs(ctx, t, l.EdgeOpts(), topics), readIDs(ctx, t, l.HQOpts(), topics)
	for k, rs := range srcRecs {
		a, b := ids(rs), ids(dstRecs[k])
		if !slices.Equal(a, b) {
			t.Fatalf("%s/%d: destination holds %d records, source %d, not the same in the same order", k.topic, k.part, len(b), len(a))
		}
	}
}

func ids(rs []idRec) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.id
	}
	return out
}

// commitFailoverGroups commits, at the source, a group per lag (all but lag
// records of the plain topic read, spread over its partitions) and g-gap on
// the compacted topic at offsets the cleaner removed. It returns each
// group's committed offsets.
func commitFailoverGroups(ctx context.Context, t *testing.T, opts []kgo.Opt, recs map[topicPart][]idRec) map[string]map[topicPart]int64 {
	t.Helper()
	out := map[string]map[topicPart]int64{}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListCommittedOffsets(ctx, foTopic, foCompacted)
	if err != nil {
		t.Fatal(err)
	}
	commit := func(g string, at map[topicPart]int64) {
		os := kadm.Offsets{}
		for k, off := range at {
			os.Add(kadm.Offset{Topic: k.topic, Partition: k.part, At: off, LeaderEpoch: -1})
		}
		if err := adm.CommitAllOffsets(ctx, g, os); err != nil {
			t.Fatalf("commit %s: %v", g, err)
		}
		out[g] = at
	}
	for _, lag := range foLags {
		at := map[topicPart]int64{}
		for p := range int32(foParts) {
			k := topicPart{foTopic, p}
			behind := lag / foParts
			if int64(p) < lag%foParts {
				behind++
			}
			rs := recs[k]
			if behind == 0 {
				e, _ := ends.Lookup(foTopic, p)
				at[k] = e.Offset
			} else {
				at[k] = rs[int64(len(rs))-behind].off
			}
		}
		commit(fmt.Sprintf("g-lag%d", lag), at)
	}
	at := map[topicPart]int64{}
	for p := range int32(foCompParts) {
		k := topicPart{foCompacted, p}
		rs := recs[k]
		for i := range len(rs) - 1 {
			if rs[i+1].off > rs[i].off+1 { // the cleaner removed rs[i].off+1
				at[k] = rs[i].off + 1
				break
			}
		}
		if _, ok := at[k]; !ok && rs[0].off > 0 {
			at[k] = rs[0].off - 1 // the cleaner removed what came before the first survivor
		}
		if _, ok := at[k]; !ok {
			t.Fatalf("%s/%d: no offset removed by the cleaner between two records", foCompacted, p)
		}
	}
	commit("g-gap", at)
	return out
}

// consumeFromGroup reads topics at the destination from group's offsets
// there and counts, against the group's source offsets, the records it
// reads that the group had read (reread) and those it had not read and
// never reads (skipped), plus the partitions without an offset.
func consumeFromGroup(ctx context.Context, t *testing.T, dstOpts []kgo.Opt, group string, topics []string,
	srcRecs map[topicPart][]idRec, committed map[topicPart]int64) (reread, skipped int64, none int) {
	t.Helper()
	cl, err := kgo.NewClient(dstOpts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	offs, err := kadm.NewClient(cl).FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	from := map[string]map[int32]int64{}
	for k := range committed {
		x, ok := offs.Lookup(k.topic, k.part)
		if !ok || x.At < 0 {
			none++
			continue
		}
		if from[k.topic] == nil {
			from[k.topic] = map[int32]int64{}
		}
		from[k.topic][k.part] = x.At
	}
	srcOff := map[string]int64{}
	for _, rs := range srcRecs {
		for _, r := range rs {
			srcOff[r.id] = r.off
		}
	}
	seen := map[string]bool{}
	if err := kread.EachFrom(ctx, dstOpts, topics, from, func(r *kgo.Record) {
		k := topicPart{r.Topic, r.Partition}
		id := recID(r.Value)
		off, ok := srcOff[id]
		if !ok {
			return // produced after the source was read (behind the cut)
		}
		if off < committed[k] {
			reread++
		}
		seen[id] = true
	}); err != nil {
		t.Fatal(err)
	}
	for k, at := range committed {
		for _, r := range srcRecs[k] {
			if r.off >= at && !seen[r.id] {
				skipped++
			}
		}
	}
	return reread, skipped, none
}

// missingAtDest counts the source records of topics the destination lacks.
func missingAtDest(ctx context.Context, t *testing.T, srcOpts, dstOpts []kgo.Opt, topics []string) int64 {
	t.Helper()
	have := map[string]bool{}
	for _, rs := range readIDs(ctx, t, dstOpts, topics) {
		for _, r := range rs {
			have[r.id] = true
		}
	}
	var n int64
	for _, rs := range readIDs(ctx, t, srcOpts, topics) {
		for _, r := range rs {
			if !have[r.id] {
				n++
			}
		}
	}
	return n
}

func failoverOptions(t *testing.T, l *lab.Lab, src, dst []kgo.Opt) dr.FailoverOptions {
	t.Helper()
	table, err := routing.Compile(l.Topo, lab.HQGateway)
	if err != nil {
		t.Fatal(err)
	}
	if len(table.In) != 1 {
		t.Fatalf("%d legs into hq, want 1", len(table.In))
	}
	return dr.FailoverOptions{Leg: table.In[0], Src: src, Dst: dst, Drain: time.Minute, Reason: t.Name()}
}
