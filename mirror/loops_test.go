package mirror_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/internal/kread"
	"github.com/meridian-gw/meridian/mirror"
	"github.com/meridian-gw/meridian/mirror/progress"
	"github.com/meridian-gw/meridian/routing/origin"
	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/topology/topologytest"
	"github.com/meridian-gw/meridian/transport/transporttest"
)

// cycleFixture is one kfake cluster and one gateway ("g" + region) per
// region, a link per pair of regions a route joins, and a route per pair
// in routes (from, to), each mirroring the topics ^t\. as they are.
type cycleFixture struct {
	*fixture
	regions  []string
	clusters map[string]*kfake.Cluster
	routes   [][2]string
}

func newCycleFixture(t *testing.T, regions []string, routes [][2]string, passthrough bool, topics []string, parts int32, mods ...func(*config.File)) *cycleFixture {
	t.Helper()
	c := &cycleFixture{regions: regions, clusters: map[string]*kfake.Cluster{}, routes: routes}
	var b strings.Builder
	b.WriteString("version: 1\nregions:\n")
	for _, r := range regions {
		cl, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(parts, topics...))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		c.clusters[r] = cl
		fmt.Fprintf(&b, "  - name: %s\n    clusters: [{name: kafka, kind: kafka, bootstrap: [%q]}]\n", r, cl.ListenAddrs()[0])
		fmt.Fprintf(&b, "    gateways: [{name: g%s, listen: \"g%s:1\", tls: {ca_file: ca.crt, cert_file: g%s.crt, key_file: g%s.key}}]\n", r, r, r, r)
	}
	b.WriteString("links:\n")
	linked := map[[2]string]bool{}
	for _, rt := range routes {
		p := [2]string{min(rt[0], rt[1]), max(rt[0], rt[1])}
		if linked[p] {
			continue
		}
		linked[p] = true
		fmt.Fprintf(&b, "  - {name: %s--%s, between: [%s, %s], profile: lan, compression: zstd, passthrough: %v}\n", p[0], p[1], p[0], p[1], passthrough)
	}
	b.WriteString("routes:\n")
	for _, rt := range routes {
		fmt.Fprintf(&b, "  - {name: %s-to-%s, from: %s/kafka, to: [%s/kafka], topics: {include: ['^t\\.']}, discover: 200ms}\n", rt[0], rt[1], rt[0], rt[1])
	}
	f := topologytest.File(t, "active-active.yaml", b.String())
	for _, m := range mods {
		m(f)
	}
	topo, err := topology.New(f)
	if err != nil {
		t.Fatal(err)
	}
	c.fixture = &fixture{topo: topo, file: f, net: transporttest.NewNetwork(), topics: topics}
	return c
}

func (c *cycleFixture) start(t *testing.T) {
	for _, r := range c.regions {
		c.gateway(t, "g"+r, 0)
	}
}

