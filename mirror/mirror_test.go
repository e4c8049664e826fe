package mirror_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/internal/kread"
	"github.com/meridian-gw/meridian/internal/verify"
	"github.com/meridian-gw/meridian/mirror"
	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/topology/topologytest"
	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/transporttest"
)

// fixture is two kfake clusters in regions east and west, and the tables of
// a sending gateway (east) and a receiving one (west).
type fixture struct {
	src, dst *kfake.Cluster
	topo     *topology.Topology
	file     *config.File
	// topoFor, if set, is the topology a gateway runs with instead of topo
	// (peers whose files differ, as during a rollout).
	topoFor map[string]*topology.Topology
	net     *transporttest.Network
	topics  []string

	mu      sync.Mutex
	engines map[string]*mirror.Engine       // latest engine per gateway
	regs    map[string]*prometheus.Registry // the latest engine's metrics, per gateway

	// wrapListener, if set, wraps the listener of every gateway started.
	wrapListener func(transport.Listener) transport.Listener
	// wrapDial, if set, wraps every connection a gateway dials.
	wrapDial func(transport.Conn) transport.Conn
	// wrapHello, if set, changes (a copy of) every Hello a gateway dials
	// with, as an older build would send it.
	wrapHello func(*transport.Hello)
	// tuning is every gateway's mirror.Options.Tuning.
	tuning mirror.Tuning
	// alive, if set, is every gateway's mirror.Options.Alive (gossip).
	alive func(gateway string) (alive, known bool)
}

func (f *fixture) engine(name string) *mirror.Engine {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.engines[name]
}

