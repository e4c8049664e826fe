package lab

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/config"
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
	f, _, err := LoadFleetFile("../../examples/satellite-fleet.yaml")
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
	f, _, err := LoadFleetFile("../../examples/amqp-relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewFleet(f, FleetOptions{}); err == nil {
		t.Fatal("NewFleet on an amqp topology: no error")
	}
}

// TestFleetRewritesSecretsAndRegionGossip runs a small topology with what
// satellite-fleet.yaml lacks: two gateways in one region with region
// gossip encrypted by a key from ${ENV} (unset), an admin token from
// ${ENV}, a route inside one region and one with a capture-group rename.
func TestFleetRewritesSecretsAndRegionGossip(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a small fleet for a few seconds")
	}
	const topo = `version: 1
gossip:
  keys: ["${FLEET_TEST_UNSET_GOSSIP_KEY}"]
regions:
  - name: east
    clusters:
      - {name: kafka, kind: kafka, bootstrap: [kafka.east.example.net:9092], sasl: {mechanism: plain, username: u, password: "${FLEET_TEST_UNSET_PW}"}}
      - {name: audit, kind: kafka, bootstrap: [audit.east.example.net:9092]}
    gateways:
      - name: east-a
        listen: ":7443"
        advertise: gw-a.east.example.net:7443
        admin: {listen: "127.0.0.1:9180", token: "${FLEET_TEST_UNSET_TOKEN}"}
        gossip: {listen: "10.0.0.1:7101", region: "10.0.0.1:7102"}
        tls: {ca_file: ca.crt, cert_file: east-a.crt, key_file: east-a.key}
      - name: east-b
        listen: ":7443"
        advertise: gw-b.east.example.net:7443
        gossip: {listen: "10.0.0.2:7101", region: "10.0.0.2:7102"}
        tls: {ca_file: ca.crt, cert_file: east-b.crt, key_file: east-b.key}
  - name: west
    clusters:
      - {name: kafka, kind: kafka, bootstrap: [kafka.west.example.net:9092]}
    gateways:
      - name: west-a
        listen: ":7443"
        advertise: gw-a.west.example.net:7443
        gossip: "10.0.1.1:7101"
        tls: {ca_file: ca.crt, cert_file: west-a.crt, key_file: west-a.key}
links:
  - {between: [east, west], profile: lan}
routes:
  - name: orders
    from: east/kafka
    to: [west/kafka]
    topics: {include: ['^orders\.(?P<kind>[a-z]+)$']}
    rename: "east.{kind}"
  - name: audit
    from: east/kafka
    to: [east/audit]
    topics: {include: ['^audit\.']}
`
	dir := t.TempDir()
	path := filepath.Join(dir, "topo.yaml")
	if err := os.WriteFile(path, []byte(topo), 0o600); err != nil {
		t.Fatal(err)
	}
	sum, err := RunFleetDemo(t.Context(), FleetDemoOptions{File: path, Duration: 3 * time.Second, Rate: 200,
		CatchUp: 30 * time.Second, TopologyOut: filepath.Join(dir, "running.yaml"), Out: testLogWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(filepath.Join(dir, "running.yaml")); err != nil {
		t.Errorf("the running topology does not load: %v", err)
	}
	for _, r := range sum.Routes {
		if !r.Exact() || r.Mirrored == 0 {
			t.Errorf("%s → %s: %s %s", r.Route, r.To, r.Report.String(), r.Err)
		}
	}
	if !slices.ContainsFunc(sum.Notes, func(n string) bool { return strings.Contains(n, "admin token") }) ||
		!slices.ContainsFunc(sum.Notes, func(n string) bool { return strings.Contains(n, "gossip keys generated") }) ||
		!slices.ContainsFunc(sum.Notes, func(n string) bool { return strings.Contains(n, "east/kafka: SASL") }) {
		t.Errorf("notes do not say what was dropped or generated: %q", sum.Notes)
	}
}

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}
