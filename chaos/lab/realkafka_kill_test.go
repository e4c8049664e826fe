package lab_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/chaos/lab"
	"github.com/meridian-gw/meridian/internal/kafkatest"
)

// TestRealKafkaDestinationBrokerKilled kills the destination broker with
// SIGKILL mid-stream and restarts it: the transactions in flight are
// aborted by the broker (or fenced when the sink comes back), and a
// read_committed read-back finds every record once, in order.
//
// It found two ways to write records twice in passthrough mode, both fixed:
// a shard reopened while another held the progress topic in a transaction
// (legState.toOpen), and a committed transaction whose markers the
// restarted broker skipped, left hanging with its progress unreadable
// (sink.commitHanging).
func TestRealKafkaDestinationBrokerKilled(t *testing.T) {
	bothModes(t, func(t *testing.T, pass bool) {
		o, _, hq := realKafka(t, lab.Options{Passthrough: pass}, kafkatest.Options{})
		began := time.Now()
		l := newLab(t, o)
		startGateways(t, l)
		p, err := lab.NewProducer(l.EdgeOpts(), e2eTopics, 3, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		const total, rate = 60_000, 6000
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx, rate, total) }()
		// Kill once the mirror is writing: some records at the destination.
		waitMirrored(t, l, 5_000, time.Minute)
		killedAt := p.Produced()
		down := time.Now()
		if err := hq.Kill(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second) // the gateway's sink meets a dead broker
		if err := hq.Restart(); err != nil {
			t.Fatal(err)
		}
		downtime := time.Since(down)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		rep := waitExact(t, l, total, 3*time.Minute)
		ends := endOffsets(t, l.HQOpts(), e2eTopics)
		t.Logf("destination broker killed after %d records produced, down %v (kill, 2 s, restart until it served metadata); read-back after %v: %v; destination log end offsets sum %d for %d records (the rest: transaction markers and aborted batches)",
			killedAt, downtime.Round(100*time.Millisecond), time.Since(began).Round(100*time.Millisecond), rep, ends, rep.Mirrored)
	})
}

// waitMirrored waits until the destination holds at least n records of the
// lab's topics (read_committed end offsets, markers included).
func waitMirrored(t *testing.T, l *lab.Lab, n int64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for endOffsets(t, l.HQOpts(), e2eTopics) < n {
		if time.Now().After(deadline) {
			t.Fatalf("destination holds fewer than %d records after %v", n, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// endOffsets sums the last stable offsets of topics' partitions (0 for
// topics that do not exist yet).
func endOffsets(t *testing.T, opts []kgo.Opt, topics []string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListCommittedOffsets(ctx, topics...)
	if err != nil {
		return 0
	}
	var sum int64
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil && o.Offset > 0 {
			sum += o.Offset
		}
	})
	return sum
}
