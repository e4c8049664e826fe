package mirror_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/meridian-gw/meridian/config"
	"github.com/meridian-gw/meridian/mirror"
	"github.com/meridian-gw/meridian/transport"
)

// topicSession is a session to gw as its legitimate sender ge, for sending
// hand-made Topic frames.
type topicSession struct {
	t    *testing.T
	conn transport.Conn
	leg  string
}

func openTopicSession(t *testing.T, f *fixture, leg string) *topicSession {
	t.Helper()
	conn, err := dialAs(t, f, "ge", "east", leg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(nil) })
	return &topicSession{t: t, conn: conn, leg: leg}
}

// announce sends a Topic frame and returns the TopicReady's Err.
func (s *topicSession) announce(name string, parts int32, configs map[string]string) string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.conn.Send(ctx, &transport.Topic{Leg: s.leg, Name: name, Partitions: parts, Configs: configs}); err != nil {
		s.t.Fatal(err)
	}
	for {
		fr, err := s.conn.Recv(ctx)
		if err != nil {
			s.t.Fatalf("waiting for the topic-ready of %s: %v", name, err)
		}
		if tr, ok := fr.(*transport.TopicReady); ok && tr.Name == name {
			return tr.Err
		}
	}
}

// destTopicConfig is the value of key on a destination topic and whether
// the topic itself sets it.
func destTopicConfig(t *testing.T, f *fixture, topic, key string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rcs, err := destAdmin(t, f).DescribeTopicConfigs(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On(topic, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range rc.Configs {
		if kv.Key == key && kv.Value != nil {
			return *kv.Value, kv.Source == kmsg.ConfigSourceDynamicTopicConfig
		}
	}
	return "", false
}

// A Topic frame is checked against the leg's route: an internal topic
// (the progress topic), a topic outside the route's filter, a name Kafka
// cannot take and a partition count over routes[].max_partitions are
// refused and change nothing at the destination.
func TestTopicFramesOutsideTheRouteAreRefused(t *testing.T) {
	f := newFixture(t, []string{"t.a"}, 2, func(f *config.File) {
		f.Routes[0].MaxPartitions = 64
		// Renames that would land on the dead-letter topic or an internal one.
		dl, internal := f.Routes[0], f.Routes[0]
		dl.Name, dl.Topics, dl.Rename = "dl", config.TopicFilter{Include: []string{`^dead-letters$`}}, "meridian.{topic}"
		internal.Name, internal.Topics, internal.Rename = "internal", config.TopicFilter{Include: []string{`^i\.`}}, "__{topic}"
		f.Routes = append(f.Routes, dl, internal)
	})
	f.gateway(t, "gw", 0)
	s := openTopicSession(t, f, "r:west/kafka")
	// The receiver creates its progress topic: a sender must not touch it.
	deadline := time.Now().Add(20 * time.Second)
	policy, _ := destTopicConfig(t, f, mirror.ProgressTopic, "cleanup.policy")
	for ; policy == ""; policy, _ = destTopicConfig(t, f, mirror.ProgressTopic, "cleanup.policy") {
		if time.Now().After(deadline) {
			t.Fatal("the receiver did not create its progress topic")
		}
		time.Sleep(100 * time.Millisecond)
	}
	retention, _ := destTopicConfig(t, f, mirror.ProgressTopic, "retention.ms")
	for _, c := range []struct {
		name  string
		parts int32
		want  string
	}{
		{mirror.ProgressTopic, 1, "not one the route"},
		{"__consumer_offsets", 1, "not one the route"},
		{"x.outside", 1, "not one the route"},
		{"t.a/../b", 1, "character"},
		{"t." + strings.Repeat("a", 250), 1, "longer than 249"},
		{"t.huge", 65, "allows 1 to 64"},
		{"t.none", 0, "allows 1 to 64"},
	} {
		got := s.announce(c.name, c.parts, map[string]string{"cleanup.policy": "delete", "retention.ms": "1"})
		if !strings.Contains(got, c.want) {
			t.Errorf("topic %.40q with %d partitions: topic-ready error %q, want one saying %q", c.name, c.parts, got, c.want)
		}
		if c.name != mirror.ProgressTopic && c.name != "__consumer_offsets" {
			noDestTopic(t, f, c.name)
		}
	}
	if got := openTopicSession(t, f, "dl:west/kafka").announce("dead-letters", 1, nil); !strings.Contains(got, "dead-letter topic") {
		t.Errorf("topic renamed to the dead-letter topic: topic-ready error %q, want a refusal", got)
	}
	if got := openTopicSession(t, f, "internal:west/kafka").announce("i.a", 1, nil); !strings.Contains(got, "is internal") {
		t.Errorf("topic renamed to __i.a: topic-ready error %q, want a refusal", got)
	}
	noDestTopic(t, f, "__i.a")
	for leg, reasons := range map[string]map[string]float64{
		"r:west/kafka":        {"filter": 3, "invalid_name": 2, "partitions": 2},
		"dl:west/kafka":       {"dead_letter": 1},
		"internal:west/kafka": {"internal": 1},
	} {
		for reason, want := range reasons {
			if got := f.counter(t, "gw", "meridian_topic_refusals_total", map[string]string{"leg": leg, "reason": reason}); got != want {
				t.Errorf("topic refusals {leg=%s, reason=%s} = %v, want %v", leg, reason, got, want)
			}
		}
	}
	if got, _ := destTopicConfig(t, f, mirror.ProgressTopic, "cleanup.policy"); got != policy {
		t.Errorf("progress topic cleanup.policy = %q after a sender's Topic frame, was %q", got, policy)
	}
	if got, _ := destTopicConfig(t, f, mirror.ProgressTopic, "retention.ms"); got != retention {
		t.Errorf("progress topic retention.ms = %q after a sender's Topic frame, was %q", got, retention)
	}
}

// Only configs on the allowlist reach the destination, and an existing
// destination topic's retention is never lowered: not by a lower value,
// not by the source dropping its higher override.
func TestTopicConfigsAreAllowlistedAndRetentionNeverLowered(t *testing.T) {
	f := newFixture(t, []string{"t.a"}, 2)
	f.gateway(t, "gw", 0)
	s := openTopicSession(t, f, "r:west/kafka")
	const long = "1209600000" // 14 days, above the broker's 7
	if err := s.announce("t.b", 2, map[string]string{
		"retention.ms": long, "message.timestamp.type": "LogAppendTime", "min.insync.replicas": "1",
	}); err != "" {
		t.Fatalf("topic t.b not ready: %s", err)
	}
	if got, _ := destTopicConfig(t, f, "t.b", "retention.ms"); got != long {
		t.Errorf("retention.ms = %q, want %s", got, long)
	}
	for _, k := range []string{"message.timestamp.type", "min.insync.replicas"} {
		if got, set := destTopicConfig(t, f, "t.b", k); set {
			t.Errorf("%s = %q set at the destination, though not on the allowlist", k, got)
		}
	}
	if err := s.announce("t.b", 2, map[string]string{"retention.ms": "1000", "retention.bytes": "1"}); err != "" {
		t.Fatalf("topic t.b not ready: %s", err)
	}
	if got, _ := destTopicConfig(t, f, "t.b", "retention.ms"); got != long {
		t.Errorf("retention.ms = %q after the sender asked for 1000, want %s kept", got, long)
	}
	if got, _ := destTopicConfig(t, f, "t.b", "retention.bytes"); got != "-1" {
		t.Errorf("retention.bytes = %q after the sender asked for 1, want -1 (unlimited) kept", got)
	}
	if err := s.announce("t.b", 2, nil); err != "" {
		t.Fatalf("topic t.b not ready: %s", err)
	}
	if got, _ := destTopicConfig(t, f, "t.b", "retention.ms"); got != long {
		t.Errorf("retention.ms = %q once the source dropped its override, want %s kept", got, long)
	}
	refusals := func(reason string) float64 {
		return f.counter(t, "gw", "meridian_topic_refusals_total", map[string]string{"leg": "r:west/kafka", "reason": reason})
	}
	if got := refusals("config_not_allowed"); got != 2 {
		t.Errorf("topic refusals {reason=config_not_allowed} = %v, want 2", got)
	}
	if got := refusals("retention_lowered"); got != 3 {
		t.Errorf("topic refusals {reason=retention_lowered} = %v, want 3 (two lowered values, one removal)", got)
	}
	// Raising is followed.
	if err := s.announce("t.b", 2, map[string]string{"retention.ms": "-1"}); err != "" {
		t.Fatalf("topic t.b not ready: %s", err)
	}
	if got, _ := destTopicConfig(t, f, "t.b", "retention.ms"); got != "-1" {
		t.Errorf("retention.ms = %q, want -1 (raised to unlimited)", got)
	}
}
