package gateway_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/amqptest"
	"github.com/meridian-gw/meridian/internal/gateway"
	"github.com/meridian-gw/meridian/internal/verify"
	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/topology/topologytest"
	"github.com/meridian-gw/meridian/transport/amqp"
)

var topics = []string{"t.a", "t.b"}

// TestAMQPLinkMirrorsExactly mirrors records from one kfake cluster to
// another through two gateways whose link is transport amqp through a real
// RabbitMQ, built from a topology file as `meridian run` builds them. It
// checks the destination by read-back (lost, duplicated, reordered,
// altered records) after a first run, across a restart of the receiving
// gateway, across a restart of RabbitMQ and across a crash of RabbitMQ
// (SIGKILL), with records produced while each was down.
func TestAMQPLinkMirrorsExactly(t *testing.T) {
	b := amqptest.Start(t)
	src, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, topics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	dst, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dst.Close)
	t.Setenv("MERIDIAN_TEST_AMQP_PASSWORD", "guest")
	f := topologytest.File(t, "amqp-link.yaml", fmt.Sprintf(`version: 1
regions:
  - name: east
    clusters: [{name: kafka, kind: kafka, bootstrap: [%q]}]
    gateways: [{name: ge}]
  - name: west
    clusters: [{name: kafka, kind: kafka, bootstrap: [%q]}]
    gateways: [{name: gw}]
links:
  - name: east--west
    between: [east, west]
    transport: amqp
    profile: lan
    compression: zstd
    amqp:
      url: amqp://%s
      address_prefix: /queue/meridian-test.
      sasl: {mechanism: plain, username: guest, password: "${MERIDIAN_TEST_AMQP_PASSWORD}"}
routes:
  - {name: r, from: east/kafka, to: [west/kafka], topics: {include: ['^t\.']}, discover: 200ms}
`, src.ListenAddrs()[0], dst.ListenAddrs()[0], b.Addr()))
	topo, err := topology.New(f)
	if err != nil {
		t.Fatal(err)
	}
	gws := map[string]*gateway.Gateway{}
	run := func(name string) (stop func()) {
		g, err := gateway.New(gateway.Options{Topology: topo, Name: name, AdminAddr: "-", Logger: testLogger(t).With("gw", name),
			MaxBatchBytes: 64 << 10, Window: 1 << 20,
			AMQPTiming: amqp.Timing{KeepAlive: 300 * time.Millisecond, IdleTimeout: 5 * time.Second, CloseTimeout: time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		gws[name] = g
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); g.Run(ctx) }()
		var once sync.Once
		stop = func() { once.Do(func() { cancel(); <-done }) }
		t.Cleanup(stop)
		return stop
	}

	const per = 3000
	total := 0
	produce(t, src, per, total)
	total += per
	stopRecv := run("gw")
	run("ge")
	produce(t, src, per, total)
	total += per
	check(t, "first run", waitMirrored(t, src, dst, int64(total), time.Minute), total)

	// The receiving gateway restarts, with records produced meanwhile.
	stopRecv()
	produce(t, src, per, total)
	total += per
	run("gw")
	check(t, "after a receiving gateway restart", waitMirrored(t, src, dst, int64(total), time.Minute), total)

	// RabbitMQ restarts mid-stream.
	produce(t, src, per, total)
	total += per
	b.Stop()
	produce(t, src, per, total)
	total += per
	time.Sleep(time.Second)
	b.Start()
	check(t, "after a RabbitMQ restart", waitMirrored(t, src, dst, int64(total), 2*time.Minute), total)

	// RabbitMQ crashes (SIGKILL) mid-stream: what it held is lost with it,
	// and the sessions resume from the destination.
	produce(t, src, per, total)
	total += per
	b.Kill()
	produce(t, src, per, total)
	total += per
	b.Start()
	check(t, "after a RabbitMQ crash", waitMirrored(t, src, dst, int64(total), 2*time.Minute), total)

	// The receiving gateway's metrics tell the broker's restart and crash:
	// connected again, three connections (start, restart, crash), failed
	// ones between, and nothing held once all is committed.
	vals := map[string]float64{}
	mfs, err := gws["gw"].Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			vals[mf.GetName()] += v
		}
	}
	if vals["meridian_amqp_broker_connected"] != 1 || vals["meridian_amqp_broker_connects_total"] < 3 || vals["meridian_amqp_broker_failures_total"] < 2 {
		t.Errorf("amqp listener metrics: connected %v, connects %v, failures %v; want 1, >= 3, >= 2",
			vals["meridian_amqp_broker_connected"], vals["meridian_amqp_broker_connects_total"], vals["meridian_amqp_broker_failures_total"])
	}
	if _, ok := vals["meridian_amqp_messages_held"]; !ok {
		t.Error("no meridian_amqp_messages_held series")
	}
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("MERIDIAN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// produce writes n records over the topics, with keys (some null),
// headers and timestamps, numbered from from.
func produce(t *testing.T, src *kfake.Cluster, n, from int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(src.ListenAddrs()...), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	base := time.UnixMilli(1_700_000_000_000)
	var recs []*kgo.Record
	for i := from; i < from+n; i++ {
		r := &kgo.Record{
			Topic:     topics[i%len(topics)],
			Key:       []byte("k" + strconv.Itoa(i%97)),
			Value:     fmt.Appendf(nil, `{"seq":%d,"payload":"%0200d"}`, i, i),
			Headers:   []kgo.RecordHeader{{Key: "seq", Value: []byte(strconv.Itoa(i))}},
			Timestamp: base.Add(time.Duration(i) * time.Millisecond),
		}
		if i%13 == 0 {
			r.Key = nil
		}
		recs = append(recs, r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// waitMirrored compares source and destination by read-back until the
// destination holds want records or within passes.
func waitMirrored(t *testing.T, src, dst *kfake.Cluster, want int64, within time.Duration) *verify.Report {
	t.Helper()
	deadline := time.Now().Add(within)
	var rep *verify.Report
	var err error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var r *verify.Report
		r, err = verify.Compare(ctx, []kgo.Opt{kgo.SeedBrokers(src.ListenAddrs()...)}, []kgo.Opt{kgo.SeedBrokers(dst.ListenAddrs()...)},
			topics, func(s string) string { return s })
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

func check(t *testing.T, when string, rep *verify.Report, produced int) {
	t.Helper()
	t.Logf("%s: %v", when, rep)
	if !rep.OK() || rep.Produced != int64(produced) || rep.Mirrored != int64(produced) {
		t.Fatalf("%s: mirror not exact: %v (want produced=mirrored=%d)\n%v", when, rep, produced, rep.Samples)
	}
}
