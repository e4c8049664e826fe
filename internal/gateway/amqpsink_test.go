package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/meridian-gw/meridian/internal/amqptest"
	"github.com/meridian-gw/meridian/internal/gateway"
	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/topology/topologytest"
	"github.com/meridian-gw/meridian/transport/amqp"
)

// protonMessage is one line of testdata/proton_receiver.py.
type protonMessage struct {
	ID          string         `json:"id"`
	ContentType string         `json:"content_type"`
	Properties  map[string]any `json:"properties"`
	Body        string         `json:"body"`
}

func protonReceive(t *testing.T, url, address string) []protonMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, debianPython, "testdata/proton_receiver.py", url, address, "3")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("proton receiver: %v\n%s", err, stderr.String())
	}
	var msgs []protonMessage
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m protonMessage
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("proton receiver line %q: %v", sc.Text(), err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// kcatProduce writes events from..from+n-1 to topic with kcat, 100 per
// run with pause between runs: key "k-(i mod 5)", a binary CloudEvent
// (ce_ headers, content-type) whose data is {"seq": i}.
func kcatProduce(t *testing.T, kcat, broker, topic string, from, n int, pause time.Duration) {
	t.Helper()
	for i := from; i < from+n; i += 100 {
		time.Sleep(pause)
		var in bytes.Buffer
		for j := i; j < min(i+100, from+n); j++ {
			fmt.Fprintf(&in, "k-%d:{\"seq\":%d}\n", j%5, j)
		}
		// kcat takes the headers per invocation: the id is the first
		// event's of the run, the rest of the attributes are shared.
		cmd := exec.Command(kcat, "-P", "-b", broker, "-t", topic, "-K", ":",
			"-H", "ce_specversion=1.0", "-H", fmt.Sprintf("ce_id=run-%d", i), "-H", "ce_source=/kcat", "-H", "ce_type=command",
			"-H", "content-type=application/json")
		cmd.Stdin = &in
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kcat produce: %v\n%s", err, out)
		}
	}
}

