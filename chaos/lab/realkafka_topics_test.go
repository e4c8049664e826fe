package lab_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/meridian-gw/meridian/chaos/lab"
	"github.com/meridian-gw/meridian/internal/kafkatest"
	"github.com/meridian-gw/meridian/internal/verify"
)

// TestRealKafkaTopicsFollowTheSource: a topic created at the source with
// configs appears at the destination with them; a retention change, added
// partitions and a removed override follow. Each propagation is timed and
// must take under 5 s; records written along the way read back exact.
func TestRealKafkaTopicsFollowTheSource(t *testing.T) {
	bothModes(t, func(t *testing.T, pass bool) {
		o, edge, hq := realKafka(t, lab.Options{Topics: []string{}, Include: []string{`^follow\.`}, Passthrough: pass}, kafkatest.Options{})
		l := newLab(t, o)
		startGateways(t, l)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		// kgo answers metadata requests from a cache up to MetadataMinAge
		// old (5 s by default), which would time the cache, not the mirror.
		src, dst := kadm.NewClient(edge.Client(t)), kadm.NewClient(hq.Client(t, kgo.MetadataMinAge(10*time.Millisecond)))
		const topic = "follow.events"
		topics := []string{topic}
		const within = 5 * time.Second
		var produced int64
		parts := int32(2) // the topic's partitions at the source

		// Both gateways up and the link connected before the clock starts.
		waitConnected(t, l, time.Minute)

		step := func(what string, change func() error, reached func() (bool, string)) {
			t.Helper()
			began := time.Now()
			if err := change(); err != nil {
				t.Fatalf("%s at the source: %v", what, err)
			}
			last := ""
			for {
				ok, state := reached()
				if ok {
					break
				}
				last = state
				if time.Since(began) > 30*time.Second {
					t.Fatalf("%s: not at the destination after 30 s: %s", what, last)
				}
				time.Sleep(50 * time.Millisecond)
			}
			took := time.Since(began)
			t.Logf("%s reached the destination in %v", what, took.Round(10*time.Millisecond))
			if took > within {
				t.Errorf("%s took %v to reach the destination, want under %v", what, took.Round(10*time.Millisecond), within)
			}
			// Records written after each change, to every partition
			// the topic has then, mirror too.
			cl := edge.Client(t, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
			var recs []*kgo.Record
			for i := range 500 {
				recs = append(recs, &kgo.Record{Key: fmt.Appendf(nil, "k%d", i%13), Value: fmt.Appendf(nil, "%s %d", what, i), Partition: int32(i) % parts})
			}
			if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				t.Fatalf("produce after %s: %v", what, err)
			}
			cl.Close()
			produced += int64(len(recs))
		}
		retention := func(want string) func() (bool, string) {
			return func() (bool, string) {
				v, set := destConfig(ctx, dst, topic, "retention.ms")
				if want == "" {
					return !set, "retention.ms override " + v
				}
				return set && v == want, fmt.Sprintf("retention.ms=%q (set %v)", v, set)
			}
		}
		partitions := func(want int) func() (bool, string) {
			return func() (bool, string) {
				td, err := dst.ListTopics(ctx, topic)
				n := 0
				if err == nil {
					n = len(td[topic].Partitions)
				}
				return n == want, fmt.Sprintf("%d partitions (%v)", n, err)
			}
		}

		step("creation with retention.ms=7200000 and 2 partitions", func() error {
			_, err := src.CreateTopic(ctx, 2, 1, map[string]*string{"retention.ms": ptr("7200000")}, topic)
			return err
		}, func() (bool, string) {
			ok, p := partitions(2)()
			okr, r := retention("7200000")()
			return ok && okr, p + ", " + r
		})
		step("retention.ms raised to 14400000 (a sender may never lower it)", func() error {
			return alter(ctx, src, topic, kadm.AlterConfig{Op: kadm.SetConfig, Name: "retention.ms", Value: ptr("14400000")})
		}, retention("14400000"))
		step("partitions 2 -> 4", func() error {
			_, err := src.CreatePartitions(ctx, 2, topic)
			parts = 4
			return err
		}, partitions(4))
		step("retention.ms override removed", func() error {
			return alter(ctx, src, topic, kadm.AlterConfig{Op: kadm.DeleteConfig, Name: "retention.ms"})
		}, retention(""))

		deadline := time.Now().Add(time.Minute)
		for {
			rep, err := verify.Compare(ctx, l.EdgeOpts(), l.HQOpts(), topics, l.RenameTopic)
			if err == nil && rep.OK() && rep.Mirrored == produced {
				t.Logf("read-back: %v", rep)
				if rep.Partitions != 4 {
					t.Errorf("records in %d partitions, want 4", rep.Partitions)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("read-back not exact after a minute: %v %v (want %d mirrored)", rep, err, produced)
			}
			time.Sleep(250 * time.Millisecond)
		}
	})
}

func ptr(s string) *string { return &s }

// waitConnected waits until the edge gateway's session to hq is up.
func waitConnected(t *testing.T, l *lab.Lab, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st := l.Gateway(lab.EdgeGateway).Status()
		if len(st.Peers) > 0 && st.Peers[0].Connected {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("edge gateway not connected to hq after %v: %+v", within, st.Peers)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// destConfig returns a topic's dynamic (per-topic) value of config name and
// whether it is set at all.
func destConfig(ctx context.Context, adm *kadm.Client, topic, name string) (string, bool) {
	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return err.Error(), false
	}
	rc, err := rcs.On(topic, nil)
	if err != nil || rc.Err != nil {
		return fmt.Sprint(err, rc.Err), false
	}
	for _, c := range rc.Configs {
		if c.Key == name && c.Source.String() == "DYNAMIC_TOPIC_CONFIG" && c.Value != nil {
			return *c.Value, true
		}
	}
	return "", false
}

func alter(ctx context.Context, adm *kadm.Client, topic string, a kadm.AlterConfig) error {
	resp, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{a}, topic)
	if err != nil {
		return err
	}
	r, err := resp.On(topic, nil)
	if err != nil {
		return err
	}
	return r.Err
}
