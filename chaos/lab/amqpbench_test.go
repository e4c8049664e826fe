package lab_test

import (
	"context"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/chaos/lab"
	"github.com/meridian-gw/meridian/internal/amqptest"
	"github.com/meridian-gw/meridian/transport"
)

// TestAMQPBenchRuns runs `meridian bench amqp` small, on a RabbitMQ of the
// test's own: both contenders carry every message, the link's batches
// arrive once and in order per partition, and the figures are filled in.
// It measures nothing (the benchmark does): it keeps the benchmark working.
func TestAMQPBenchRuns(t *testing.T) {
	br := amqptest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := lab.RunAMQPBench(ctx, lab.AMQPBenchOptions{BrokerURL: br.URL(), Messages: 200, BatchRaw: 16 << 10, Runs: 2,
		Codecs: []transport.Codec{transport.CodecZstd, transport.CodecNone}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Codecs) != 2 {
		t.Fatalf("%d codecs reported, want 2", len(res.Codecs))
	}
	for _, c := range res.Codecs {
		t.Logf("%s: plain %.0f msg/s, link %.0f msg/s, msg ratio %.2f, goodput ratio %.2f", c.Codec, c.Plain.MsgPerSec, c.Link.MsgPerSec, c.MsgRatio, c.GoodputRatio)
		if !c.Exact {
			t.Errorf("%s: the link lost, duplicated or reordered batches", c.Codec)
		}
		if c.Plain.MsgPerSec <= 0 || c.Link.MsgPerSec <= 0 || c.Link.RawMBPerSec <= 0 || len(c.MsgRatios) != 2 {
			t.Errorf("%s: figures missing: %+v", c.Codec, c)
		}
		if c.Codec == "zstd" && c.WireBytes >= c.RawBytes {
			t.Errorf("zstd: %d wire bytes per %d raw: not compressed", c.WireBytes, c.RawBytes)
		}
	}
}