// newFixture builds the fixture; mods may change the topology file first.
func newFixture(t testing.TB, topics []string, parts int32, mods ...func(*config.File)) *fixture {
	t.Helper()
	src, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(parts, topics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	dst, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dst.Close)
	// The gateways' addresses are names on the in-memory network.
	f := topologytest.File(t, "mirror-fixture.yaml", fmt.Sprintf(`version: 1
regions:
  - name: east
    clusters: [{name: kafka, kind: kafka, bootstrap: [%q]}]
    gateways: [{name: ge, listen: "ge:1", tls: {ca_file: ca.crt, cert_file: ge.crt, key_file: ge.key}}]
  - name: west
    clusters: [{name: kafka, kind: kafka, bootstrap: [%q]}]
    gateways: [{name: gw, listen: "gw:1", tls: {ca_file: ca.crt, cert_file: gw.crt, key_file: gw.key}}]
links:
  - {name: east--west, between: [east, west], profile: lan, compression: zstd}
routes:
  - {name: r, from: east/kafka, to: [west/kafka], topics: {include: ['^t\.']}, discover: 200ms}
`, src.ListenAddrs()[0], dst.ListenAddrs()[0]))
	for _, m := range mods {
		m(f)
	}
	topo, err := topology.New(f)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{src: src, dst: dst, topo: topo, file: f, net: transporttest.NewNetwork(), topics: topics}
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("MERIDIAN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// gateway runs one engine until stop is called; stop waits for Run to return.
func (f *fixture) gateway(t testing.TB, name string, window int64) (stop func()) {
	t.Helper()
	topo := f.topo
	if tp := f.topoFor[name]; tp != nil {
		topo = tp
	}
	table, err := routing.Compile(topo, name)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	eng, err := mirror.New(mirror.Options{
		Table: table, Logger: testLogger(t).With("gw", name), Window: window, MaxBatchBytes: 64 << 10,
		Registerer: reg,
		Tuning:     f.tuning,
		Alive:      f.alive,
		Dial: func(ctx context.Context, peer string, h *transport.Hello) (transport.Conn, error) {
			if f.wrapHello != nil {
				cp := *h
				f.wrapHello(&cp)
				h = &cp
			}
			c, err := f.net.Dialer().Dial(ctx, topo.Gateways[peer].Advertise, h)
			if err != nil || f.wrapDial == nil {
				return c, err
			}
			return f.wrapDial(c), nil
		},
		Listen: func(accept transport.Accept) (transport.Listener, error) {
			ln, err := f.net.Listen(table.Gateway.Advertise, accept)
			if err != nil || f.wrapListener == nil {
				return ln, err
			}
			return f.wrapListener(ln), nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	if f.engines == nil {
		f.engines = map[string]*mirror.Engine{}
	}
	f.engines[name] = eng
	if f.regs == nil {
		f.regs = map[string]*prometheus.Registry{}
	}
	f.regs[name] = reg
	f.mu.Unlock()
	// New binds nothing: bind before Run so that a test may dial at once.
	if err := eng.Bind(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); eng.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// produce writes n records spread over the topics, with keys, headers and
// timestamps, and returns when all are acknowledged.
func (f *fixture) produce(t *testing.T, n int, from int) {
	t.Helper()
	// Batches below the gateways' MaxBatchBytes (64 KiB) decompressed, so
	// a passthrough sender may forward them as they are however loaded the
	// machine: a busy producer lingers into bigger batches, which the
	// sender must decode (seen at load 14: 0 of 252 batches forwarded).
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.src.ListenAddrs()...), kgo.ProducerLinger(5*time.Millisecond),
		kgo.ProducerBatchMaxBytes(48<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	base := time.UnixMilli(1_700_000_000_000)
	for i := from; i < from+n; i++ {
		r := &kgo.Record{
			Topic:     f.topics[i%len(f.topics)],
			Key:       []byte("k" + strconv.Itoa(i%97)),
			Value:     fmt.Appendf(nil, `{"seq":%d,"payload":"%0100d"}`, i, i),
			Headers:   []kgo.RecordHeader{{Key: "seq", Value: []byte(strconv.Itoa(i))}, {Key: "empty", Value: nil}},
			Timestamp: base.Add(time.Duration(i) * time.Millisecond),
		}
		if i%13 == 0 {
			r.Key = nil // null keys must stay null
		}
		wg.Add(1)
		cl.Produce(context.Background(), r, func(_ *kgo.Record, err error) {
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

// waitMirrored polls the destination by read-back until it holds want
// records or the deadline passes, then returns the full comparison.
func (f *fixture) waitMirrored(t *testing.T, want int64, within time.Duration) *verify.Report {
	t.Helper()
	deadline := time.Now().Add(within)
	src := []kgo.Opt{kgo.SeedBrokers(f.src.ListenAddrs()...)}
	dst := []kgo.Opt{kgo.SeedBrokers(f.dst.ListenAddrs()...)}
	var rep *verify.Report
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		r, err := verify.Compare(ctx, src, dst, f.topics, func(s string) string { return s })
		cancel()
		if err == nil {
			rep = r
			if r.Mirrored+r.Duplicated+r.Unexpected >= want {
				return r
			}
		}
		if time.Now().After(deadline) {
			if rep == nil {
				t.Fatalf("no read-back within %v: %v", within, err)
			}
			return rep
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func checkExact(t *testing.T, rep *verify.Report, produced int64) {
	t.Helper()
	if !rep.OK() || rep.Produced != produced || rep.Mirrored != produced {
		t.Fatalf("mirror not exact: %v (want produced=mirrored=%d)\n%v", rep, produced, rep.Samples)
	}
}

func TestMirrorExactlyOnce(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			f := newFixture(t, []string{"t.a", "t.b", "t.c"}, 4, m.mods...)
			f.mirrorAcrossStart(t, 6000, m.name)
		})
	}
}

// mirrorAcrossStart produces n records, starts both gateways, produces n
// more, and requires all of them mirrored exactly, carried by the link in
// the form mode says (checkForms).
func (f *fixture) mirrorAcrossStart(t *testing.T, n int, mode string) {
	t.Helper()
	var c batchCounter
	f.wrapListener = c.wrap
	f.produce(t, n, 0)
	f.gateway(t, "gw", 1<<20)
	f.gateway(t, "ge", 0)
	f.produce(t, n, n)
	checkExact(t, f.waitMirrored(t, int64(2*n), 60*time.Second), int64(2*n))
	checkForms(t, mode, &c)
}

func TestMirrorSurvivesReceiverRestartsAndLinkCuts(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) { testRestartsAndLinkCuts(t, m.name, m.mods...) })
	}
}

func testRestartsAndLinkCuts(t *testing.T, mode string, mods ...func(*config.File)) {
	f := newFixture(t, []string{"t.a", "t.b", "t.c"}, 4, mods...)
	var c batchCounter
	f.wrapListener = c.wrap
	f.gateway(t, "ge", 0)
	stopRecv := f.gateway(t, "gw", 256<<10)
	const per = 5000
	total := 0
	for round := 0; round < 4; round++ {
		f.produce(t, per, total)
		total += per
		time.Sleep(150 * time.Millisecond) // let some of it be in flight
		switch round {
		case 0, 2:
			stopRecv()
			stopRecv = f.gateway(t, "gw", 256<<10)
		case 1:
			f.net.SetDown(true)
			time.Sleep(500 * time.Millisecond)
			f.net.SetDown(false)
		}
	}
	checkExact(t, f.waitMirrored(t, int64(total), 90*time.Second), int64(total))
	checkForms(t, mode, &c)
}

func TestMirrorPicksUpNewTopics(t *testing.T) {
	f := newFixture(t, []string{"t.a"}, 2)
	f.gateway(t, "gw", 0)
	f.gateway(t, "ge", 0)
	f.produce(t, 100, 0)
	f.waitMirrored(t, 100, 30*time.Second)
	// A topic created later and matching the route is mirrored too, and one
	// that does not match is not.
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.src.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	start := time.Now()
	retention := "123456789"
	for _, tp := range []string{"t.late", "other"} {
		if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 3, 1, map[string]*string{"retention.ms": &retention}, tp); err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: tp, Value: []byte("x")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	f.topics = []string{"t.a", "t.late"}
	rep := f.waitMirrored(t, 101, 30*time.Second)
	checkExact(t, rep, 101)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("new topic mirrored after %v, want within 5s", d)
	}
	// The destination topic has the source's partitions and non-default
	// configs; the unmatched topic was not created.
	dcl, err := kgo.NewClient(kgo.SeedBrokers(f.dst.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer dcl.Close()
	dadm := kadm.NewClient(dcl)
	td, err := dadm.ListTopics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n := len(td["t.late"].Partitions); n != 3 {
		t.Errorf("destination t.late has %d partitions, want 3", n)
	}
	if td.Has("other") {
		t.Error("topic \"other\" does not match the route but was created at the destination")
	}
	rc, err := dadm.DescribeTopicConfigs(context.Background(), "t.late")
	if err != nil {
		t.Fatal(err)
	}
	c, err := rc.On("t.late", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := ""
	for _, kv := range c.Configs {
		if kv.Key == "retention.ms" && kv.Value != nil {
			got = *kv.Value
		}
	}
	if got != retention {
		t.Errorf("destination retention.ms = %q, want the source's %q", got, retention)
	}
}

func TestMirrorWaitsForAnUnreachableDestination(t *testing.T) {
	// The destination cluster is down when the gateways start; records
	// produced meanwhile are mirrored once it comes up, exactly once.
	f := newFixture(t, []string{"t.a", "t.b"}, 2)
	port := f.dst.ListenAddrs()[0]
	f.dst.Close()
	f.produce(t, 2000, 0)
	f.gateway(t, "gw", 0)
	f.gateway(t, "ge", 0)
	time.Sleep(2 * time.Second)
	_, p, _ := strings.Cut(port, ":")
	pn, _ := strconv.Atoi(p)
	dst, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(pn))
	if err != nil {
		t.Fatalf("restart destination on %s: %v", port, err)
	}
	t.Cleanup(dst.Close)
	f.dst = dst
	f.produce(t, 2000, 2000)
	checkExact(t, f.waitMirrored(t, 4000, 60*time.Second), 4000)
}

// A passthrough link writes the batch holding the refused record record by
// record.
func TestMirrorDeadLettersRecordsTheDestinationRefuses(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) { testDeadLetters(t, m.mods...) })
	}
}

func testDeadLetters(t *testing.T, mods ...func(*config.File)) {
	f := newFixture(t, []string{"t.a"}, 1, mods...)
	// The destination topic exists already, with a 4 KiB record limit.
	dcl, err := kgo.NewClient(kgo.SeedBrokers(f.dst.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer dcl.Close()
	limit := "4096"
	if _, err := kadm.NewClient(dcl).CreateTopic(context.Background(), 1, 1, map[string]*string{"max.message.bytes": &limit}, "t.a"); err != nil {
		t.Fatal(err)
	}
	scl, err := kgo.NewClient(kgo.SeedBrokers(f.src.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer scl.Close()
	var recs []*kgo.Record
	for i := 0; i < 20; i++ {
		v := []byte(fmt.Sprintf("small-%d", i))
		if i == 7 {
			// Refused by the destination, even compressed (Kafka checks
			// a batch's compressed size).
			v = make([]byte, 10_000)
			rng := rand.New(rand.NewPCG(1, 2))
			for j := range v {
				v[j] = byte(rng.Uint32())
			}
		}
		recs = append(recs, &kgo.Record{Topic: "t.a", Key: []byte(strconv.Itoa(i)), Value: v})
	}
	if err := scl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	f.gateway(t, "gw", 0)
	f.gateway(t, "ge", 0)

	rep := f.waitMirrored(t, 19, 30*time.Second)
	if rep.Mirrored != 19 || rep.Lost != 1 || rep.Duplicated != 0 || rep.Reordered != 0 || rep.Unexpected != 0 {
		t.Fatalf("read-back %v, want the 19 small records mirrored and only the large one missing", rep)
	}
	dl := readDeadLetters(t, f, 1)
	if len(dl) != 1 {
		t.Fatalf("dead-letter topic holds %d records, want 1", len(dl))
	}
	h := dl[0]
	if h[mirror.HeaderDLOffset] != "7" || h[mirror.HeaderDLTopic] != "t.a" || h[mirror.HeaderDLSize] == "" || h[mirror.HeaderDLKind] != "too-large" ||
		!strings.Contains(h[mirror.HeaderDLReason], "exceeds destination max.message.bytes 4096") || h["key"] != "7" {
		t.Errorf("dead letter = headers %v, want source offset 7 of t.a with the reason", h)
	}
}

func TestMirrorFollowsSourceTopicChanges(t *testing.T) {
	f := newFixture(t, []string{"t.a"}, 2)
	f.gateway(t, "gw", 0)
	f.gateway(t, "ge", 0)
	f.produce(t, 200, 0)
	f.waitMirrored(t, 200, 30*time.Second)

	ctx := context.Background()
	scl, err := kgo.NewClient(kgo.SeedBrokers(f.src.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer scl.Close()
	// franz-go caches metadata for 5 s by default: the observer must not.
	dcl, err := kgo.NewClient(kgo.SeedBrokers(f.dst.ListenAddrs()...), kgo.MetadataMinAge(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer dcl.Close()
	sadm, dadm := kadm.NewClient(scl), kadm.NewClient(dcl)
	destConfig := func(key string) (string, bool) {
		rc, err := dadm.DescribeTopicConfigs(ctx, "t.a")
		if err != nil {
			return "", false
		}
		c, err := rc.On("t.a", nil)
		if err != nil {
			return "", false
		}
		for _, kv := range c.Configs {
			if kv.Key == key && kv.Value != nil && kv.Source == kmsg.ConfigSourceDynamicTopicConfig {
				return *kv.Value, true
			}
		}
		return "", false
	}
	within := func(what string, d time.Duration, ok func() bool) {
		t.Helper()
		start := time.Now()
		for !ok() {
			if time.Since(start) > d {
				t.Fatalf("%s: not within %v", what, d)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if took := time.Since(start); took > d {
			t.Fatalf("%s after %v, want within %v", what, took, d)
		} else {
			t.Logf("%s after %v", what, took.Round(10*time.Millisecond))
		}
	}

	// Config changes at the source: retention raised (a sender may never
	// lower it), segment.ms set.
	v, seg := "1209600000", "3600000"
	if _, err := sadm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: &v},
		{Op: kadm.SetConfig, Name: "segment.ms", Value: &seg}}, "t.a"); err != nil {
		t.Fatal(err)
	}
	within("retention.ms and segment.ms reached the destination", 5*time.Second, func() bool {
		got, _ := destConfig("retention.ms")
		gotSeg, _ := destConfig("segment.ms")
		return got == v && gotSeg == seg
	})

	// Partitions added at the source, then records in them.
	if _, err := sadm.CreatePartitions(ctx, 2, "t.a"); err != nil {
		t.Fatal(err)
	}
	within("the destination grew to 4 partitions", 5*time.Second, func() bool {
		td, err := dadm.ListTopics(ctx, "t.a")
		return err == nil && len(td["t.a"].Partitions) == 4
	})
	// Keyed records spread over all four partitions, new ones included.
	f.produce(t, 400, 200)
	rep := f.waitMirrored(t, 600, 30*time.Second)
	checkExact(t, rep, 600)
	if rep.Partitions != 4 {
		t.Errorf("records mirrored in %d partitions, want 4 (the two new ones too)", rep.Partitions)
	}

	// The source stops overriding: the destination override goes too,
	// except retention's, whose removal would lower it.
	if _, err := sadm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.DeleteConfig, Name: "retention.ms"},
		{Op: kadm.DeleteConfig, Name: "segment.ms"}}, "t.a"); err != nil {
		t.Fatal(err)
	}
	within("the segment.ms override was removed at the destination", 5*time.Second, func() bool { _, set := destConfig("segment.ms"); return !set })
	if got, _ := destConfig("retention.ms"); got != v {
		t.Errorf("destination retention.ms = %q once the source dropped its override, want %s kept (never lowered)", got, v)
	}
}

// TestReceiverFallsBackToAnEarlierSession opens a second session for the
// leg beside the sending gateway's own, as a sender racing redials over a
// dead path does, and closes it: the leg must fall back to the sender's
// session and keep mirroring exactly.
func TestReceiverFallsBackToAnEarlierSession(t *testing.T) {
	f := newFixture(t, []string{"t.a"}, 2)
	f.gateway(t, "gw", 0)
	f.gateway(t, "ge", 0)
	f.produce(t, 2000, 0)
	checkExact(t, f.waitMirrored(t, 2000, 30*time.Second), 2000)

	table, err := routing.Compile(f.topo, "ge")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	extra, err := f.net.Dialer().Dial(ctx, table.Out[0].Gateway.Advertise, &transport.Hello{
		VersionMin: transport.VersionMin, VersionMax: transport.VersionMax,
		Gateway: "ge", Region: "east", Legs: []string{table.Out[0].Legs[0].ID},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The receiver moves the leg to the new session and sends it a Resume.
	if _, err := extra.Recv(ctx); err != nil {
		t.Fatal(err)
	}
	extra.Close(nil)
	f.produce(t, 2000, 2000)
	checkExact(t, f.waitMirrored(t, 4000, 30*time.Second), 4000)
}

// dialAsSender opens a session to the receiving gateway as the sending
// gateway would, for the leg of the fixture's route, and returns it with
// the leg's ID and the receiver's first Resume.
func (f *fixture) dialAsSender(ctx context.Context, t *testing.T) (transport.Conn, string, *transport.Resume) {
	t.Helper()
	table, err := routing.Compile(f.topo, "ge")
	if err != nil {
		t.Fatal(err)
	}
	leg := table.Out[0].Legs[0].ID
	conn, err := f.net.Dialer().Dial(ctx, table.Out[0].Gateway.Advertise, &transport.Hello{
		VersionMin: transport.VersionMin, VersionMax: transport.VersionMax,
		Gateway: "ge", Region: "east", Legs: []string{leg},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(nil) })
	return conn, leg, firstResume(t, ctx, conn)
}

// TestReceiverHoldsBatchesThatOvertakeTheirTopic: a sender consumes a topic
// it has progress for while announcing it, so a batch may reach the
// receiver before the topic's announcement has been prepared (after a
// receiver restart, say). The receiver holds the batch until then, instead
// of failing the transaction and resuming the sender.
func TestReceiverHoldsBatchesThatOvertakeTheirTopic(t *testing.T) {
	f := newFixture(t, []string{"t.a"}, 2)
	f.gateway(t, "gw", 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, leg, rs := f.dialAsSender(ctx, t)
	const n = 10
	b := &transport.Batch{Leg: leg, Gen: rs.Gen, Seq: 1, Topic: "t.a", Partition: 1, NextOffset: n, HighWatermark: n}
	for i := range n {
		b.Records = append(b.Records, transport.Record{Offset: int64(i), Timestamp: time.Now().UnixMilli(),
			Key: []byte(strconv.Itoa(i)), Value: []byte("overtaking " + strconv.Itoa(i))})
	}
	if err := conn.Send(ctx, b); err != nil {
		t.Fatal(err)
	}
	// Nothing may come back while the topic is unannounced: no ack (nothing
	// was written) and no new Resume (the receiver did not give up).
	early, ecancel := context.WithTimeout(ctx, 500*time.Millisecond)
	fr, err := conn.Recv(early)
	ecancel()
	if err == nil {
		t.Fatalf("before the topic was announced the receiver sent %T %+v", fr, fr)
	}
	if err := conn.Send(ctx, &transport.Topic{Leg: leg, Name: "t.a", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	var acked, ready bool
	for !acked || !ready {
		fr, err := conn.Recv(ctx)
		if err != nil {
			t.Fatalf("waiting for the topic-ready and the ack: %v", err)
		}
		switch fr := fr.(type) {
		case *transport.TopicReady:
			if fr.Err != "" {
				t.Fatalf("topic not ready: %s", fr.Err)
			}
			ready = true
		case *transport.Ack:
			acked = len(fr.Seqs) == 1 && fr.Seqs[0] == 1
		case *transport.Resume:
			t.Fatalf("the receiver resumed the sender (gen %d) instead of holding the batch", fr.Gen)
		}
	}
	var got []string
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	if err := kread.Each(rctx, []kgo.Opt{kgo.SeedBrokers(f.dst.ListenAddrs()...)}, []string{"t.a"}, func(r *kgo.Record) {
		got = append(got, fmt.Sprintf("%d/%d=%s", r.Partition, r.Offset, r.Value))
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != n || got[0] != "1/0=overtaking 0" || got[n-1] != fmt.Sprintf("1/%d=overtaking %d", n-1, n-1) {
		t.Fatalf("destination holds %d records %v, want the batch's %d at partition 1 offsets 0-%d", len(got), got, n, n-1)
	}
}

// tentativeListener hands over sessions as tentative (see
// transport.Tentative) when the test asks for it.
type tentativeListener struct {
	transport.Listener
	next chan bool
}

func (l *tentativeListener) Accept(ctx context.Context) (transport.Conn, error) {
	c, err := l.Listener.Accept(ctx)
	if err != nil {
		return nil, err
	}
	select {
	case <-l.next:
		return tentativeConn{c}, nil
	default:
		return c, nil
	}
}

type tentativeConn struct{ transport.Conn }

func (tentativeConn) Tentative() bool { return true }

// TestTentativeSessionTakesOnlyFreeLegs: a session whose Hello came as
// 0-RTT data (a replay, or a losing hedged redial) does not take a leg from
// the session that holds it; it is a candidate the leg falls back to when
// the holder ends. A leg nobody holds it takes at once.
func TestTentativeSessionTakesOnlyFreeLegs(t *testing.T) {
	f := newFixture(t, []string{"t.a"}, 2)
	tl := make(chan bool, 1)
	f.wrapListener = func(ln transport.Listener) transport.Listener { return &tentativeListener{ln, tl} }
	f.gateway(t, "gw", 0)
	stopGE := f.gateway(t, "ge", 0)
	f.produce(t, 2000, 0)
	checkExact(t, f.waitMirrored(t, 2000, 30*time.Second), 2000)

	table, err := routing.Compile(f.topo, "ge")
	if err != nil {
		t.Fatal(err)
	}
	hello := &transport.Hello{VersionMin: transport.VersionMin, VersionMax: transport.VersionMax,
		Gateway: "ge", Region: "east", Legs: []string{table.Out[0].Legs[0].ID}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tl <- true
	replay, err := f.net.Dialer().Dial(ctx, table.Out[0].Gateway.Advertise, hello)
	if err != nil {
		t.Fatal(err)
	}
	defer replay.Close(nil)
	// The leg stays with ge's session, which goes on mirroring, and the
	// tentative session hears nothing.
	f.produce(t, 2000, 2000)
	checkExact(t, f.waitMirrored(t, 4000, 30*time.Second), 4000)
	quiet, qcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	fr, err := replay.Recv(quiet)
	qcancel()
	if err == nil {
		t.Fatalf("a tentative session got %T %+v while another held the leg", fr, fr)
	}
	// When ge's session ends the leg falls to the candidate.
	stopGE()
	if fr, err = replay.Recv(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := fr.(*transport.Resume); !ok {
		t.Fatalf("the candidate got %T when the holder ended, want a Resume", fr)
	}
	replay.Close(nil)

	// A leg nobody holds is taken at once. (The receiver notices the
	// candidate's end a moment later: try again until then.)
	deadline := time.Now().Add(10 * time.Second)
	for {
		tl <- true
		dctx, dcancel := context.WithTimeout(context.Background(), time.Second)
		early, err := f.net.Dialer().Dial(dctx, table.Out[0].Gateway.Advertise, hello)
		if err != nil {
			dcancel()
			t.Fatal(err)
		}
		fr, err = early.Recv(dctx)
		dcancel()
		early.Close(nil)
		if err == nil {
			if _, ok := fr.(*transport.Resume); !ok {
				t.Fatalf("a tentative session for a free leg got %T, want a Resume", fr)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a tentative session for a free leg got no Resume: %v", err)
		}
	}
}
