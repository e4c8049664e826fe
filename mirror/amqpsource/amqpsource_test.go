package amqpsource_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/amqptest"
	"github.com/meridian-gw/meridian/mirror"
	"github.com/meridian-gw/meridian/mirror/amqpsource"
	"github.com/meridian-gw/meridian/mirror/cloudevents"
	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/topology/topologytest"
	"github.com/meridian-gw/meridian/transport/amqp"
)

// leg is the leg of route r from plant/broker, compiled from a topology
// as the gateway compiles it.
func leg(t *testing.T) *routing.Leg {
	t.Helper()
	topo, err := topology.New(topologytest.File(t, "src.yaml", `version: 1
regions:
  - name: plant
    clusters: [{name: broker, kind: amqp, amqp: {url: "amqp://127.0.0.1:1", addresses: [dd]}}]
    gateways: [{name: ga}]
  - name: hq
    clusters: [{name: kafka, kind: kafka, bootstrap: ["127.0.0.1:1"]}]
    gateways: [{name: gh}]
links: [{between: [plant, hq], transport: amqp, amqp: {url: "amqp://127.0.0.1:1"}}]
routes: [{name: r, from: plant/broker, to: [hq/kafka], topics: {include: ['^dd$']}}]
`))
	if err != nil {
		t.Fatal(err)
	}
	table, err := routing.Compile(topo, "ga")
	if err != nil {
		t.Fatal(err)
	}
	return table.Out[0].Legs[0]
}

func event(i int) *goamqp.Message {
	ct := "application/json"
	return &goamqp.Message{
		Header:     &goamqp.MessageHeader{Durable: true},
		Properties: &goamqp.MessageProperties{MessageID: fmt.Sprintf("m-%d", i), ContentType: &ct},
		ApplicationProperties: map[string]any{
			"cloudEvents_specversion": "1.0", "cloudEvents_id": fmt.Sprintf("e-%d", i), "cloudEvents_source": "/t",
			"cloudEvents_type": "t", "cloudEvents_partitionkey": fmt.Sprintf("k-%d", i),
		},
		Data: [][]byte{fmt.Appendf(nil, `{"seq":%d}`, i)},
	}
}