// produceAt writes records seq from..from+n-1 at region r's cluster, each
// with the header "produced-at" = r and "seq", keyed so that they spread
// over partitions; it returns when all are acknowledged.
func (c *cycleFixture) produceAt(t *testing.T, r string, from, n int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.clusters[r].ListenAddrs()...), kgo.ProducerLinger(2*time.Millisecond),
		kgo.ProducerBatchMaxBytes(32<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := from; i < from+n; i++ {
		rec := &kgo.Record{
			Topic:   c.topics[i%len(c.topics)],
			Key:     []byte("k" + strconv.Itoa(i%31)),
			Value:   fmt.Appendf(nil, `{"at":%q,"seq":%d}`, r, i),
			Headers: []kgo.RecordHeader{{Key: "produced-at", Value: []byte(r)}, {Key: "seq", Value: []byte(strconv.Itoa(i))}},
		}
		wg.Add(1)
		cl.Produce(context.Background(), rec, func(_ *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				mu.Lock()
				firstErr = err
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
}

// produceRounds has every region produce records seq from..from+n-1 at
// once, in 5 rounds a quarter second apart, so that each cluster's own
// records and the copies arriving interleave in its partitions.
func (c *cycleFixture) produceRounds(t *testing.T, from, n int) {
	t.Helper()
	const rounds = 5
	for i := range rounds {
		var wg sync.WaitGroup
		for _, r := range c.regions {
			wg.Go(func() { c.produceAt(t, r, from+i*n/rounds, n/rounds) })
		}
		wg.Wait()
		time.Sleep(250 * time.Millisecond)
	}
}

// cycleReport is what a read-back of one cluster found.
type cycleReport struct {
	total int
	// By producing region: distinct records found, extra copies, and
	// records out of their producer's order within a partition.
	found, duplicated, reordered map[string]int
	// looped counts records whose origin header says they were produced
	// here and that came back (in passthrough, a loop shows as a
	// duplicate instead); badOrigin those whose header is missing or
	// does not start at the producing region.
	looped, badOrigin int
	samples           []string
}

// readBack reads region r's cluster whole and tallies it.
func (c *cycleFixture) readBack(t *testing.T, r string, passthrough bool) *cycleReport {
	t.Helper()
	rep := &cycleReport{found: map[string]int{}, duplicated: map[string]int{}, reordered: map[string]int{}}
	seen := map[string]bool{}
	last := map[string]int{} // topic/partition/producer → last seq
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sample := func(format string, args ...any) {
		if len(rep.samples) < 8 {
			rep.samples = append(rep.samples, fmt.Sprintf(format, args...))
		}
	}
	err := kread.Each(ctx, []kgo.Opt{kgo.SeedBrokers(c.clusters[r].ListenAddrs()...)}, c.topics, func(rec *kgo.Record) {
		rep.total++
		at := string(headerOf(rec, "produced-at"))
		seq, _ := strconv.Atoi(string(headerOf(rec, "seq")))
		id := at + "#" + strconv.Itoa(seq)
		if seen[id] {
			rep.duplicated[at]++
			sample("%s: %s again at %s/%d@%d", r, id, rec.Topic, rec.Partition, rec.Offset)
		} else {
			seen[id] = true
			rep.found[at]++
		}
		k := fmt.Sprintf("%s/%d/%s", rec.Topic, rec.Partition, at)
		if p, ok := last[k]; ok && seq <= p {
			rep.reordered[at]++
		}
		last[k] = seq
		ov := headerOf(rec, origin.Header)
		switch path := origin.Path(ov); {
		case at == r && ov != nil:
			rep.looped++
			sample("%s: its own %s came back with path %q", r, id, ov)
		case at != r && !passthrough && (len(path) < 2 || path[0] != at+"/kafka" || path[len(path)-1] != r+"/kafka"):
			rep.badOrigin++
			sample("%s: %s has origin %q", r, id, ov)
		}
	})
	if err != nil {
		t.Fatalf("read back %s: %v", r, err)
	}
	return rep
}

// settle polls until every cluster holds want records and the counts
// have held still for a second (a loop would keep them growing), then
// returns the read-backs.
func (c *cycleFixture) settle(t *testing.T, want int, within time.Duration, passthrough bool) map[string]*cycleReport {
	t.Helper()
	deadline := time.Now().Add(within)
	var prev map[string]int
	stableSince := time.Time{}
	for {
		reps := map[string]*cycleReport{}
		counts := map[string]int{}
		done := true
		for _, r := range c.regions {
			reps[r] = c.readBack(t, r, passthrough)
			counts[r] = reps[r].total
			if counts[r] < want {
				done = false
			}
		}
		switch {
		case !done || !maps2Equal(prev, counts):
			stableSince = time.Time{}
		case stableSince.IsZero():
			stableSince = time.Now()
		case time.Since(stableSince) > time.Second && c.caughtUp():
			return reps
		}
		prev = counts
		if time.Now().After(deadline) {
			t.Logf("not settled within %v: %v", within, counts)
			return reps
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// caughtUp reports whether every inbound leg's progress is at its source's
// high watermark (lag 0): records dropped as loops moved it too.
func (c *cycleFixture) caughtUp() bool {
	for _, r := range c.regions {
		e := c.engine("g" + r)
		if e == nil {
			return false
		}
		for _, l := range e.Status().Legs {
			if l.Direction == "in" && (l.LagRecords != 0 || l.Partitions == 0) {
				return false
			}
		}
	}
	return true
}

func maps2Equal(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// check requires every cluster to hold each region's records exactly
// once, in order, none back at its origin.
func (c *cycleFixture) check(t *testing.T, reps map[string]*cycleReport, perRegion int) {
	t.Helper()
	for _, r := range c.regions {
		rep := reps[r]
		var lost, dup, reord int
		for _, from := range c.regions {
			lost += perRegion - rep.found[from]
			dup += rep.duplicated[from]
			reord += rep.reordered[from]
		}
		t.Logf("%s: %d records; lost %d, duplicated %d, looped %d, reordered %d, bad origin %d", r, rep.total, lost, dup, rep.looped, reord, rep.badOrigin)
		if lost != 0 || dup != 0 || reord != 0 || rep.looped != 0 || rep.badOrigin != 0 || rep.total != perRegion*len(c.regions) {
			t.Errorf("%s: found %v, duplicated %v, reordered %v, looped %d, bad origin %d, total %d (want %d of each of %v)\n%s",
				r, rep.found, rep.duplicated, rep.reordered, rep.looped, rep.badOrigin, rep.total, perRegion, c.regions, strings.Join(rep.samples, "\n"))
		}
	}
}

// loopDropped sums the legs' loop-dropped records in the gateways' status.
func (c *cycleFixture) loopDropped() map[string]int64 {
	out := map[string]int64{}
	for _, r := range c.regions {
		for _, l := range c.engine("g" + r).Status().Legs {
			if l.Direction == "out" {
				out[l.Leg] += l.LoopDroppedRecords
			}
		}
	}
	return out
}

// HQ and DR both produce and mirror the same topics to each other: each
// record ends up exactly once in each cluster, in order, and none comes
// back to where it was produced, in record mode (the origin header) and in
// passthrough (Meridian's sinks' producer IDs). Read back from both
// clusters; progress reaches the source's end past what was dropped.
func TestActiveActive(t *testing.T) {
	for _, m := range []struct {
		name        string
		passthrough bool
		mods        []func(*config.File)
	}{
		{"records", false, nil},
		{"passthrough", true, nil},
		// hq -> dr passes batches through, dr -> hq (filtered, so
		// decoded) sends records with the origin header: each side
		// recognises what the other's sink wrote by its producer ID.
		{"mixed", true, []func(*config.File){func(f *config.File) { f.Routes[1].Filter = "true" }}},
	} {
		t.Run(m.name, func(t *testing.T) {
			c := newCycleFixture(t, []string{"hq", "dr"}, [][2]string{{"hq", "dr"}, {"dr", "hq"}}, m.passthrough, []string{"t.a", "t.b"}, 3, m.mods...)
			const n = 1500
			c.produceAt(t, "hq", 0, n)
			c.produceAt(t, "dr", 0, n)
			c.start(t)
			c.produceRounds(t, n, n)
			reps := c.settle(t, 4*n, 15*time.Second, m.passthrough)
			c.check(t, reps, 2*n)
			c.checkTranslation(t, "hq", "dr")
			c.checkTranslation(t, "dr", "hq")
			dropped := c.loopDropped()
			t.Logf("loop-dropped per leg: %v", dropped)
			for _, leg := range []string{"hq-to-dr:dr/kafka", "dr-to-hq:hq/kafka"} {
				// Each leg read the other's 2n records at its source and
				// sent none of them back.
				if dropped[leg] != 2*n {
					t.Errorf("leg %s dropped %d records as loops, want %d", leg, dropped[leg], 2*n)
				}
			}
			by := "origin-header"
			if m.passthrough {
				by = "producer-id"
				for _, r := range c.regions[:1] {
					if k := c.counter(t, "g"+r, "meridian_passthrough_batches_total", map[string]string{"form": "kafka"}); k == 0 {
						t.Errorf("g%s forwarded no Kafka batches as they are", r)
					}
				}
			}
			for _, r := range c.regions {
				for _, l := range c.engine("g" + r).Status().Legs {
					if l.Direction != "out" {
						continue
					}
					if got := c.counter(t, "g"+r, "meridian_loop_dropped_records_total", map[string]string{"leg": l.Leg, "by": by}); got != float64(l.LoopDroppedRecords) {
						t.Errorf("%s: meridian_loop_dropped_records_total{by=%q} = %v, status %d", l.Leg, by, got, l.LoopDroppedRecords)
					}
				}
			}
		})
	}
}

// Three regions in a ring a -> b -> c -> a, each producing: records go
// round the ring to the two other clusters and stop before their origin.
func TestActiveActiveRing(t *testing.T) {
	c := newCycleFixture(t, []string{"a", "b", "c"}, [][2]string{{"a", "b"}, {"b", "c"}, {"c", "a"}}, false, []string{"t.a"}, 2)
	const n = 800
	c.start(t)
	c.produceRounds(t, 0, n)
	reps := c.settle(t, 3*n, 15*time.Second, false)
	c.check(t, reps, n)
	c.checkTranslation(t, "a", "b")
	// The origin path of a record produced at a, read at c, is a, b, c.
	for _, r := range c.regions {
		if got := reps[r].found; len(got) != 3 {
			t.Errorf("%s holds records of %v, want all three regions", r, got)
		}
	}
	dropped := c.loopDropped()
	for _, leg := range []string{"a-to-b:b/kafka", "b-to-c:c/kafka", "c-to-a:a/kafka"} {
		// Each leg reads its source's own n, and the n of the region
		// two steps back, which come from its destination: n dropped.
		if dropped[leg] != n {
			t.Errorf("leg %s dropped %d records as loops, want %d", leg, dropped[leg], n)
		}
	}
}

// A producer's own header named meridian.origin that is not a valid path
// does not stop the route: the record goes as produced at the source, the
// header replaced, counted.
func TestMalformedOriginHeader(t *testing.T) {
	c := newCycleFixture(t, []string{"hq", "dr"}, [][2]string{{"hq", "dr"}}, false, []string{"t.a"}, 1)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.clusters["hq"].ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	values := [][]byte{[]byte("not a path"), nil, []byte("ship/kafka,hq/kafka"), []byte("dr/kafka"), []byte("x/y,x/y")}
	for i, v := range values {
		r := &kgo.Record{Topic: "t.a", Value: []byte(strconv.Itoa(i)), Headers: []kgo.RecordHeader{{Key: origin.Header, Value: v}, {Key: "seq", Value: []byte(strconv.Itoa(i))}}}
		if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	c.start(t)
	want := []string{"hq/kafka,dr/kafka", "hq/kafka,dr/kafka", "ship/kafka,hq/kafka,dr/kafka", "", "hq/kafka,dr/kafka"}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got []string
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := kread.Each(ctx, []kgo.Opt{kgo.SeedBrokers(c.clusters["dr"].ListenAddrs()...)}, []string{"t.a"}, func(r *kgo.Record) {
			i, _ := strconv.Atoi(string(r.Value))
			for len(got) <= i {
				got = append(got, "")
			}
			got[i] = string(headerOf(r, origin.Header))
		})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		for len(got) < len(want) {
			got = append(got, "")
		}
		if slices.Equal(got, want) && c.caughtUp() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("origin headers at dr %q, want %q (caught up %v)", got, want, c.caughtUp())
		}
		time.Sleep(200 * time.Millisecond)
	}
	var st mirror.LegStatus
	for _, l := range c.engine("ghq").Status().Legs {
		if l.Direction == "out" {
			st = l
		}
	}
	if st.OriginMalformed != 3 || st.LoopDroppedRecords != 1 {
		t.Errorf("status: origin_malformed %d, loop_dropped_records %d; want 3 and 1", st.OriginMalformed, st.LoopDroppedRecords)
	}
}

// checkTranslation requires the offset map of the leg from region from to
// region to to be exact across the records it dropped as loops: every
// source offset translates to the destination offset of the next record
// not produced at to (the next one the leg carried), and offsets after the
// last of them to the end (caught up).
func (c *cycleFixture) checkTranslation(t *testing.T, from, to string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	type rec struct {
		off int64
		id  string
	}
	read := func(r string) map[string]map[int32][]rec {
		out := map[string]map[int32][]rec{}
		err := kread.Each(ctx, []kgo.Opt{kgo.SeedBrokers(c.clusters[r].ListenAddrs()...)}, c.topics, func(k *kgo.Record) {
			if out[k.Topic] == nil {
				out[k.Topic] = map[int32][]rec{}
			}
			out[k.Topic][k.Partition] = append(out[k.Topic][k.Partition], rec{k.Offset, string(headerOf(k, "produced-at")) + "#" + string(headerOf(k, "seq"))})
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	src, dst := read(from), read(to)
	m, err := progress.LoadOffsetMap(ctx, []kgo.Opt{kgo.SeedBrokers(c.clusters[to].ListenAddrs()...)}, from+"-to-"+to+":"+to+"/kafka")
	if err != nil {
		t.Fatal(err)
	}
	checked, gaps := 0, 0
	for topic, parts := range src {
		for p, recs := range parts {
			at := map[int64]string{}
			for _, r := range dst[topic][p] {
				at[r.off] = r.id
			}
			end := recs[len(recs)-1].off + 1
			for o := int64(0); o <= end; o++ {
				next := ""
				for _, r := range recs {
					if r.off >= o && !strings.HasPrefix(r.id, to+"#") {
						next = r.id
						if r.off != o {
							gaps++
						}
						break
					}
				}
				tr := m.Translate(topic, p, o)
				checked++
				if next == "" {
					if tr.Status != progress.CaughtUp {
						t.Fatalf("%s/%d offset %d (no record of %s after it): %s, want %s", topic, p, o, from, tr.Status, progress.CaughtUp)
					}
					continue
				}
				if tr.Status != progress.Exact || at[tr.Dest] != next {
					t.Fatalf("%s/%d offset %d: translated to %d (%s) holding %q, want the next record of %s, %q", topic, p, o, tr.Dest, tr.Status, at[tr.Dest], from, next)
				}
			}
		}
	}
	t.Logf("leg %s -> %s: %d source offsets translated exactly, %d of them in gaps the loop rule left", from, to, checked, gaps)
	if gaps == 0 {
		t.Errorf("leg %s -> %s: no offset fell in a gap: the test did not exercise dropped records", from, to)
	}
}

// The same ring over passthrough links: a batch carries only its last
// writer, so a record crosses one link of the cycle and no more (the
// documented limit): each cluster holds its own records and those of the
// region before it, once each, none back at its origin.
func TestActiveActiveRingPassthrough(t *testing.T) {
	c := newCycleFixture(t, []string{"a", "b", "c"}, [][2]string{{"a", "b"}, {"b", "c"}, {"c", "a"}}, true, []string{"t.a"}, 2)
	const n = 800
	c.start(t)
	c.produceRounds(t, 0, n)
	reps := c.settle(t, 2*n, 15*time.Second, true)
	before := map[string]string{"a": "c", "b": "a", "c": "b"}
	for _, r := range c.regions {
		rep := reps[r]
		want := map[string]int{r: n, before[r]: n}
		t.Logf("%s: %d records, found %v, duplicated %v, reordered %v, looped %d", r, rep.total, rep.found, rep.duplicated, rep.reordered, rep.looped)
		if fmt.Sprint(rep.found) != fmt.Sprint(want) || len(rep.duplicated) != 0 || len(rep.reordered) != 0 || rep.looped != 0 || rep.total != 2*n {
			t.Errorf("%s: found %v, want %v; duplicated %v, reordered %v, looped %d\n%s", r, rep.found, want, rep.duplicated, rep.reordered, rep.looped, strings.Join(rep.samples, "\n"))
		}
	}
	for leg, d := range c.loopDropped() {
		if d != n {
			t.Errorf("leg %s dropped %d records as loops, want %d", leg, d, n)
		}
	}
}

// A producer ID that the loop writers' transactional IDs no longer name
// (a sink's epoch ran out and it got a new ID, as every 32,766
// transactions with KIP-890) is still recognised, from the progress
// records its transactions wrote at the source; a transactional producer
// that writes no Meridian progress is mirrored as usual. The retired ID
// is played by a producer of another transactional ID writing a data
// record and a progress record of the loop writer's leg in one
// transaction (its value names no leg anyone loads).
func TestPassthroughRecognisesRetiredProducerID(t *testing.T) {
	c := newCycleFixture(t, []string{"hq", "dr"}, [][2]string{{"hq", "dr"}, {"dr", "hq"}}, true, []string{"t.a"}, 1)
	c.start(t)
	c.produceRounds(t, 0, 100)
	c.settle(t, 200, 15*time.Second, true)

	txn := func(id string, recs ...*kgo.Record) {
		t.Helper()
		cl, err := kgo.NewClient(kgo.SeedBrokers(c.clusters["hq"].ListenAddrs()...), kgo.TransactionalID(id))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ctx := context.Background()
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatal(err)
		}
	}
	rec := func(at string, seq int) *kgo.Record {
		return &kgo.Record{Topic: "t.a", Value: []byte("x"), Headers: []kgo.RecordHeader{{Key: "produced-at", Value: []byte(at)}, {Key: "seq", Value: []byte(strconv.Itoa(seq))}}}
	}
	tp := progress.TP{Topic: "t.a", Partition: 0}
	txn("test-retired-sink", rec("dr", 100000), &kgo.Record{Topic: progress.Topic, Key: progress.Key("dr-to-hq:hq/kafka", tp),
		Value: progress.Encode(&progress.Record{V: progress.Version, Leg: "test-retired:hq/kafka", Topic: "t.a", DestTopic: "t.a"})})
	txn("test-app", rec("hq", 100001))

	// hq's own transactional record reaches dr; the retired sink's does not.
	deadline := time.Now().Add(10 * time.Second)
	for {
		rep := c.readBack(t, "dr", true)
		if rep.found["hq"] == 101 && c.caughtUp() {
			if rep.found["dr"] != 100 || rep.total != 201 {
				t.Fatalf("dr holds %v (%d records), want its own 100 and hq's 101: the retired sink's record came back", rep.found, rep.total)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dr holds %v, want hq's 101 records (caught up %v)", rep.found, c.caughtUp())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := c.loopDropped()["hq-to-dr:dr/kafka"]; got != 101 {
		t.Errorf("hq-to-dr dropped %d records as loops, want dr's 100 and the retired sink's 1", got)
	}
}

// Loop prevention stops only what could loop: DR, active-active with HQ
// over passthrough, also feeds an archive, and the archive gets HQ's
// records that DR's sink wrote as well as DR's own, once each.
func TestActiveActiveFeedsArchive(t *testing.T) {
	c := newCycleFixture(t, []string{"hq", "dr", "ar"}, [][2]string{{"hq", "dr"}, {"dr", "hq"}, {"dr", "ar"}}, true, []string{"t.a"}, 2)
	const n = 600
	c.start(t)
	const rounds = 4
	for i := range rounds {
		var wg sync.WaitGroup
		for _, r := range []string{"hq", "dr"} {
			wg.Go(func() { c.produceAt(t, r, i*n/rounds, n/rounds) })
		}
		wg.Wait()
		time.Sleep(250 * time.Millisecond)
	}
	reps := c.settle(t, 2*n, 15*time.Second, true)
	for _, r := range c.regions {
		rep := reps[r]
		t.Logf("%s: %d records, found %v, duplicated %v, reordered %v, looped %d", r, rep.total, rep.found, rep.duplicated, rep.reordered, rep.looped)
		if rep.found["hq"] != n || rep.found["dr"] != n || rep.total != 2*n || len(rep.duplicated) != 0 || len(rep.reordered) != 0 || rep.looped != 0 {
			t.Errorf("%s: found %v (%d records), duplicated %v, reordered %v, looped %d; want hq's and dr's %d once each\n%s",
				r, rep.found, rep.total, rep.duplicated, rep.reordered, rep.looped, n, strings.Join(rep.samples, "\n"))
		}
	}
	if d := c.loopDropped()["dr-to-ar:ar/kafka"]; d != 0 {
		t.Errorf("dr-to-ar dropped %d records as loops, want none", d)
	}
}
