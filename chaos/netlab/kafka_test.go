//go:build linux

package netlab_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/chaos/netlab"
	"github.com/meridian-gw/meridian/chaos/netlab/netlabtest"
)

// TestKafkaAcrossLab puts an in-process Kafka cluster (kfake) in region hq
// and a franz-go client in region edge: every request crosses the link.
func TestKafkaAcrossLab(t *testing.T) {
	lab := netlabtest.New(t, netlab.Options{Regions: []string{"edge", "hq"}, Profile: wan(t).WithRTT(20 * time.Millisecond)})
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ListenFn(lab.ListenFn("hq")), kfake.SeedTopics(1, "telemetry"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addrs := c.ListenAddrs()
	if len(addrs) != 1 || addrs[0][:11] != "198.18.2.1:" {
		t.Fatalf("broker addresses %v, want 198.18.2.1:port", addrs)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.Dialer(lab.DialContext("edge")),
		kgo.ConsumeTopics("telemetry"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "telemetry", Key: []byte("engine"), Value: []byte("rpm=1800")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	fs := cl.PollFetches(ctx)
	if err := fs.Err0(); err != nil {
		t.Fatal(err)
	}
	recs := fs.Records()
	if len(recs) != 1 || string(recs[0].Value) != "rpm=1800" {
		t.Fatalf("consumed %v, want the one record", recs)
	}
	if st := lab.Link("edge", "hq").Stats(); st.Up.Packets == 0 || st.Down.Packets == 0 {
		t.Errorf("no traffic crossed the link: %+v", st)
	}
}
