package lab

import (
	"slices"
	"testing"
	"time"
)

func TestLiteralPrefix(t *testing.T) {
	for _, tt := range []struct {
		in       string
		prefix   string
		complete bool
	}{
		{`^telemetry\.`, "telemetry.", false},
		{`^engine\.events$`, "engine.events", true},
		{`^vessel-.*`, "vessel-", false},
		{`orders`, "orders", false},
		{`^(a|b)$`, "", false},
		{`(?i)^abc$`, "", false},
	} {
		p, c := literalPrefix(tt.in)
		if p != tt.prefix || c != tt.complete {
			t.Errorf("literalPrefix(%q) = %q, %v; want %q, %v", tt.in, p, c, tt.prefix, tt.complete)
		}
	}
}

// TestFleetTopics checks the topics the fleet derives for the satellite
// fleet: each route gets some, and none is a name another route writes.
func TestFleetTopics(t *testing.T) {
	f, err := LoadFleetFile("../../examples/satellite-fleet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	fl := &Fleet{File: f, opts: FleetOptions{TopicsPerRoute: 2}, Topics: map[string][]string{}}
	if err := fl.genTopics(); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"vessel-7/kafka": {"telemetry.engine", "telemetry.nav", "engine.events"},
		"vessel-9/kafka": {"telemetry.engine", "telemetry.nav"},
		"hq/kafka":       {"fleet.config.engine", "fleet.config.nav", "vessel-engine", "vessel-nav"},
	}
	for ref, ts := range want {
		if got := fl.Topics[ref]; !slices.Equal(got, ts) {
			t.Errorf("topics at %s: got %v, want %v", ref, got, ts)
		}
	}
	if len(fl.Topics) != len(want) {
		t.Errorf("got topics at %d clusters, want %d: %v", len(fl.Topics), len(want), fl.Topics)
	}
	for _, tt := range []struct {
		cluster, topic string
		want           bool
	}{
		{"hq/kafka", "vessel-7.telemetry.engine", true},
		{"hq/kafka", "vessel-7.engine.events", true},
		{"hq/kafka", "vessel-7.other", false},
		{"hq/kafka", "vessel-engine", false},
		{"vessel-7/kafka", "fleet.config.x", true},
		{"dr/kafka", "vessel-engine", true},
	} {
		if got := writtenBy(f, tt.cluster, tt.topic); got != tt.want {
			t.Errorf("writtenBy(%s, %s) = %v, want %v", tt.cluster, tt.topic, got, tt.want)
		}
	}
}

func TestParseBlackout(t *testing.T) {
	b, err := ParseBlackout("vessel-7--hq:5s:3s")
	if err != nil || b != (Blackout{Link: "vessel-7--hq", At: 5 * time.Second, For: 3 * time.Second}) {
		t.Errorf("ParseBlackout: got %+v, %v", b, err)
	}
	for _, bad := range []string{"", "x", "x:5s", ":1s:1s", "x:a:1s", "x:1s:0s", "x:1s:1s:1s"} {
		if _, err := ParseBlackout(bad); err == nil {
			t.Errorf("ParseBlackout(%q): no error", bad)
		}
	}
}

func TestNewFleetRefusesAMQP(t *testing.T) {
	f, err := LoadFleetFile("../../examples/amqp-relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewFleet(f, FleetOptions{}); err == nil {
		t.Fatal("NewFleet on an amqp topology: no error")
	}
}