// TestKafkaToAMQPSinkWithKcatAndProton: kcat produces binary CloudEvents
// to Kafka (kfake) at hq; Meridian carries them over an amqp link to the
// plant's gateway, which writes them to a durable RabbitMQ queue; Qpid
// Proton reads them back. The plant gateway restarts mid-stream (kcat
// producing meanwhile). Read back: every event at least once, in order,
// with the key as cloudEvents_partitionkey and the message-id of its
// source position; duplicates (at least once) are counted and reported.
// Then RabbitMQ restarts mid-stream, with the same read-back.
func TestKafkaToAMQPSinkWithKcatAndProton(t *testing.T) {
	needProton(t)
	kcat := needKcat(t)
	b := amqptest.Start(t)
	if out, err := b.Ctl("eval", `rabbit_amqqueue:declare(rabbit_misc:r(<<"/">>, queue, <<"commands">>), true, false, [], none, <<"guest">>).`); err != nil {
		t.Fatalf("declare durable queue: %v\n%s", err, out)
	}
	src, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "commands"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	topo, err := topology.New(topologytest.File(t, "amqp-sink.yaml", fmt.Sprintf(`version: 1
regions:
  - name: plant
    clusters:
      - name: broker
        kind: amqp
        amqp: {url: "amqp://%[1]s", sasl: {mechanism: anonymous}, address_prefix: /amq/queue/, addresses: [commands]}
    gateways: [{name: ga, state_dir: %[3]q}]
  - name: hq
    clusters: [{name: kafka, kind: kafka, bootstrap: [%[2]q]}]
    gateways: [{name: gh}]
links:
  - {name: l, between: [plant, hq], transport: amqp, profile: lan, amqp: {url: "amqp://%[1]s", address_prefix: /queue/sink-link.}}
routes:
  - {name: commands, from: hq/kafka, to: [plant/broker], topics: {include: ['^commands$']}, discover: 200ms}
`, b.Addr(), src.ListenAddrs()[0], t.TempDir())))
	if err != nil {
		t.Fatal(err)
	}
	run := func(name string) (stop func()) {
		g, err := gateway.New(gateway.Options{Topology: topo, Name: name, AdminAddr: "-", Logger: testLogger(t).With("gw", name),
			MaxBatchBytes: 64 << 10, Window: 1 << 20,
			AMQPTiming: amqp.Timing{KeepAlive: 300 * time.Millisecond, IdleTimeout: 5 * time.Second, CloseTimeout: time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); g.Run(ctx) }()
		var once sync.Once
		stop = func() { once.Do(func() { cancel(); <-done }) }
		t.Cleanup(stop)
		return stop
	}
	const per = 3000
	kcatProduce(t, kcat, src.ListenAddrs()[0], "commands", 0, per, 0)
	run("gh")
	stopRecv := run("ga")
	var wg sync.WaitGroup
	// 30 runs of 100 events, 200 ms apart: about 6 s of stream, stopped
	// after 2 s.
	wg.Go(func() { kcatProduce(t, kcat, src.ListenAddrs()[0], "commands", per, per, 200*time.Millisecond) })
	time.Sleep(2 * time.Second)
	stopRecv()
	if depth := queueDepth(t, b, "commands"); depth >= 2*per || depth <= per {
		t.Errorf("the plant gateway stopped after writing all %d events: not mid-stream", depth)
	} else {
		t.Logf("the plant gateway stopped with %d of %d events in the queue", depth, 2*per)
	}
	time.Sleep(500 * time.Millisecond)
	run("ga")
	wg.Wait()

	// RabbitMQ restarts mid-stream: the plant gateway's writes fail, its
	// shards reopen and resume from the progress kept; what the broker had
	// accepted after the last progress write comes again (at least once).
	wg.Go(func() { kcatProduce(t, kcat, src.ListenAddrs()[0], "commands", 2*per, per, 200*time.Millisecond) })
	time.Sleep(2 * time.Second)
	b.Stop()
	time.Sleep(time.Second)
	b.Start()
	wg.Wait()

	want := 3 * per
	var msgs []protonMessage
	deadline := time.Now().Add(2 * time.Minute)
	seen := map[int]int{}
	for len(seen) < want && time.Now().Before(deadline) {
		for _, m := range protonReceive(t, b.URL(), "/amq/queue/commands") {
			msgs = append(msgs, m)
			var v struct{ Seq int }
			if err := json.Unmarshal([]byte(m.Body), &v); err != nil {
				t.Fatalf("message body %q: %v", m.Body, err)
			}
			seen[v.Seq]++
		}
	}
	lost, dup, reordered, wellMade := 0, 0, 0, 0
	last := -1
	for _, m := range msgs {
		var v struct{ Seq int }
		json.Unmarshal([]byte(m.Body), &v)
		if v.Seq < last && seen[v.Seq] == 1 {
			reordered++
		}
		last = max(last, v.Seq)
		if m.Properties["cloudEvents_partitionkey"] == fmt.Sprintf("k-%d", v.Seq%5) && m.Properties["cloudEvents_specversion"] == "1.0" &&
			m.ContentType == "application/json" && strings.HasPrefix(m.ID, fmt.Sprintf("meridian:hq/kafka/commands/0/%d", v.Seq)) {
			wellMade++
		}
	}
	for i := 0; i < want; i++ {
		switch n := seen[i]; {
		case n == 0:
			lost++
		case n > 1:
			dup += n - 1
		}
	}
	t.Logf("Proton read %d messages for %d events: %d lost, %d duplicated (at least once), %d reordered, %d with the mapped key, attributes and message-id",
		len(msgs), want, lost, dup, reordered, wellMade)
	if lost != 0 || reordered != 0 || wellMade != len(msgs) {
		t.Fatalf("want every event, in order, each mapped; first: %+v", msgs[:min(2, len(msgs))])
	}
}

// queueDepth is the number of messages in queue q (rabbitmqctl).
func queueDepth(t *testing.T, b *amqptest.Broker, q string) int {
	t.Helper()
	out, err := b.Ctl("list_queues", "name", "messages")
	if err != nil {
		t.Fatalf("list_queues: %v\n%s", err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		var name string
		var n int
		if _, err := fmt.Sscanf(line, "%s\t%d", &name, &n); err == nil && name == q {
			return n
		}
	}
	return 0
}