func send(t *testing.T, b amqp.Broker, address string, msgs ...*goamqp.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ac, err := b.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	ss, err := ac.NewSession(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	snd, err := ss.NewSender(ctx, address, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if err := snd.Send(ctx, m, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// drain receives what waits at address for up to quiet of silence,
// accepting it.
func drain(t *testing.T, b amqp.Broker, address string, quiet time.Duration) []*goamqp.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ac, err := b.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	ss, err := ac.NewSession(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ss.NewReceiver(ctx, address, &goamqp.ReceiverOptions{Credit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var out []*goamqp.Message
	for {
		rctx, rcancel := context.WithTimeout(ctx, quiet)
		m, err := r.Receive(rctx, nil)
		rcancel()
		if err != nil {
			return out
		}
		r.AcceptMessage(ctx, m)
		out = append(out, m)
	}
}

// next reads n records from src, in order.
func next(t *testing.T, src mirror.Source, n int) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		topic, recs, err := src.Next(ctx)
		if err != nil {
			t.Fatalf("Next after %d records: %v", len(out), err)
		}
		if topic != "dd" {
			t.Fatalf("got topic %q, want dd", topic)
		}
		out = append(out, recs...)
	}
	if len(out) != n {
		t.Fatalf("got %d records, want %d", len(out), n)
	}
	return out
}

func counter(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// TestRedeliveriesAfterARestartAreDeduplicated runs the source against a
// real RabbitMQ. A first source (a gateway) receives ten events and two
// poison messages, the destination commits the first four and their
// acceptance goes through, then the gateway dies having sent the rest, of
// which (as the next Resume says) the destination committed up to
// position 7. A second source, opened by a new Opener over the same state
// directory (the restarted gateway), gets the six redeliveries: it settles
// those below 7 without handing them on and numbers the rest from 7. Read
// back: the records each source yields, the dead-letter address, and the
// queue left empty once all is committed.
func TestRedeliveriesAfterARestartAreDeduplicated(t *testing.T) {
	rb := amqptest.Start(t)
	broker := amqp.Broker{URL: rb.URL()}
	l := leg(t)
	cluster := amqpsource.Cluster{Broker: broker, Prefix: "/queue/", Addresses: []string{"dd"}, DeadLetter: "dd.dead",
		Codec: cloudevents.Options{KeyRequired: true}}
	dir := t.TempDir()
	open := func(reg *prometheus.Registry, next map[string]int64) mirror.Source {
		t.Helper()
		op, err := amqpsource.New(amqpsource.Options{Clusters: map[string]amqpsource.Cluster{"plant/broker": cluster},
			StateDir: dir, Credit: 64, Registerer: reg, CloseTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		src, err := op.Open(ctx, l, next)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { src.Close() })
		return src
	}
	noKey := event(100)
	delete(noKey.ApplicationProperties, "cloudEvents_partitionkey")
	ct := "application/cloudevents+json"
	badJSON := &goamqp.Message{Properties: &goamqp.MessageProperties{MessageID: "m-bad", ContentType: &ct}, Data: [][]byte{[]byte("{")}}
	msgs := []*goamqp.Message{}
	for i := 0; i < 10; i++ {
		msgs = append(msgs, event(i))
		if i == 2 {
			msgs = append(msgs, noKey, badJSON)
		}
	}
	send(t, broker, "/queue/dd", msgs...)

	reg1 := prometheus.NewRegistry()
	src := open(reg1, nil)
	recs := next(t, src, 10)
	for i, r := range recs {
		if r.Offset != int64(i) || string(r.Key) != fmt.Sprintf("k-%d", i) || string(r.Value) != fmt.Sprintf(`{"seq":%d}`, i) {
			t.Fatalf("record %d: offset %d key %q value %q", i, r.Offset, r.Key, r.Value)
		}
	}
	src.Committed("dd", 4)
	deadline := time.Now().Add(10 * time.Second)
	for counter(t, reg1, "meridian_amqp_source_messages_total", "outcome", "accepted") < 4 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := counter(t, reg1, "meridian_amqp_source_messages_total", "outcome", "accepted"); got != 4 {
		t.Fatalf("accepted %v messages, want 4", got)
	}
	for _, reason := range []string{"missing-key", "undecodable"} {
		if got := counter(t, reg1, "meridian_amqp_source_poison_total", "reason", reason); got != 1 {
			t.Errorf("poison %s: got %v, want 1", reason, got)
		}
	}
	src.Close() // the gateway dies: m-4..m-9 were sent, none accepted

	reg2 := prometheus.NewRegistry()
	src = open(reg2, map[string]int64{"dd": 7})
	send(t, broker, "/queue/dd", event(10))
	recs = next(t, src, 4)
	for i, r := range recs {
		want := 7 + i
		if r.Offset != int64(want) || string(r.Value) != fmt.Sprintf(`{"seq":%d}`, want) {
			t.Fatalf("after the restart, record %d: offset %d value %q; want offset and seq %d", i, r.Offset, r.Value, want)
		}
	}
	if got := counter(t, reg2, "meridian_amqp_source_messages_total", "outcome", "duplicate"); got != 3 {
		t.Errorf("duplicates settled unsent: got %v, want 3 (m-4, m-5, m-6)", got)
	}
	src.Committed("dd", 11)
	deadline = time.Now().Add(10 * time.Second)
	for counter(t, reg2, "meridian_amqp_source_messages_total", "outcome", "accepted") < 4 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	src.Close()
	if left := drain(t, broker, "/queue/dd", time.Second); len(left) != 0 {
		t.Errorf("%d messages left in the queue after all was committed", len(left))
	}
	dead := drain(t, broker, "/queue/dd.dead", time.Second)
	if len(dead) != 2 {
		t.Fatalf("got %d dead letters, want 2", len(dead))
	}
	for _, m := range dead {
		reason, _ := m.ApplicationProperties["meridian_dl_reason"].(string)
		if !strings.Contains(reason, `"/queue/dd"`) || m.ApplicationProperties["meridian_dl_address"] != "/queue/dd" {
			t.Errorf("dead letter %v: reason %q, address %v", m.Properties.MessageID, reason, m.ApplicationProperties["meridian_dl_address"])
		}
	}
}
