package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/internal/amqptest"
	"github.com/meridian-gw/meridian/internal/gateway"
	"github.com/meridian-gw/meridian/topology"
	"github.com/meridian-gw/meridian/topology/topologytest"
	"github.com/meridian-gw/meridian/transport/amqp"
)

// debianPython is Debian's interpreter, which has python3-qpid-proton.
const debianPython = "/usr/bin/python3"

func needProton(t *testing.T) {
	t.Helper()
	if err := exec.Command(debianPython, "-c", "import proton").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("python3-qpid-proton is required under CI=true: %s -c 'import proton': %v", debianPython, err)
		}
		t.Skipf("python3-qpid-proton not installed (%s -c 'import proton': %v); apt-get install -y python3-qpid-proton", debianPython, err)
	}
}

func needKcat(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"kcat", "kafkacat"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("kcat is not installed (CI=true: .ci/run must install the kcat package)")
	}
	t.Skip("kcat is not installed (apt-get install kcat)")
	return ""
}

// protonSend sends events first..first+n-1 with the Proton sender script,
// at rate per second (0: as fast as the broker takes them).
func protonSend(t *testing.T, url, address string, first, n, rate int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, debianPython, "testdata/proton_cloudevents_sender.py", url, address,
		strconv.Itoa(first), strconv.Itoa(n), strconv.Itoa(rate)).CombinedOutput()
	if err != nil {
		t.Fatalf("proton sender: %v\n%s", err, out)
	}
}

// readBack is what kcat reads at the destination: the seq of each record
// (from its JSON value) in partition order, and how many records carried
// the mapping's key and headers.
type readBack struct {
	seqs     []int
	wellMade int
	lines    []string
}

func kcatRead(kcat, broker, topic string) (readBack, error) {
	var rb readBack
	cmd := exec.Command(kcat, "-C", "-b", broker, "-t", topic, "-o", "beginning", "-e", "-q",
		"-X", "isolation.level=read_committed", "-f", `%k|%s|%h\n`)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return rb, fmt.Errorf("kcat: %v: %s", err, stderr.String())
	}
	for _, line := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		if line == "" {
			continue
		}
		parts := strings.SplitN(line, "|", 3)
		if len(parts) != 3 {
			return rb, fmt.Errorf("kcat line %q", line)
		}
		var v struct{ Seq int }
		if err := json.Unmarshal([]byte(parts[1]), &v); err != nil {
			return rb, fmt.Errorf("value %q: %w", parts[1], err)
		}
		rb.seqs = append(rb.seqs, v.Seq)
		rb.lines = append(rb.lines, line)
		h := parts[2]
		if parts[0] == fmt.Sprintf("k-%d", v.Seq%7) && strings.Contains(h, "ce_id=e-"+strconv.Itoa(v.Seq)) &&
			strings.Contains(h, "ce_specversion=1.0") && strings.Contains(h, "content-type=application/json") &&
			strings.Contains(h, "site=plant") && strings.Contains(h, "meridian.amqp.message-id=m-"+strconv.Itoa(v.Seq)) {
			rb.wellMade++
		}
	}
	return rb, nil
}

