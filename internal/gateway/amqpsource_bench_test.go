package gateway_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/amqptest"
	"github.com/meridian-gw/meridian/internal/gateway"
	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/topology/topologytest"
	"github.com/meridian-gw/meridian/transport/amqp"
)

// TestAMQPSourceThroughput measures (MERIDIAN_AMQP_BENCH=1; a figure, not
// a timed assertion) how fast an AMQP source carries 1 KB binary
// CloudEvents from a RabbitMQ queue to Kafka (kfake) through two gateways
// whose link goes over the same broker, beside the broker's own ceiling: a
// plain go-amqp consumer draining a queue of the same messages with the
// same credit, accepting each.
func TestAMQPSourceThroughput(t *testing.T) {
	if os.Getenv("MERIDIAN_AMQP_BENCH") == "" {
		t.Skip("a measurement: set MERIDIAN_AMQP_BENCH=1")
	}
	const n = 50000
	b := amqptest.Start(t)
	broker := amqp.Broker{URL: b.URL()}
	fill := func(address string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		ac, err := broker.Dial(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer ac.Close()
		var wg sync.WaitGroup
		const senders = 8
		for w := 0; w < senders; w++ {
			ss, err := ac.NewSession(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			snd, err := ss.NewSender(ctx, address, nil)
			if err != nil {
				t.Fatal(err)
			}
			wg.Go(func() {
				ct := "application/json"
				pad := strings.Repeat("x", 900)
				for i := w; i < n; i += senders {
					m := &goamqp.Message{
						Properties: &goamqp.MessageProperties{MessageID: fmt.Sprintf("m-%d", i), ContentType: &ct},
						ApplicationProperties: map[string]any{"cloudEvents_specversion": "1.0", "cloudEvents_id": fmt.Sprint(i),
							"cloudEvents_source": "/bench", "cloudEvents_type": "reading", "cloudEvents_partitionkey": fmt.Sprint(i % 64)},
						Data: [][]byte{fmt.Appendf(nil, `{"seq":%d,"pad":"%s"}`, i, pad)},
					}
					if err := snd.Send(ctx, m, nil); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}

	// The broker's ceiling: drain a queue of the same messages.
	fill("/queue/ceiling")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ac, err := broker.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ss, _ := ac.NewSession(ctx, nil)
	// Credit by hand, 64 at a time within 256, and a flow again after 2 s
	// of silence (go-amqp's automatic credit stalls against RabbitMQ 3.10:
	// transport/amqp's doc), as the source does.
	r, err := ss.NewReceiver(ctx, "/queue/ceiling", &goamqp.ReceiverOptions{Credit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.IssueCredit(256); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := 0; i < n; {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		m, err := r.Receive(rctx, nil)
		rcancel()
		if err != nil && ctx.Err() == nil {
			r.IssueCredit(1)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := r.AcceptMessage(ctx, m); err != nil {
			t.Fatal(err)
		}
		if i++; i%64 == 0 {
			r.IssueCredit(64)
		}
	}
	ceiling := float64(n) / time.Since(start).Seconds()
	ac.Close()

	fill("/queue/events")
	dst, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dst.Close)
	topo, err := topology.New(topologytest.File(t, "bench.yaml", fmt.Sprintf(`version: 1
regions:
  - name: plant
    clusters: [{name: broker, kind: amqp, amqp: {url: "amqp://%[1]s", sasl: {mechanism: anonymous}, addresses: [events]}}]
    gateways: [{name: ga}]
  - name: hq
    clusters: [{name: kafka, kind: kafka, bootstrap: [%[2]q]}]
    gateways: [{name: gh}]
links:
  - {name: l, between: [plant, hq], transport: amqp, profile: lan, compression: s2, amqp: {url: "amqp://%[1]s", address_prefix: /queue/bench-link.}}
routes:
  - {name: events, from: plant/broker, to: [hq/kafka], topics: {include: ['^events$']}}
`, b.Addr(), dst.ListenAddrs()[0])))
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	for _, name := range []string{"gh", "ga"} {
		g, err := gateway.New(gateway.Options{Topology: topo, Name: name, AdminAddr: "-", Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		gctx, gcancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); g.Run(gctx) }()
		t.Cleanup(func() { gcancel(); <-done })
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(dst.ListenAddrs()...), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeTopics("events"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.MetadataMinAge(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var first time.Time
	got := 0
	seen := map[string]bool{}
	dups := 0
	pctx, pcancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer pcancel()
	for got < n && pctx.Err() == nil {
		fs := cl.PollFetches(pctx)
		fs.EachRecord(func(r *kgo.Record) {
			if first.IsZero() {
				first = time.Now()
			}
			id := ""
			for _, h := range r.Headers {
				if h.Key == "ce_id" {
					id = string(h.Value)
				}
			}
			if seen[id] {
				dups++
			}
			seen[id] = true
			got++
		})
	}
	el := time.Since(start)
	steady := time.Since(first)
	t.Logf("AMQP source -> Kafka: %d of %d 1 KB CloudEvents (%d duplicates) in %v: %.0f msg/s from gateway start, %.0f msg/s from the first record; broker ceiling (plain go-amqp consumer, credit 256, accept each): %.0f msg/s",
		got, n, dups, el.Round(time.Millisecond), float64(got)/el.Seconds(), float64(got)/steady.Seconds(), ceiling)
	if got != n || dups != 0 {
		t.Errorf("read back %d records with %d duplicates, want %d and none", got, dups, n)
	}
}

// TestAMQPSinkThroughput measures (MERIDIAN_AMQP_BENCH=1) how fast two
// gateways carry 1 KB binary CloudEvents from Kafka (kfake) into a
// RabbitMQ queue (the link over the same broker), read as the queue's
// depth (rabbitmqctl, polled each second).
func TestAMQPSinkThroughput(t *testing.T) {
	if os.Getenv("MERIDIAN_AMQP_BENCH") == "" {
		t.Skip("a measurement: set MERIDIAN_AMQP_BENCH=1")
	}
	const n = 50000
	b := amqptest.Start(t)
	src, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "events"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(src.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("x", 900)
	var recs []*kgo.Record
	for i := 0; i < n; i++ {
		recs = append(recs, &kgo.Record{Topic: "events", Key: []byte(fmt.Sprint(i % 64)), Value: fmt.Appendf(nil, `{"seq":%d,"pad":"%s"}`, i, pad),
			Headers: []kgo.RecordHeader{{Key: "ce_specversion", Value: []byte("1.0")}, {Key: "ce_id", Value: []byte(fmt.Sprint(i))},
				{Key: "ce_source", Value: []byte("/bench")}, {Key: "ce_type", Value: []byte("reading")}, {Key: "content-type", Value: []byte("application/json")}}})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	topo, err := topology.New(topologytest.File(t, "sinkbench.yaml", fmt.Sprintf(`version: 1
regions:
  - name: plant
    clusters: [{name: broker, kind: amqp, amqp: {url: "amqp://%[1]s", sasl: {mechanism: anonymous}, addresses: [events]}}]
    gateways: [{name: ga, state_dir: %[3]q}]
  - name: hq
    clusters: [{name: kafka, kind: kafka, bootstrap: [%[2]q]}]
    gateways: [{name: gh}]
links:
  - {name: l, between: [plant, hq], transport: amqp, profile: lan, compression: s2, amqp: {url: "amqp://%[1]s", address_prefix: /queue/sinkbench-link.}}
routes:
  - {name: events, from: hq/kafka, to: [plant/broker], topics: {include: ['^events$']}, discover: 200ms}
`, b.Addr(), src.ListenAddrs()[0], t.TempDir())))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for _, name := range []string{"ga", "gh"} {
		g, err := gateway.New(gateway.Options{Topology: topo, Name: name, AdminAddr: "-", Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		gctx, gcancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); g.Run(gctx) }()
		t.Cleanup(func() { gcancel(); <-done })
	}
	depth := 0
	for depth < n && ctx.Err() == nil {
		time.Sleep(time.Second)
		depth = queueDepth(t, b, "events")
	}
	el := time.Since(start)
	t.Logf("Kafka -> AMQP sink: %d of %d 1 KB CloudEvents in the queue after %v: %.0f msg/s from gateway start (depth polled each second)",
		depth, n, el.Round(time.Second), float64(depth)/el.Seconds())
}
