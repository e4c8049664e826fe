package amqpsink_test

import (
	"context"
	"strings"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-gw/meridian/internal/amqptest"
	"github.com/meridian-gw/meridian/mirror/amqpsink"
	"github.com/meridian-gw/meridian/mirror/cloudevents"
	"github.com/meridian-gw/meridian/mirror/progress"
	"github.com/meridian-gw/meridian/routing"
	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/topology/topologytest"
	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/amqp"
)

func leg(t *testing.T) *routing.Leg {
	t.Helper()
	topo, err := topology.New(topologytest.File(t, "sink.yaml", `version: 1
regions:
  - name: plant
    clusters: [{name: broker, kind: amqp, amqp: {url: "amqp://127.0.0.1:1", addresses: [out]}}]
    gateways: [{name: ga, state_dir: /tmp}]
  - name: hq
    clusters: [{name: kafka, kind: kafka, bootstrap: ["127.0.0.1:1"]}]
    gateways: [{name: gh}]
links: [{between: [plant, hq], transport: amqp, amqp: {url: "amqp://127.0.0.1:1"}}]
routes: [{name: r, from: hq/kafka, to: [plant/broker], topics: {include: ['^out$']}}]
`))
	if err != nil {
		t.Fatal(err)
	}
	table, err := routing.Compile(topo, "ga")
	if err != nil {
		t.Fatal(err)
	}
	return table.In[0]
}

func drain(t *testing.T, b amqp.Broker, address string) []*goamqp.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ac, err := b.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	ss, _ := ac.NewSession(ctx, nil)
	r, err := ss.NewReceiver(ctx, address, &goamqp.ReceiverOptions{Credit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var out []*goamqp.Message
	for {
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		m, err := r.Receive(rctx, nil)
		rcancel()
		if err != nil {
			return out
		}
		r.AcceptMessage(ctx, m)
		out = append(out, m)
	}
}

// TestWriteKeepsProgressAndDeadLetters writes a batch of three records
// to a real RabbitMQ, one of which cannot map (a header twice): two
// messages reach the address with the message-ids of their source
// positions, the third the dead-letter address with the reason, and the
// progress a new Opener (a restarted gateway) reads back is the batch's.
func TestWriteKeepsProgressAndDeadLetters(t *testing.T) {
	rb := amqptest.Start(t)
	broker := amqp.Broker{URL: rb.URL()}
	l := leg(t)
	dir := t.TempDir()
	open := func() *amqpsink.Opener {
		op, err := amqpsink.New(amqpsink.Options{StateDir: dir, Registerer: prometheus.NewRegistry(),
			Clusters: map[string]amqpsink.Cluster{"plant/broker": {Broker: broker, Prefix: "/queue/", DeadLetter: "out.dead",
				Codec: cloudevents.Options{Mode: cloudevents.Binary}}}})
		if err != nil {
			t.Fatal(err)
		}
		return op
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := open().Open(ctx, l, 2)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := w.Committed(ctx); err != nil || len(c) != 0 {
		t.Fatalf("fresh progress: %v, %v; want none", c, err)
	}
	b := &transport.Batch{Leg: l.ID, Topic: "out", Partition: 3, NextOffset: 13, Records: []transport.Record{
		{Offset: 10, Key: []byte("a"), Value: []byte("v10")},
		{Offset: 11, Value: []byte("v11"), Headers: []transport.Header{{Key: "h", Value: []byte("1")}, {Key: "h", Value: []byte("2")}}},
		{Offset: 12, Key: []byte("c"), Value: []byte("v12")},
	}}
	p := &progress.Record{V: progress.Version, Leg: l.ID, Topic: "out", Partition: 3, DestTopic: "out", Next: 13}
	dlq, err := w.Write(ctx, []*transport.Batch{b}, []*progress.Record{p})
	if err != nil || dlq != 1 {
		t.Fatalf("Write: %d dead letters, %v; want 1, nil", dlq, err)
	}
	w.Close()

	c, err := open().Open(ctx, l, 2)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Committed(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r := got[progress.TP{Topic: "out", Partition: 3}]; r == nil || r.Next != 13 {
		t.Fatalf("progress read back: %v, want next 13 for out/3", got)
	}
	c.Close()

	msgs := drain(t, broker, "/queue/out")
	if len(msgs) != 2 {
		t.Fatalf("got %d messages, want 2", len(msgs))
	}
	for i, want := range []string{"meridian:hq/kafka/out/3/10", "meridian:hq/kafka/out/3/12"} {
		if id, _ := cloudevents.MessageID(msgs[i]); id != want {
			t.Errorf("message %d: id %q, want %q", i, id, want)
		}
	}
	if k := msgs[0].ApplicationProperties["cloudEvents_partitionkey"]; k != "a" {
		t.Errorf("key property %v, want a", k)
	}
	dead := drain(t, broker, "/queue/out.dead")
	if len(dead) != 1 {
		t.Fatalf("got %d dead letters, want 1", len(dead))
	}
	if reason, _ := dead[0].ApplicationProperties["meridian_dl_reason"].(string); !strings.Contains(reason, "appears more than once") ||
		dead[0].ApplicationProperties["meridian_dl_source"] != "hq/kafka/out/3/11" || string(dead[0].GetData()) != "v11" {
		t.Errorf("dead letter: %v %q", dead[0].ApplicationProperties, dead[0].GetData())
	}
}