// tally counts what a read-back lost, duplicated and reordered of the
// events 0..want-1 (one partition: order is the order sent).
func tally(seqs []int, want int) (lost, dup, reordered int) {
	seen := map[int]int{}
	last := -1
	for _, s := range seqs {
		seen[s]++
		if seen[s] == 1 {
			if s < last {
				reordered++
			}
			last = max(last, s)
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
	return lost, dup, reordered
}

// TestAMQPSourceToKafkaWithProtonAndKcat: Qpid Proton (an independent AMQP
// client) sends binary CloudEvents to a RabbitMQ queue; Meridian's gateway
// in the broker's region reads it as a route's source and carries the
// events over an amqp link to the gateway at hq, which writes them to
// Kafka (kfake); kcat reads them back. Then the sending gateway restarts
// while Proton keeps sending, so the broker redelivers what it had not
// accepted; then the receiving gateway restarts, then RabbitMQ, each
// mid-stream. The read-back after each must hold every event exactly once,
// in order, with the CloudEvents mapping's key and headers.
func TestAMQPSourceToKafkaWithProtonAndKcat(t *testing.T) {
	needProton(t)
	kcat := needKcat(t)
	b := amqptest.Start(t)
	dst, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dst.Close)
	t.Setenv("MERIDIAN_TEST_AMQP_PASSWORD", "guest")
	// RabbitMQ 3.10's AMQP 1.0 plugin declares a /queue/NAME address as a
	// transient queue, which a broker restart deletes with its messages;
	// /amq/queue/NAME names an existing queue, here declared durable.
	for _, q := range []string{"events", "events.dead"} {
		if out, err := b.Ctl("eval", fmt.Sprintf(`rabbit_amqqueue:declare(rabbit_misc:r(<<"/">>, queue, <<"%s">>), true, false, [], none, <<"guest">>).`, q)); err != nil {
			t.Fatalf("declare durable queue %s: %v\n%s", q, err, out)
		}
	}
	stateDir := t.TempDir()
	f := topologytest.File(t, "amqp-source.yaml", fmt.Sprintf(`version: 1
regions:
  - name: plant
    clusters:
      - name: broker
        kind: amqp
        amqp:
          url: amqp://%[1]s
          sasl: {mechanism: plain, username: guest, password: "${MERIDIAN_TEST_AMQP_PASSWORD}"}
          address_prefix: /amq/queue/
          addresses: [events]
          key_required: true
          dead_letter: events.dead
    gateways: [{name: ga, state_dir: %[3]q}]
  - name: hq
    clusters: [{name: kafka, kind: kafka, bootstrap: [%[2]q]}]
    gateways: [{name: gh}]
links:
  - name: plant--hq
    between: [plant, hq]
    transport: amqp
    profile: lan
    amqp:
      url: amqp://%[1]s
      address_prefix: /queue/meridian-test.
      sasl: {mechanism: plain, username: guest, password: "${MERIDIAN_TEST_AMQP_PASSWORD}"}
routes:
  - {name: events, from: plant/broker, to: [hq/kafka], topics: {include: ['^events$']}}
`, b.Addr(), dst.ListenAddrs()[0], stateDir))
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
	waitRead := func(want int, within time.Duration) readBack {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			rb, err := kcatRead(kcat, dst.ListenAddrs()[0], "events")
			if err == nil && len(rb.seqs) >= want || time.Now().After(deadline) {
				if err != nil {
					t.Fatalf("read back: %v", err)
				}
				return rb
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	// reached waits until the destination's end offset (records and
	// transaction markers) passes n: a quick probe of progress mid-stream,
	// where kcat's whole read-back would be too slow.
	adm := kadm.NewClient(mustClient(t, dst))
	reached := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for time.Now().Before(deadline) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			ends, err := adm.ListEndOffsets(ctx, "events")
			cancel()
			if err == nil {
				if o, ok := ends.Lookup("events", 0); ok && o.Offset >= n {
					return
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("the destination did not reach offset %d", n)
	}
	check := func(what string, rb readBack, want int) {
		t.Helper()
		lost, dup, reordered := tally(rb.seqs, want)
		t.Logf("%s: read back %d records: %d lost, %d duplicated, %d reordered, %d with the mapped key and headers",
			what, len(rb.seqs), lost, dup, reordered, rb.wellMade)
		if lost != 0 || dup != 0 || reordered != 0 || len(rb.seqs) != want || rb.wellMade != want {
			n := min(3, len(rb.lines))
			t.Fatalf("%s: want %d records exactly once, in order, each mapped; first lines: %q", what, want, rb.lines[:n])
		}
	}

	const per = 2000
	protonSend(t, b.URL(), "/amq/queue/events", 0, per, 0)
	stopRecv := run("gh")
	stopSender := run("ga")
	check("first run", waitRead(per, 90*time.Second), per)

	// The sending gateway restarts mid-stream: Proton sends while it is
	// stopped once part of the stream has arrived; the broker redelivers
	// what the old gateway had not accepted.
	// Each restart happens while Proton sends 1,000 events a second for
	// 6 s, once 2 s of them have arrived.
	const more, rate = 6000, 1000
	var wg sync.WaitGroup
	wg.Go(func() { protonSend(t, b.URL(), "/amq/queue/events", per, more, rate) })
	reached(per + 2*rate)
	stopAt := time.Now()
	stopSender()
	t.Logf("sending gateway stopped in %v", time.Since(stopAt))
	t.Logf("first sender's amqp source when stopped: %v", sourceOutcomes(t, gws["ga"]))
	time.Sleep(500 * time.Millisecond)
	stopSender = run("ga")
	wg.Wait()
	check("after a sending gateway restart", waitRead(per+more, 90*time.Second), per+more)
	if got := sourceOutcomes(t, gws["ga"])["received"]; got == 0 {
		t.Errorf("the restarted sending gateway received nothing: the restart was not mid-stream")
	}

	t.Logf("restarted sender's amqp source: %v", sourceOutcomes(t, gws["ga"]))
	total := per + more

	// The receiving gateway restarts mid-stream: the link session ends,
	// the sender's source closes (what it held goes back to the broker)
	// and the next Resume restarts it from what hq committed.
	wg.Go(func() { protonSend(t, b.URL(), "/amq/queue/events", total, more, rate) })
	reached(int64(total + 2*rate))
	stopRecv()
	time.Sleep(500 * time.Millisecond)
	run("gh")
	wg.Wait()
	total += more
	check("after a receiving gateway restart", waitRead(total, 2*time.Minute), total)

	// RabbitMQ restarts mid-stream (a graceful stop: its durable queue and
	// the persistent messages in it survive): both gateways lose the
	// broker, reconnect and resume. The events wait in the queue first
	// (the sending gateway stopped), so that the restart comes while the
	// gateway works through them.
	stopSender()
	protonSend(t, b.URL(), "/amq/queue/events", total, more, 0)
	run("ga")
	reached(int64(total + more/3))
	b.Stop()
	time.Sleep(time.Second)
	b.Start()
	total += more
	check("after a RabbitMQ restart", waitRead(total, 3*time.Minute), total)
	t.Logf("sender's amqp source across the broker restart: %v", sourceOutcomes(t, gws["ga"]))
}

// sourceOutcomes sums meridian_amqp_source_messages_total by outcome.
func sourceOutcomes(t *testing.T, g *gateway.Gateway) map[string]float64 {
	t.Helper()
	vals := map[string]float64{}
	mfs, err := g.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "meridian_amqp_source_messages_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" {
					vals[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return vals
}

func mustClient(t *testing.T, c *kfake.Cluster) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// TestAMQPSourceBadAddressAndPoison: one route's address does not exist
// at the broker (RabbitMQ refuses the link), another's gets a poison
// message and no dead-letter address. The refused leg retries with
// backoff, counted, its status naming the address, and never ends the link
// session; the other route carries every good event (read back) and the
// poison message is rejected, counted, not left in the queue.
func TestAMQPSourceBadAddressAndPoison(t *testing.T) {
	b := amqptest.Start(t)
	dst, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dst.Close)
	topo, err := topology.New(topologytest.File(t, "amqp-bad.yaml", fmt.Sprintf(`version: 1
regions:
  - name: plant
    clusters:
      - {name: good, kind: amqp, amqp: {url: "amqp://%[1]s", sasl: {mechanism: anonymous}, addresses: [ok], key_required: true}}
      - {name: bad, kind: amqp, amqp: {url: "amqp://%[1]s", sasl: {mechanism: anonymous}, address_prefix: /amq/queue/, addresses: [missing]}}
    gateways: [{name: ga}]
  - name: hq
    clusters: [{name: kafka, kind: kafka, bootstrap: [%[2]q]}]
    gateways: [{name: gh}]
links:
  - {name: l, between: [plant, hq], transport: amqp, profile: lan, amqp: {url: "amqp://%[1]s", address_prefix: /queue/bad-link.}}
routes:
  - {name: good, from: plant/good, to: [hq/kafka], topics: {include: ['^ok$']}}
  - {name: bad, from: plant/bad, to: [hq/kafka], topics: {include: ['^missing$']}}
`, b.Addr(), dst.ListenAddrs()[0])))
	if err != nil {
		t.Fatal(err)
	}
	gws := map[string]*gateway.Gateway{}
	for _, name := range []string{"gh", "ga"} {
		g, err := gateway.New(gateway.Options{Topology: topo, Name: name, AdminAddr: "-", Logger: testLogger(t).With("gw", name),
			AMQPTiming: amqp.Timing{KeepAlive: 300 * time.Millisecond, IdleTimeout: 5 * time.Second, CloseTimeout: time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		gws[name] = g
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); g.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}

	const n = 500
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ac, err := amqp.Broker{URL: b.URL()}.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	ss, err := ac.NewSession(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	snd, err := ss.NewSender(ctx, "/queue/ok", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		props := map[string]any{"cloudEvents_specversion": "1.0", "cloudEvents_id": strconv.Itoa(i), "cloudEvents_source": "/t",
			"cloudEvents_type": "t", "cloudEvents_partitionkey": "k"}
		if i == n/2 {
			delete(props, "cloudEvents_partitionkey") // poison: key_required
		}
		m := &goamqp.Message{Properties: &goamqp.MessageProperties{MessageID: fmt.Sprintf("m-%d", i)}, ApplicationProperties: props,
			Data: [][]byte{fmt.Appendf(nil, `{"seq":%d}`, i)}}
		if err := snd.Send(ctx, m, nil); err != nil {
			t.Fatal(err)
		}
	}

	cl := mustClient(t, dst)
	cl.AddConsumeTopics("ok")
	got := map[int]int{}
	for len(got) < n-1 && ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) {
			var v struct{ Seq int }
			if err := json.Unmarshal(r.Value, &v); err != nil {
				t.Errorf("value %q: %v", r.Value, err)
			}
			got[v.Seq]++
		})
	}
	for i := 0; i < n; i++ {
		if want := 1; i == n/2 {
			want = 0
		} else if got[i] != want {
			t.Fatalf("event %d read back %d times, want %d", i, got[i], want)
		}
	}
	if got[n/2] != 0 {
		t.Errorf("the poison message reached Kafka")
	}

	counts := func(name, label string) map[string]float64 {
		out := map[string]float64{}
		mfs, err := gws["ga"].Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == label {
						out[l.GetValue()] += m.GetCounter().GetValue()
					}
				}
			}
		}
		return out
	}
	if c := counts("meridian_amqp_source_poison_total", "reason"); c["missing-key"] != 1 {
		t.Errorf("poison by reason: %v, want missing-key 1", c)
	}
	if c := counts("meridian_amqp_source_messages_total", "outcome"); c["rejected"] != 1 {
		t.Errorf("outcomes: %v, want rejected 1", c)
	}
	if c := counts("meridian_source_open_failures_total", "leg"); c["bad:hq/kafka"] < 1 {
		t.Errorf("source open failures: %v, want some for bad:hq/kafka", c)
	}
	if c := counts("meridian_link_session_failures_total", "peer"); c["gh"] != 0 {
		t.Errorf("link session failures %v: the refused address ended the session", c)
	}
	found := false
	for _, ls := range gws["ga"].Status().Legs {
		if ls.Leg == "bad:hq/kafka" {
			found = true
			if !strings.Contains(ls.LastError, "/amq/queue/missing") {
				t.Errorf("status of the refused leg: error %q, want the address named", ls.LastError)
			}
			t.Logf("status of the refused leg: %s", ls.LastError)
		}
	}
	if !found {
		t.Error("no status for leg bad:hq/kafka")
	}
	if out, err := b.Ctl("list_queues", "name", "messages"); err == nil {
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "ok" && f[1] != "0" {
				t.Errorf("queue ok still holds %s messages", f[1])
			}
		}
	}
}
